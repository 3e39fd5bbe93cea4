//! Block devices behind exports.
//!
//! [`BlockDevice`] is what the NBD server needs from storage, nothing more:
//! byte-addressed reads that may report zero runs without data, writes,
//! durability (flush / FUA), discards, metadata per context, and a prefetch
//! hint. One device is shared by every connection of its export, which is
//! what makes `NBD_FLAG_CAN_MULTI_CONN` true: a flush on any connection
//! covers writes acknowledged on all of them.
//!
//! Devices: [`lazy::LazyDevice`], a `LazyFile` (local sparse cache file +
//! persisted chunk states) filled from a blank source (`blank:SIZE`) or
//! from the chunks of a file in an flist ([`image`]). [`spec`] parses the
//! `--export NAME=SPEC` strings.

pub mod hints;
pub mod image;
pub mod lazy;
pub mod record;
pub mod spec;

use async_trait::async_trait;
use bytes::Bytes;

use zosfs_store::lazy::FileRange;

use crate::error::Result;
use crate::proto::{BlockSizes, MetaContext};

/// A consecutive piece of a read result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadPiece {
    Data(Bytes),
    /// This many bytes read as zeros (sent as a hole when the client
    /// negotiated structured replies).
    Zero(u32),
}

impl ReadPiece {
    pub fn len(&self) -> u32 {
        match self {
            ReadPiece::Data(b) => b.len() as u32,
            ReadPiece::Zero(n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Most extents a device reports per BLOCK_STATUS context, and most
/// descriptors a reply chunk carries. The spec lets a server describe
/// less than the requested length (at least one extent) when the whole
/// would cost too much; clients ask again from where the reply ended.
/// 1024 descriptors are 8 KiB of reply per context.
pub const MAX_EXTENTS: usize = 1024;

/// A run of bytes sharing one status in a metadata context. Flags are those
/// of the context (see `proto::meta`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub length: u64,
    pub flags: u32,
}

/// How WRITE_ZEROES may proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZeroMode {
    /// The range must stay allocated (no hole may be punched).
    pub no_hole: bool,
    /// Fail with `Unsupported` rather than be as slow as a write.
    pub fast: bool,
}

/// Storage behind an export. Callers guarantee `offset + length <= size()`.
#[async_trait]
pub trait BlockDevice: Send + Sync + 'static {
    /// Size in bytes (fixed for the device's lifetime).
    fn size(&self) -> u64;

    /// Block size constraints advertised to clients; `preferred` is the
    /// device's chunk size.
    fn block_sizes(&self) -> BlockSizes;

    /// One line for humans (`NBD_INFO_DESCRIPTION`, logs).
    fn describe(&self) -> String;

    /// Read `length` bytes at `offset`: pieces in order, lengths summing to
    /// `length`.
    async fn read(&self, offset: u64, length: u32) -> Result<Vec<ReadPiece>>;

    /// The read answered at once, without waiting on anything (no I/O
    /// wait, no fetch), or None: then [`read`](Self::read) serves it. Lets
    /// the connection's reader answer warm reads in place.
    fn read_now(&self, _offset: u64, _length: u32) -> Option<Vec<ReadPiece>> {
        None
    }

    /// The read's bytes as a range of a local file, when all of them are
    /// local and cached (sent later by `sendfile`, see [`FileRange`] for
    /// when the bytes are read); None otherwise.
    fn read_file_range(&self, _offset: u64, _length: u32) -> Option<FileRange> {
        None
    }

    /// Write `data` at `offset`; with `fua`, durable before returning.
    async fn write(&self, offset: u64, data: Bytes, fua: bool) -> Result<()>;

    /// Make every completed write durable.
    async fn flush(&self) -> Result<()>;

    /// Discard a range (its content becomes unspecified; here: zeros).
    async fn trim(&self, offset: u64, length: u32, fua: bool) -> Result<()>;

    /// Make a range read as zeros.
    async fn write_zeroes(&self, offset: u64, length: u32, mode: ZeroMode, fua: bool)
    -> Result<()>;

    /// Extents covering `[offset, offset+length)` (possibly fewer bytes, at
    /// least one extent, at most [`MAX_EXTENTS`]) in context `ctx`.
    async fn block_status(&self, ctx: MetaContext, offset: u64, length: u32)
    -> Result<Vec<Extent>>;

    /// Hint: the range will be read soon (fetch it into the local cache).
    async fn cache(&self, offset: u64, length: u32) -> Result<()>;
}

/// Split a buffer read at absolute `offset` into data and zero pieces.
/// Zero runs are only reported for whole `granule`-aligned blocks (a
/// power of two), so short zero stretches inside data stay data and hole
/// chunks keep the alignment the spec recommends.
pub fn split_zero_runs(offset: u64, data: Bytes, granule: u32) -> Vec<ReadPiece> {
    let g = u64::from(granule.max(512));
    let total = data.len();
    let mut pieces: Vec<ReadPiece> = Vec::new();
    let mut data_start = 0usize; // start of the pending data piece
    let mut pos = 0usize;
    while pos < total {
        // Block [pos, next) ends at the next granule boundary.
        let abs = offset + pos as u64;
        let next = (((abs / g) + 1) * g - offset).min(total as u64) as usize;
        let whole = abs % g == 0 && (next - pos) as u64 == g;
        if whole && is_zero(&data[pos..next]) {
            if data_start < pos {
                pieces.push(ReadPiece::Data(data.slice(data_start..pos)));
            }
            match pieces.last_mut() {
                Some(ReadPiece::Zero(n)) => *n += (next - pos) as u32,
                _ => pieces.push(ReadPiece::Zero((next - pos) as u32)),
            }
            data_start = next;
        }
        pos = next;
    }
    if data_start < total {
        pieces.push(ReadPiece::Data(data.slice(data_start..total)));
    }
    pieces
}

/// True when every byte is zero. Works on 64-byte blocks so the inner OR
/// vectorises.
pub fn is_zero(buf: &[u8]) -> bool {
    let mut chunks = buf.chunks_exact(64);
    let whole = chunks.by_ref().all(|c| c.iter().fold(0u8, |a, &b| a | b) == 0);
    whole && chunks.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_runs() {
        let mut v = vec![0u8; 4 * 4096];
        v[4096 + 10] = 1; // block 1 has data
        let p = split_zero_runs(0, Bytes::from(v), 4096);
        assert_eq!(
            p.iter().map(|p| (matches!(p, ReadPiece::Data(_)), p.len())).collect::<Vec<_>>(),
            vec![(false, 4096), (true, 4096), (false, 8192)]
        );
        // Unaligned start: the partial first block stays data.
        let p = split_zero_runs(100, Bytes::from(vec![0u8; 8192]), 4096);
        assert_eq!(p.iter().map(|p| p.len()).sum::<u32>(), 8192);
        assert!(matches!(p[0], ReadPiece::Data(_)));
        assert_eq!(p[0].len(), 3996);
        assert_eq!(p[1], ReadPiece::Zero(4096));
        assert!(matches!(p[2], ReadPiece::Data(_)));
        // All data.
        let p = split_zero_runs(0, Bytes::from(vec![7u8; 5000]), 4096);
        assert_eq!(p.len(), 1);
        assert!(split_zero_runs(0, Bytes::new(), 4096).is_empty());
    }

    #[test]
    fn zero_check() {
        assert!(is_zero(&[0u8; 200]));
        let mut v = [0u8; 200];
        v[199] = 1;
        assert!(!is_zero(&v));
        v[199] = 0;
        v[3] = 1;
        assert!(!is_zero(&v));
    }
}
