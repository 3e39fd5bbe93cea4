//! "The tree": what the FUSE layer shows, behind a small trait so the FUSE
//! code does not know where entries come from.
//!
//! * [`dir::DirTree`] — a local directory (development, tests, and
//!   `fsmount DIR MOUNTPOINT` for a persistent rw layer over a local tree);
//! * [`flist::FlistTree`] — an flist file, contents fetched lazily into
//!   the node cache;
//! * [`union::UnionTree`] — several trees layered, later wins
//!   (`--flist A --flist B`).
//!
//! Invariants every tree keeps: entries never change while mounted (the
//! FUSE layer caches them for long); inode numbers are stable across
//! mounts of the same source (they come from the source, not from the
//! order of lookups); a hardlinked file has one inode for all its names.

pub mod dir;
pub mod flist;
pub mod union;

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::sync::Arc;
use std::time::SystemTime;

use crate::error::Result;

pub type Ino = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    CharDev,
    BlockDev,
    Fifo,
    Socket,
}

impl Kind {
    /// From the S_IFMT bits of a mode.
    pub fn from_mode(mode: u32) -> Option<Kind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFCHR => Kind::CharDev,
            libc::S_IFBLK => Kind::BlockDev,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            _ => return None,
        })
    }
}

/// Everything stat(2) shows of an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    /// Permission bits including set-uid, set-gid and sticky (0o7777).
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Allocated 512-byte blocks as the source reports them.
    pub blocks: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    /// Device number of a device node, as glibc's makedev encodes it.
    pub rdev: u64,
}

/// One directory entry with the attributes readdirplus returns.
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub name: OsString,
    pub attr: Attr,
}

/// Aggregate figures for statfs.
#[derive(Clone, Copy, Debug, Default)]
pub struct TreeStats {
    pub files: u64,
    pub bytes: u64,
}

/// The read-only tree a FUSE mount shows.
pub trait Tree: Send + Sync + 'static {
    /// Inode of the root directory.
    fn root(&self) -> Ino;
    /// The entry `name` of directory `parent` (NotFound: ENOENT).
    fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Attr>;
    fn getattr(&self, ino: Ino) -> Result<Attr>;
    /// Every entry of a directory except "." and "..", in a stable order.
    fn readdir(&self, ino: Ino) -> Result<Vec<DirEntry>>;
    fn readlink(&self, ino: Ino) -> Result<Vec<u8>>;
    fn listxattr(&self, ino: Ino) -> Result<Vec<OsString>>;
    /// None: the entry has no such attribute (ENODATA).
    fn getxattr(&self, ino: Ino, name: &OsStr) -> Result<Option<Vec<u8>>>;
    /// The content of a regular file, for reading.
    fn open(&self, ino: Ino) -> Result<Arc<dyn Content>>;
    fn stats(&self) -> TreeStats;
}

/// An open file's content.
pub trait Content: Send + Sync {
    fn size(&self) -> u64;
    /// Read at `offset`; a short count only at end of file. Blocking: call
    /// from FUSE worker threads, never from an async task.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize>;
    /// A local file holding the whole content right now, which the kernel
    /// may read directly (FUSE passthrough). None while data is missing.
    fn local_file(&self) -> Option<&File>;
}
