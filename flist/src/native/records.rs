//! The values of a native flist as stored, per format version, and their
//! conversion to and from the model ([`crate::model`]). See
//! docs/formats/flist-native.md for the rules.
//!
//! * Format 1: a value is the bincode of its record, nothing else.
//! * Format 2: a value is `[tag u8][bincode body]`; the tag is the minor
//!   version whose layout the body has. A body of a newer minor than this
//!   build knows starts with the layout this build knows (minors only
//!   append fields), so it is decoded as that prefix and the rest skipped.
//!
//! The record structs below are the wire layouts, frozen: changing the
//! model never changes what a version means on disk. A new minor adds a
//! struct (the old one plus appended fields) and its decoding here.
//! The model enums `Kind`, `Chunking`, `Codec` are encoded by variant
//! index, so their order is part of the format too.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zosfs_store::{ChunkId, ChunkKey, ChunkRef};

use super::{FORMAT_MINOR, FORMAT_VERSION, codec};
use crate::error::{Result, corrupt};
use crate::model::{Chunking, Codec, Header, Inode, Kind, Xattr};

/// A format version: the major says which readers can read it at all, the
/// minor which appended fields it may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
}

impl Version {
    /// What this build writes.
    pub const CURRENT: Version = Version { major: FORMAT_VERSION, minor: FORMAT_MINOR as u32 };
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The tag this build puts in front of every record it writes.
const TAG: u8 = FORMAT_MINOR;

/// The header record (`meta` / `header`), formats 1 and 2.0.
#[derive(Serialize, Deserialize)]
struct HeaderRecord<'a> {
    format_version: u32,
    chunking: Chunking,
    codec: Codec,
    compression_level: i32,
    tool: Cow<'a, str>,
    routes: Cow<'a, [String]>,
    tags: Cow<'a, BTreeMap<String, String>>,
}

/// The inode record (`inodes`), formats 1 and 2.0.
#[derive(Serialize, Deserialize)]
struct InodeRecord<'a> {
    ino: u64,
    kind: Kind,
    perm: u32,
    uid: u32,
    gid: u32,
    mtime_ns: i64,
    size: u64,
    rdev: u64,
    nlink: u32,
    parent: u64,
    target: Cow<'a, [u8]>,
    xattrs: Cow<'a, [Xattr]>,
}

/// One chunk of a chunk group record (`chunks`), formats 1 and 2.0. The
/// record is a sequence of these.
#[derive(Serialize, Deserialize)]
struct ChunkRecord {
    id: [u8; 32],
    key: [u8; 32],
    len: u32,
}

fn encode_record<R: Serialize>(r: &R) -> Result<Vec<u8>> {
    let mut out = vec![TAG];
    codec::encode_into(&mut out, r)?;
    Ok(out)
}

/// Decode the record `bytes` of a flist of version `v`; `what` names it in
/// errors.
fn decode_record<R: DeserializeOwned>(
    v: Version,
    bytes: &[u8],
    what: impl Fn() -> String,
) -> Result<R> {
    if v.major == 1 {
        return codec::decode_exact(bytes, what);
    }
    let Some((&tag, body)) = bytes.split_first() else {
        return Err(corrupt(format!("{}: empty record", what())));
    };
    if tag > FORMAT_MINOR {
        return codec::decode_prefix(body, || {
            format!(
                "{} (a format {}.{tag} record; this zosfs knows {})",
                what(),
                v.major,
                Version::CURRENT
            )
        });
    }
    // 2.0 is the only layout of major 2 so far. The minor that appends a
    // field decodes tags below it with the older struct, defaulting the field.
    codec::decode_exact(body, what)
}

pub fn encode_header(h: &Header) -> Result<Vec<u8>> {
    encode_record(&HeaderRecord {
        format_version: h.format_version,
        chunking: h.chunking,
        codec: h.codec,
        compression_level: h.compression_level,
        tool: Cow::Borrowed(&h.tool),
        routes: Cow::Borrowed(&h.routes),
        tags: Cow::Borrowed(&h.tags),
    })
}

pub fn decode_header(v: Version, bytes: &[u8], what: impl Fn() -> String) -> Result<Header> {
    let r: HeaderRecord<'static> = decode_record(v, bytes, what)?;
    Ok(Header {
        format_version: r.format_version,
        chunking: r.chunking,
        codec: r.codec,
        compression_level: r.compression_level,
        tool: r.tool.into_owned(),
        routes: r.routes.into_owned(),
        tags: r.tags.into_owned(),
    })
}

pub fn encode_inode(i: &Inode) -> Result<Vec<u8>> {
    encode_record(&InodeRecord {
        ino: i.ino,
        kind: i.kind,
        perm: i.perm,
        uid: i.uid,
        gid: i.gid,
        mtime_ns: i.mtime_ns,
        size: i.size,
        rdev: i.rdev,
        nlink: i.nlink,
        parent: i.parent,
        target: Cow::Borrowed(&i.target),
        xattrs: Cow::Borrowed(&i.xattrs),
    })
}

pub fn decode_inode(v: Version, bytes: &[u8], what: impl Fn() -> String) -> Result<Inode> {
    let r: InodeRecord<'static> = decode_record(v, bytes, what)?;
    Ok(Inode {
        ino: r.ino,
        kind: r.kind,
        perm: r.perm,
        uid: r.uid,
        gid: r.gid,
        mtime_ns: r.mtime_ns,
        size: r.size,
        rdev: r.rdev,
        nlink: r.nlink,
        parent: r.parent,
        target: r.target.into_owned(),
        xattrs: r.xattrs.into_owned(),
    })
}

pub fn encode_chunks(chunks: &[ChunkRef]) -> Result<Vec<u8>> {
    let records: Vec<ChunkRecord> =
        chunks.iter().map(|c| ChunkRecord { id: c.id.0, key: c.key.0, len: c.len }).collect();
    encode_record(&records)
}

pub fn decode_chunks(v: Version, bytes: &[u8], what: impl Fn() -> String) -> Result<Vec<ChunkRef>> {
    let records: Vec<ChunkRecord> = decode_record(v, bytes, what)?;
    Ok(records
        .into_iter()
        .map(|c| ChunkRef { id: ChunkId(c.id), key: ChunkKey(c.key), len: c.len })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: Version = Version { major: 1, minor: 0 };

    fn inode() -> Inode {
        Inode {
            ino: 300,
            kind: Kind::Symlink,
            perm: 0o777,
            uid: 1000,
            gid: 7,
            mtime_ns: -1,
            size: 2,
            rdev: 0,
            nlink: 1,
            parent: 1,
            target: b"ab".to_vec(),
            xattrs: vec![Xattr { name: b"user.x".to_vec(), value: vec![0xff] }],
        }
    }

    /// The exact bytes of a 2.0 inode record: a change of the model or the
    /// encoding that would move them fails here, not in a user's flist.
    #[test]
    fn inode_record_bytes_are_pinned() {
        let bytes = encode_inode(&inode()).unwrap();
        let want = "00fb2c0102fbff01fbe8030701020001010261620106757365722e7801ff";
        assert_eq!(hex::encode(&bytes), want);
        // Format 1 is the same body without the tag.
        assert_eq!(decode_inode(V1, &bytes[1..], String::new).unwrap(), inode());
        assert_eq!(decode_inode(Version::CURRENT, &bytes, String::new).unwrap(), inode());
    }

    #[test]
    fn known_layouts_refuse_trailing_bytes_newer_minors_skip_them() {
        let mut bytes = encode_inode(&inode()).unwrap();
        bytes.extend([1, 2, 3]);
        assert!(decode_inode(Version::CURRENT, &bytes, String::new).is_err());
        assert!(decode_inode(V1, &bytes[1..], String::new).is_err());
        bytes[0] = TAG + 1;
        assert_eq!(decode_inode(Version::CURRENT, &bytes, String::new).unwrap(), inode());
        // A newer minor must still hold the known prefix.
        let e = decode_inode(Version::CURRENT, &bytes[..5], || "inode 300".into()).unwrap_err();
        assert!(e.to_string().contains("a format 2.1 record"), "{e}");
        assert!(decode_inode(Version::CURRENT, &[], String::new).is_err());
    }

    #[test]
    fn chunk_groups_round_trip() {
        let chunks: Vec<ChunkRef> = (0..3u8)
            .map(|i| ChunkRef { id: ChunkId([i; 32]), key: ChunkKey([i + 1; 32]), len: 1 << 20 })
            .collect();
        let bytes = encode_chunks(&chunks).unwrap();
        assert_eq!(bytes.len(), 1 + 1 + 3 * (64 + 5));
        assert_eq!(decode_chunks(Version::CURRENT, &bytes, String::new).unwrap(), chunks);
        assert_eq!(decode_chunks(V1, &bytes[1..], String::new).unwrap(), chunks);
    }
}
