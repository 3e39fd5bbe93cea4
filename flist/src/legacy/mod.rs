//! Readers for the flist formats that came before zosfs, so real Zero-OS
//! flists can be listed, read, unpacked, verified and converted:
//!
//! * [`rfs`] — rfs `.fl`: a SQLite database (`inode`, `extra`, `block`,
//!   `tag`, `route` tables); chunks BLAKE2b-256, snappy, AES-256-GCM.
//!
//! [`open_any`] sniffs a file's format by its first bytes.

pub mod rfs;

use std::path::Path;

use crate::error::{Result, corrupt};
use crate::native::{Flist, OpenOptions, archive};
use crate::tree::Tree;

/// The formats [`open_any`] knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// zosfs: zstd-compressed tar of a RocksDB directory (or the directory).
    Native,
    /// rfs `.fl`: SQLite.
    Rfs,
}

const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";

/// Tell the format of an flist file from its first bytes.
pub fn sniff(path: &Path) -> Result<Format> {
    if path.is_dir() {
        return Ok(Format::Native);
    }
    let head = archive::sniff(path, 16)?;
    if head.starts_with(SQLITE_MAGIC) {
        Ok(Format::Rfs)
    } else if head.starts_with(ZSTD_MAGIC) {
        Ok(Format::Native)
    } else {
        Err(corrupt(format!(
            "{}: not an flist (neither a zosfs .flist nor an rfs .fl file)",
            path.display()
        )))
    }
}

/// Open an flist of any known format.
pub fn open_any(path: &Path, opts: &OpenOptions) -> Result<Box<dyn Tree>> {
    Ok(match sniff(path)? {
        Format::Native => Box::new(Flist::open_with(path, opts)?),
        Format::Rfs => Box::new(rfs::RfsFlist::open(path)?),
    })
}
