//! Key layout of the native RocksDB flist (the wire format; no logic).
//!
//! | column family | key                                   | value |
//! |---|---|---|
//! | `meta`        | `"format"`                            | major format version, u32 LE (read before anything else) |
//! | `meta`        | `"format_minor"`                      | minor format version, u32 LE (format 2 on) |
//! | `meta`        | `"header"`                            | [`Header`](crate::Header) record |
//! | `inodes`      | ino u64 BE                            | [`Inode`](crate::Inode) record |
//! | `dirents`     | parent ino u64 BE ‖ name bytes        | child ino u64 BE ‖ kind u8 (format 2: ‖ bytes a newer minor appended) |
//! | `chunks`      | ino u64 BE ‖ group u32 BE             | record of up to [`CHUNK_GROUP`] `ChunkRef`s |
//!
//! Records are encoded per format version by [`super::records`]; the
//! whole format is specified in docs/formats/flist-native.md.
//!
//! Big-endian integers make RocksDB's bytewise order the numeric order, so a
//! directory listing is one range scan over the parent's prefix (names in
//! byte order) and a lookup is one point read; nothing scans the whole DB.

use crate::model::{Ino, Kind};

pub const CF_META: &str = "meta";
pub const CF_INODES: &str = "inodes";
pub const CF_DIRENTS: &str = "dirents";
pub const CF_CHUNKS: &str = "chunks";
pub const ALL_CFS: [&str; 4] = [CF_META, CF_INODES, CF_DIRENTS, CF_CHUNKS];

pub const KEY_FORMAT: &[u8] = b"format";
pub const KEY_FORMAT_MINOR: &[u8] = b"format_minor";
pub const KEY_HEADER: &[u8] = b"header";

/// Chunk refs per `chunks` record: a 1 TiB file at 1 MiB chunks is 256
/// records of ~270 KiB, and a reader can fetch the group holding one offset.
pub const CHUNK_GROUP: usize = 4096;

pub fn inode_key(ino: Ino) -> [u8; 8] {
    ino.to_be_bytes()
}

pub fn dirent_key(parent: Ino, name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + name.len());
    k.extend_from_slice(&parent.to_be_bytes());
    k.extend_from_slice(name);
    k
}

/// Split a dirent key into (parent, name).
pub fn parse_dirent_key(k: &[u8]) -> Option<(Ino, &[u8])> {
    let (p, name) = k.split_at_checked(8)?;
    Some((u64::from_be_bytes(p.try_into().ok()?), name))
}

pub fn dirent_value(ino: Ino, kind: Kind) -> [u8; 9] {
    let mut v = [0u8; 9];
    v[..8].copy_from_slice(&ino.to_be_bytes());
    v[8] = kind_byte(kind);
    v
}

/// Parse a dirent value. Format 1 values are exactly 9 bytes; from format
/// 2 on a newer minor may append bytes, which are skipped (`appended`).
pub fn parse_dirent_value(v: &[u8], appended: bool) -> Option<(Ino, Kind)> {
    if v.len() < 9 || (v.len() > 9 && !appended) {
        return None;
    }
    Some((u64::from_be_bytes(v[..8].try_into().ok()?), byte_kind(v[8])?))
}

pub fn chunks_key(ino: Ino, group: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&ino.to_be_bytes());
    k[8..].copy_from_slice(&group.to_be_bytes());
    k
}

pub fn parse_chunks_key(k: &[u8]) -> Option<(Ino, u32)> {
    if k.len() != 12 {
        return None;
    }
    Some((u64::from_be_bytes(k[..8].try_into().ok()?), u32::from_be_bytes(k[8..].try_into().ok()?)))
}

fn kind_byte(k: Kind) -> u8 {
    match k {
        Kind::File => 1,
        Kind::Dir => 2,
        Kind::Symlink => 3,
        Kind::CharDev => 4,
        Kind::BlockDev => 5,
        Kind::Fifo => 6,
        Kind::Socket => 7,
    }
}

fn byte_kind(b: u8) -> Option<Kind> {
    Some(match b {
        1 => Kind::File,
        2 => Kind::Dir,
        3 => Kind::Symlink,
        4 => Kind::CharDev,
        5 => Kind::BlockDev,
        6 => Kind::Fifo,
        7 => Kind::Socket,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sort_numerically() {
        assert!(inode_key(2) < inode_key(256));
        let k = dirent_key(7, b"a name\n\xff");
        assert_eq!(parse_dirent_key(&k), Some((7, &b"a name\n\xff"[..])));
        assert!(dirent_key(1, b"zzz") < dirent_key(2, b""));
        for kind in Kind::ALL {
            assert_eq!(parse_dirent_value(&dirent_value(9, kind), false), Some((9, kind)));
        }
        assert_eq!(parse_dirent_value(&[0; 8], true), None);
        let mut longer = dirent_value(9, Kind::Dir).to_vec();
        longer.push(0);
        assert_eq!(parse_dirent_value(&longer, false), None);
        assert_eq!(parse_dirent_value(&longer, true), Some((9, Kind::Dir)));
        assert_eq!(parse_chunks_key(&chunks_key(5, 3)), Some((5, 3)));
    }
}
