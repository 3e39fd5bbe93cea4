//! The 0-fs capnp schema (`model.capnp` of 0-fs, `flist.capnp` of
//! 0-flist; both share the file id `0xae9223e76351538a`) as field offsets
//! on the wire, with plain-data records to decode into and encode from.
//!
//! Layouts (data section bytes / pointer count; offsets in bytes or
//! pointer indexes), from the field order of the schema:
//!
//! ```text
//! Dir        16 / 5   size u64 @0, modificationTime u32 @8, creationTime u32 @12;
//!                     name 0, location 1, contents 2 (List(Inode)), parent 3, aclkey 4
//! Inode      24 / 3   size u64 @0, attributes union tag u16 @8
//!                     (0 dir, 1 file, 2 link, 3 special), modificationTime u32 @12,
//!                     creationTime u32 @16; name 0, attributes 1, aclkey 2
//! SubDir      0 / 1   key 0
//! File        8 / 1   blockSize u16 @0 (units of 4 KiB); blocks 0 (List(FileBlock))
//! FileBlock   0 / 2   hash 0 (Data), key 1 (Data)
//! Link        0 / 1   target 0
//! Special     8 / 1   type u16 @0 (0 socket, 1 block, 2 chardev, 3 fifo, 4 unknown); data 0
//! ACI      8|24 / 3   mode u16 @0, id u32 @4, uid i64 @8, gid i64 @16 (both default −1,
//!                     stored XOR −1; absent in older writers); uname 0, gname 1, rights 2
//! ```

use super::super::capnp::{Builder, Limits, Message, StructAt, StructReader};
use crate::error::{Result, corrupt};

/// Which member of the `Inode.attributes` union is set.
const ATTR_DIR: u16 = 0;
const ATTR_FILE: u16 = 1;
const ATTR_LINK: u16 = 2;
const ATTR_SPECIAL: u16 = 3;

/// `Special.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecialKind {
    Socket,
    Block,
    CharDev,
    Fifo,
    Unknown(u16),
}

impl SpecialKind {
    fn from_wire(v: u16) -> SpecialKind {
        match v {
            0 => SpecialKind::Socket,
            1 => SpecialKind::Block,
            2 => SpecialKind::CharDev,
            3 => SpecialKind::Fifo,
            v => SpecialKind::Unknown(v),
        }
    }

    fn to_wire(self) -> u16 {
        match self {
            SpecialKind::Socket => 0,
            SpecialKind::Block => 1,
            SpecialKind::CharDev => 2,
            SpecialKind::Fifo => 3,
            SpecialKind::Unknown(v) => v,
        }
    }
}

/// One block of a file: where it is stored and how to decrypt it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRecord<'a> {
    pub hash: &'a [u8],
    pub key: &'a [u8],
}

/// `Inode.attributes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attrs<'a> {
    /// A subdirectory: the database key of its own `Dir` record.
    Dir {
        key: &'a [u8],
    },
    File {
        block_size: u16,
        blocks: Vec<BlockRecord<'a>>,
    },
    Link {
        target: &'a [u8],
    },
    Special {
        kind: SpecialKind,
        data: &'a [u8],
    },
}

/// One entry of a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InodeRecord<'a> {
    pub name: &'a [u8],
    pub size: u64,
    pub attrs: Attrs<'a>,
    pub aclkey: &'a [u8],
    pub mtime: u32,
    pub ctime: u32,
}

/// One directory (one database entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirRecord<'a> {
    pub name: &'a [u8],
    /// Path of the directory, relative (`""` for the root).
    pub location: &'a [u8],
    pub contents: Vec<InodeRecord<'a>>,
    /// Database key of the parent directory.
    pub parent: &'a [u8],
    pub size: u64,
    pub aclkey: &'a [u8],
    pub mtime: u32,
    pub ctime: u32,
}

/// Owner and permissions (`ACI`), shared by every inode naming its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AciRecord<'a> {
    pub uname: &'a [u8],
    pub gname: &'a [u8],
    /// Permission bits (`st_mode` without the type).
    pub mode: u16,
    /// Numeric ids; −1 when the writer did not record them.
    pub uid: i64,
    pub gid: i64,
}

fn parse(bytes: &[u8]) -> Result<Message<'_>> {
    Message::parse(bytes, Limits::default())
}

fn decode_inode<'a>(s: StructReader<'_, 'a>) -> Result<InodeRecord<'a>> {
    let name = s.text_field(0)?;
    let ctx = |what: &str| corrupt(format!("entry {}: {what}", crate::names::show(name)));
    let which = s.u16(8);
    let attrs = s.struct_field(1)?;
    let attrs = match (which, attrs) {
        (ATTR_DIR, Some(a)) => Attrs::Dir { key: a.text_field(0)? },
        (ATTR_DIR, None) => Attrs::Dir { key: b"" },
        (ATTR_FILE, a) => {
            let (block_size, blocks) = match a {
                None => (0, Vec::new()),
                Some(a) => {
                    let list = a.struct_list(0)?;
                    let mut blocks = Vec::with_capacity(list.len());
                    for b in list.iter() {
                        blocks.push(BlockRecord { hash: b.data_field(0)?, key: b.data_field(1)? });
                    }
                    (a.u16(0), blocks)
                }
            };
            Attrs::File { block_size, blocks }
        }
        (ATTR_LINK, a) => {
            Attrs::Link { target: a.map(|a| a.text_field(0)).transpose()?.unwrap_or(b"") }
        }
        (ATTR_SPECIAL, Some(a)) => {
            Attrs::Special { kind: SpecialKind::from_wire(a.u16(0)), data: a.data_field(0)? }
        }
        (ATTR_SPECIAL, None) => return Err(ctx("special file without its type")),
        (w, _) => return Err(ctx(&format!("unknown attributes union member {w}"))),
    };
    Ok(InodeRecord {
        name,
        size: s.u64(0),
        attrs,
        aclkey: s.text_field(2)?,
        mtime: s.u32(12),
        ctime: s.u32(16),
    })
}

/// Decode a `Dir` message (the value of one `entries` row).
pub fn decode_dir(bytes: &[u8]) -> Result<DirRecord<'_>> {
    let m = parse(bytes)?;
    let r = m.root()?;
    let list = r.struct_list(2)?;
    let mut contents = Vec::with_capacity(list.len());
    for s in list.iter() {
        contents.push(decode_inode(s)?);
    }
    Ok(DirRecord {
        name: r.text_field(0)?,
        location: r.text_field(1)?,
        contents,
        parent: r.text_field(3)?,
        size: r.u64(0),
        aclkey: r.text_field(4)?,
        mtime: r.u32(8),
        ctime: r.u32(12),
    })
}

/// Decode an `ACI` message.
pub fn decode_aci(bytes: &[u8]) -> Result<AciRecord<'_>> {
    let m = parse(bytes)?;
    let r = m.root()?;
    Ok(AciRecord {
        uname: r.text_field(0)?,
        gname: r.text_field(1)?,
        mode: r.u16(0),
        uid: (r.u64(8) as i64) ^ -1,
        gid: (r.u64(16) as i64) ^ -1,
    })
}

fn encode_inode(b: &mut Builder, s: StructAt, i: &InodeRecord<'_>) {
    b.set_text(s, 0, i.name);
    b.set_u64(s, 0, i.size);
    b.set_u32(s, 12, i.mtime);
    b.set_u32(s, 16, i.ctime);
    b.set_text(s, 2, i.aclkey);
    match &i.attrs {
        Attrs::Dir { key } => {
            b.set_u16(s, 8, ATTR_DIR);
            let a = b.new_struct(0, 1);
            b.set_text(a, 0, key);
            b.set_struct(s, 1, a);
        }
        Attrs::File { block_size, blocks } => {
            b.set_u16(s, 8, ATTR_FILE);
            let a = b.new_struct(1, 1);
            b.set_u16(a, 0, *block_size);
            b.set_struct(s, 1, a);
            if !blocks.is_empty() {
                let list = b.new_struct_list(a, 0, blocks.len(), 0, 2);
                for (at, blk) in list.into_iter().zip(blocks) {
                    b.set_data(at, 0, blk.hash);
                    b.set_data(at, 1, blk.key);
                }
            }
        }
        Attrs::Link { target } => {
            b.set_u16(s, 8, ATTR_LINK);
            let a = b.new_struct(0, 1);
            b.set_text(a, 0, target);
            b.set_struct(s, 1, a);
        }
        Attrs::Special { kind, data } => {
            b.set_u16(s, 8, ATTR_SPECIAL);
            let a = b.new_struct(1, 1);
            b.set_u16(a, 0, kind.to_wire());
            b.set_data(a, 0, data);
            b.set_struct(s, 1, a);
        }
    }
}

/// Encode a `Dir` message.
pub fn encode_dir(d: &DirRecord<'_>) -> Vec<u8> {
    let mut b = Builder::new();
    let root = b.new_struct(2, 5);
    b.set_root(root);
    b.set_text(root, 0, d.name);
    b.set_text(root, 1, d.location);
    let items = b.new_struct_list(root, 2, d.contents.len(), 3, 3);
    for (at, i) in items.into_iter().zip(&d.contents) {
        encode_inode(&mut b, at, i);
    }
    b.set_text(root, 3, d.parent);
    b.set_u64(root, 0, d.size);
    b.set_text(root, 4, d.aclkey);
    b.set_u32(root, 8, d.mtime);
    b.set_u32(root, 12, d.ctime);
    b.finish()
}

/// Encode an `ACI` message; `with_ids` false writes the older 8-byte data
/// section without `uid`/`gid` (as 0-flist did before it had them).
pub fn encode_aci(a: &AciRecord<'_>, with_ids: bool) -> Vec<u8> {
    let mut b = Builder::new();
    let root = b.new_struct(if with_ids { 3 } else { 1 }, 3);
    b.set_root(root);
    b.set_text(root, 0, a.uname);
    b.set_text(root, 1, a.gname);
    b.set_u16(root, 0, a.mode);
    if with_ids {
        b.set_u64(root, 8, (a.uid ^ -1) as u64);
        b.set_u64(root, 16, (a.gid ^ -1) as u64);
    }
    b.finish()
}
