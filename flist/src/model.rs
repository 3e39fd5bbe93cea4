//! The metadata model shared by every flist format: inodes, directory
//! entries, the header. Plain data; the on-disk encoding lives in
//! [`crate::native`] and [`crate::legacy`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use zosfs_store::ChunkRef;

/// Inode number. The root directory is always [`ROOT_INO`].
pub type Ino = u64;

/// Inode of the root directory (FUSE's root id).
pub const ROOT_INO: Ino = 1;

/// The file types an flist keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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
    /// The `S_IFMT` bits of this type.
    pub fn mode_bits(self) -> u32 {
        match self {
            Kind::File => libc::S_IFREG,
            Kind::Dir => libc::S_IFDIR,
            Kind::Symlink => libc::S_IFLNK,
            Kind::CharDev => libc::S_IFCHR,
            Kind::BlockDev => libc::S_IFBLK,
            Kind::Fifo => libc::S_IFIFO,
            Kind::Socket => libc::S_IFSOCK,
        }
    }

    /// The type of a full `st_mode`, if it is one we know.
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

    /// The letter `ls -l` shows.
    pub fn letter(self) -> char {
        match self {
            Kind::File => '-',
            Kind::Dir => 'd',
            Kind::Symlink => 'l',
            Kind::CharDev => 'c',
            Kind::BlockDev => 'b',
            Kind::Fifo => 'p',
            Kind::Socket => 's',
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "directory",
            Kind::Symlink => "symlink",
            Kind::CharDev => "char device",
            Kind::BlockDev => "block device",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
        }
    }

    /// All kinds, in a stable order (for counts).
    pub const ALL: [Kind; 7] = [
        Kind::File,
        Kind::Dir,
        Kind::Symlink,
        Kind::CharDev,
        Kind::BlockDev,
        Kind::Fifo,
        Kind::Socket,
    ];
}

/// One extended attribute (names and values are raw bytes).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Xattr {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// Everything `stat` and `getxattr` need about one inode. The chunk list of
/// a regular file is kept apart (see [`crate::Tree::chunks`]) so that
/// `getattr` stays small and cheap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inode {
    pub ino: Ino,
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (`mode & 0o7777`).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Bytes of a regular file; length of a symlink's target; 0 otherwise.
    pub size: u64,
    /// Device number (`makedev(major, minor)`) of char and block devices.
    pub rdev: u64,
    /// Number of names (directory entries) of this inode; directories count
    /// `2 + subdirectories` like POSIX filesystems.
    pub nlink: u32,
    /// The directory holding this inode's first name (the root is its own).
    pub parent: Ino,
    /// Symlink target (raw bytes), empty for other types.
    pub target: Vec<u8>,
    /// Sorted by name.
    pub xattrs: Vec<Xattr>,
}

impl Inode {
    /// Full `st_mode`: type bits and permission bits.
    pub fn mode(&self) -> u32 {
        self.kind.mode_bits() | (self.perm & 0o7777)
    }

    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }

    /// Device major and minor numbers (Linux encoding).
    pub fn rdev_major_minor(&self) -> (u32, u32) {
        (libc::major(self.rdev), libc::minor(self.rdev))
    }

    /// The value of one extended attribute.
    pub fn xattr(&self, name: &[u8]) -> Option<&[u8]> {
        self.xattrs.iter().find(|x| x.name == name).map(|x| x.value.as_slice())
    }
}

/// One name in a directory.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub ino: Ino,
    pub kind: Kind,
}

/// How file contents were cut into chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Chunking {
    /// Every chunk but the last of a file has exactly `size` bytes.
    Fixed { size: u32 },
    /// FastCDC (2020) with these bounds.
    FastCdc { min: u32, avg: u32, max: u32 },
}

impl Chunking {
    /// The largest chunk this chunking produces.
    pub fn max_chunk(&self) -> u32 {
        match *self {
            Chunking::Fixed { size } => size,
            Chunking::FastCdc { max, .. } => max,
        }
    }

    /// The nominal chunk size (fixed size, or CDC average).
    pub fn nominal(&self) -> u32 {
        match *self {
            Chunking::Fixed { size } => size,
            Chunking::FastCdc { avg, .. } => avg,
        }
    }
}

impl std::fmt::Display for Chunking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Chunking::Fixed { size } => write!(f, "fixed {size} bytes"),
            Chunking::FastCdc { min, avg, max } => {
                write!(f, "fastcdc min {min} avg {avg} max {max} bytes")
            }
        }
    }
}

/// Codec of the chunks an flist points to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Codec {
    /// zosfs `ZCK1`: key = BLAKE3(plain), blob = header ‖ AES-256-GCM(zstd),
    /// id = BLAKE3(blob).
    Zck1,
    /// rfs `.fl`: BLAKE2b-256, snappy, AES-256-GCM (read by `legacy`).
    Rfs,
    /// 0-fs `.flist`: BLAKE2b-128, snappy, XXTEA (read by `legacy`).
    ZeroFs,
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Codec::Zck1 => "zck1 (blake3, zstd, aes-256-gcm)",
            Codec::Rfs => "rfs (blake2b-256, snappy, aes-256-gcm)",
            Codec::ZeroFs => "0-fs (blake2b-128, snappy, xxtea)",
        })
    }
}

/// Well-known tag names (any other `k=v` is kept as well).
pub mod tags {
    pub const NAME: &str = "name";
    pub const VERSION: &str = "version";
    pub const DESCRIPTION: &str = "description";
    pub const ENTRYPOINT: &str = "entrypoint";
    pub const ENVIRONMENT: &str = "environment";
}

/// What an flist says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Version of the on-disk format ([`crate::native::FORMAT_VERSION`]).
    pub format_version: u32,
    pub chunking: Chunking,
    pub codec: Codec,
    /// zstd level the chunks were encoded with (informational).
    pub compression_level: i32,
    /// The tool that wrote it, e.g. `zosfs-flist 0.1.0`.
    pub tool: String,
    /// Store URLs the chunks were uploaded to, without passwords.
    pub routes: Vec<String>,
    /// User tags (name, version, description, entrypoint, environment, ...).
    pub tags: BTreeMap<String, String>,
}

/// The chunks of one regular file, in file order.
pub type ChunkList = Vec<ChunkRef>;

/// Where a file offset falls in a chunk list: index and offset of the chunk.
pub fn chunk_offsets(chunks: &[ChunkRef]) -> Vec<u64> {
    let mut off = 0u64;
    chunks
        .iter()
        .map(|c| {
            let here = off;
            off += u64::from(c.len);
            here
        })
        .collect()
}
