//! A device backed by a [`LazyFile`]: a local sparse cache file plus a
//! persisted per-chunk state map, filled from a chunk source on first read.
//!
//! * blank devices: every chunk starts as zeros ([`BlankSource`]);
//! * image devices: chunks of a file in an flist, fetched from the store,
//!   verified, written to the cache, served locally from then on.
//!
//! The mapping to NBD: TRIM and WRITE_ZEROES become chunk-state changes
//! plus hole punching where whole chunks are covered; FLUSH and FUA make
//! data and the state map durable; `base:allocation` says HOLE|ZERO only
//! where the content truly reads as zeros (a zeroed chunk, or a chunk the
//! image itself records as zeros), never for data not fetched yet;
//! `zosfs:cached` marks what reads without touching the network. CACHE
//! queues the range's absent chunks for a background fill (see
//! [`super::hints`]) and answers at once.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use zosfs_store::lazy::{Extent as LazyExtent, FileRange, LazyFile, LazyStats, Prefetch};

use super::hints::CacheHints;
use super::{BlockDevice, Extent, MAX_EXTENTS, ReadPiece, ZeroMode};
use crate::error::{Error, ErrorKind, Result};
use crate::proto::consts::{STATE_CACHED, STATE_HOLE, STATE_ZERO};
use crate::proto::{BlockSizes, MetaContext};

/// Largest READ/WRITE payload accepted (the spec's portable maximum).
pub const MAX_PAYLOAD: u32 = 32 << 20;

static ZEROS: [u8; 1 << 20] = [0u8; 1 << 20];

pub struct LazyDevice {
    lazy: LazyFile,
    what: String,
    /// Background fills started by `--fill background`; finished ones are
    /// dropped on the next start.
    fills: Mutex<Vec<Prefetch>>,
    /// Chunks hinted by CACHE, fetched by one worker.
    hints: CacheHints,
    /// Writes, trims and zeroings hold it shared; a live commit holds it
    /// exclusively, so the image it reads is one point in time.
    gate: tokio::sync::RwLock<()>,
}

impl LazyDevice {
    pub fn new(lazy: LazyFile, what: impl Into<String>) -> Self {
        LazyDevice {
            lazy,
            what: what.into(),
            fills: Mutex::new(Vec::new()),
            hints: CacheHints::default(),
            gate: tokio::sync::RwLock::new(()),
        }
    }

    pub fn lazy(&self) -> &LazyFile {
        &self.lazy
    }

    pub fn stats(&self) -> LazyStats {
        self.lazy.stats()
    }

    /// Bytes that read without a fetch (local or known zeros).
    pub fn local_bytes(&self) -> u64 {
        self.lazy.extents(0, self.lazy.size()).iter().filter(|x| x.local).map(|x| x.length).sum()
    }

    /// Fill `[off, off+len)` in the background, at most `bandwidth` bytes/s.
    pub fn start_fill(&self, off: u64, len: u64, bandwidth: Option<u64>) {
        let p = self.lazy.prefetch(off, len, bandwidth);
        let mut fills = self.fills.lock();
        fills.retain(|f| !f.is_finished());
        fills.push(p);
    }

    /// Hold every change to the content until the guard is dropped (writes
    /// already running finish first).
    pub async fn pause_changes(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.gate.write().await
    }

    /// Stop background fills and CACHE hints (fetches already started
    /// complete).
    pub fn cancel_fills(&self) {
        for f in self.fills.lock().drain(..) {
            f.cancel();
        }
        self.hints.cancel();
    }

    /// The CACHE hint queue (for stats).
    pub fn hints(&self) -> &CacheHints {
        &self.hints
    }

    /// The part of `[off, off+len)` that spans at most [`MAX_EXTENTS`]
    /// chunks (extents never split a chunk, so it has at most that many).
    fn extent_window(&self, off: u64, len: u64) -> u64 {
        let layout = self.lazy.layout();
        let chunks = layout.chunks_in(off, len);
        if chunks.end - chunks.start <= MAX_EXTENTS as u64 {
            return len;
        }
        layout.span(chunks.start + MAX_EXTENTS as u64 - 1).end - off
    }

    /// Whether the range covers whole chunks only (end of device counts as
    /// a boundary): then zeroing it is pure metadata.
    fn chunk_aligned(&self, off: u64, len: u64) -> bool {
        let layout = self.lazy.layout();
        let end = off + len;
        let edge = |at: u64| at == layout.size() || layout.span(layout.index_of(at)).start == at;
        len == 0 || (edge(off) && edge(end))
    }

    async fn write_zero_buffers(&self, off: u64, len: u32) -> Result<()> {
        let mut done = 0u64;
        while done < u64::from(len) {
            let n = (u64::from(len) - done).min(ZEROS.len() as u64) as usize;
            self.lazy.write(off + done, Bytes::from_static(&ZEROS[..n])).await?;
            done += n as u64;
        }
        Ok(())
    }
}

/// Cut a read result into data and zero pieces along the device's extents.
fn pieces(off: u64, data: Bytes, extents: &[LazyExtent]) -> Vec<ReadPiece> {
    let mut out: Vec<ReadPiece> = Vec::with_capacity(extents.len());
    let end = off + data.len() as u64;
    for x in extents {
        let (s, e) = (x.offset.max(off), (x.offset + x.length).min(end));
        if s >= e {
            continue;
        }
        if x.zero {
            out.push(ReadPiece::Zero((e - s) as u32));
        } else {
            out.push(ReadPiece::Data(data.slice((s - off) as usize..(e - off) as usize)));
        }
    }
    out
}

#[async_trait]
impl BlockDevice for LazyDevice {
    fn size(&self) -> u64 {
        self.lazy.size()
    }

    fn block_sizes(&self) -> BlockSizes {
        // Preferred must be a power of two ≥ 512: the chunk size, rounded
        // down for odd content-defined averages.
        let nominal = self.lazy.layout().fixed_chunk_size().unwrap_or(1 << 20).max(512);
        let preferred = 1u32 << (31 - nominal.leading_zeros());
        BlockSizes { min: 1, preferred, max: MAX_PAYLOAD }
    }

    fn describe(&self) -> String {
        self.what.clone()
    }

    async fn read(&self, offset: u64, length: u32) -> Result<Vec<ReadPiece>> {
        let extents = self.lazy.extents(offset, u64::from(length));
        if extents.iter().all(|x| x.zero) {
            return Ok(if length == 0 { Vec::new() } else { vec![ReadPiece::Zero(length)] });
        }
        let data = self.lazy.read(offset, length as usize).await?;
        if data.len() != length as usize {
            return Err(Error::new(
                ErrorKind::Io,
                format!("short read of {} bytes at {offset} (wanted {length})", data.len()),
            ));
        }
        Ok(pieces(offset, Bytes::from(data), &extents))
    }

    fn read_now(&self, offset: u64, length: u32) -> Option<Vec<ReadPiece>> {
        // Only local (present or dirty) chunks read in place, and none of
        // them reads as zeros by state: one data piece.
        let data = self.lazy.read_now(offset, length as usize)?;
        (data.len() == length as usize && length > 0).then(|| vec![ReadPiece::Data(data.into())])
    }

    fn read_file_range(&self, offset: u64, length: u32) -> Option<FileRange> {
        // As for read_now: local chunks never read as zeros by state.
        self.lazy.file_range_now(offset, length as usize)
    }

    async fn write(&self, offset: u64, data: Bytes, fua: bool) -> Result<()> {
        let _open = self.gate.read().await;
        self.lazy.write(offset, data).await?;
        if fua { self.flush().await } else { Ok(()) }
    }

    async fn flush(&self) -> Result<()> {
        Ok(self.lazy.flush().await?)
    }

    async fn trim(&self, offset: u64, length: u32, fua: bool) -> Result<()> {
        let _open = self.gate.read().await;
        self.lazy.trim(offset, u64::from(length)).await?;
        if fua { self.flush().await } else { Ok(()) }
    }

    async fn write_zeroes(
        &self,
        offset: u64,
        length: u32,
        mode: ZeroMode,
        fua: bool,
    ) -> Result<()> {
        let len = u64::from(length);
        let _open = self.gate.read().await;
        if mode.no_hole {
            // Zeros that stay allocated are plain writes: never fast.
            if mode.fast {
                return Err(Error::new(ErrorKind::Unsupported, "allocated zeroing is not fast"));
            }
            self.write_zero_buffers(offset, length).await?;
        } else {
            // Partly covered chunks need their other bytes (maybe a fetch).
            if mode.fast && !self.chunk_aligned(offset, len) {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    "zeroing part of a chunk is not faster than writing it",
                ));
            }
            self.lazy.write_zeroes(offset, len).await?;
        }
        if fua { self.flush().await } else { Ok(()) }
    }

    async fn block_status(
        &self,
        ctx: MetaContext,
        offset: u64,
        length: u32,
    ) -> Result<Vec<Extent>> {
        let flags = |x: &LazyExtent| match ctx {
            MetaContext::Allocation if x.zero => STATE_HOLE | STATE_ZERO,
            MetaContext::Allocation => 0,
            MetaContext::Cached if x.local => STATE_CACHED,
            MetaContext::Cached => 0,
        };
        // Walked a window of chunks at a time, so a range of many small
        // extents stops at the cap instead of being listed whole first.
        let end = offset + u64::from(length);
        let mut out: Vec<Extent> = Vec::new();
        let mut at = offset;
        while at < end && out.len() <= MAX_EXTENTS {
            let window = self.extent_window(at, end - at);
            for x in self.lazy.extents(at, window) {
                match out.last_mut() {
                    Some(last) if last.flags == flags(&x) => last.length += x.length,
                    _ => out.push(Extent { length: x.length, flags: flags(&x) }),
                }
            }
            at += window;
        }
        out.truncate(MAX_EXTENTS);
        Ok(out)
    }

    async fn cache(&self, offset: u64, length: u32) -> Result<()> {
        self.hints.hint(&self.lazy, offset, u64::from(length));
        Ok(())
    }
}

/// Shared handle, for stats and background fills owned by the server.
pub type SharedLazyDevice = Arc<LazyDevice>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_follow_extents() {
        let x = [
            LazyExtent { offset: 0, length: 100, local: true, zero: false },
            LazyExtent { offset: 100, length: 100, local: true, zero: true },
            LazyExtent { offset: 200, length: 100, local: false, zero: false },
        ];
        let p = pieces(50, Bytes::from(vec![1u8; 200]), &x);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].len(), 50);
        assert_eq!(p[1], ReadPiece::Zero(100));
        assert_eq!(p[2].len(), 50);
    }
}
