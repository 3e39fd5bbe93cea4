//! `LazyFile`: a local sparse file filled chunk by chunk from a chunk source,
//! with a persisted per-chunk state map.
//!
//! Users: fsmount keeps one per distinct file content (read-only, chunk
//! boundaries from the flist, possibly content-defined); nbdserver keeps one
//! per block device (fixed chunks, read-write; a blank device reads zeros).
//!
//! Parts (one module each):
//! * [`layout`] — chunk boundaries; [`source`] — where chunk plaintext comes
//!   from ([`StoreSource`] verifies and decodes chunks of a store);
//! * `state` — chunk states; `format` — the state file on disk; `journal`
//!   — the task that persists states in batches;
//! * `jobs` — one owner per chunk at a time; `fill` — fetching;
//!   `read` / `write` — the data paths; `open` — creating and checking the
//!   files; [`prefetch`] — background fill under a bandwidth cap;
//!   [`blocking`] — a façade for threads outside the runtime (FUSE);
//!   [`testing`] — a slow, counting store wrapper for tests and benches.
//!
//! Crash safety. A chunk's state is persisted only after the data it
//! describes is durable (data written → fdatasync → state written →
//! fdatasync), and a chunk's state only says "same as the source"
//! (`Present`) while the file really holds the source's bytes: before the
//! first write to a present chunk, `Dirty` is persisted (write-ahead), and
//! before a present chunk is punched, `Zero` is. Absent and zeroed chunks
//! never read the data file, so bytes a crash leaves there are never served.
//! After a crash, writes that were not flushed are there or not, per chunk.

pub mod blocking;
mod fill;
mod format;
mod jobs;
mod journal;
pub mod layout;
mod open;
pub mod prefetch;
mod read;
pub mod source;
mod state;
mod stats;
pub mod testing;
mod write;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Semaphore, watch};

pub use blocking::BlockingLazyFile;
pub use layout::Layout;
pub use prefetch::{Prefetch, PrefetchReport};
pub use read::FileRange;
pub use source::{BlankSource, ChunkSource, Origin, StoreSource, origins_identity};
pub use state::ChunkState;
pub use stats::LazyStats;

use crate::engine::IoEngine;
use crate::error::{Error, ErrorKind, Result, invalid};
use format::Header;
use journal::Journal;
use state::StateTable;
use stats::Counters;

/// A point in the fill / persist sequence, for crash tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Chunk fetched and verified, nothing written yet.
    Fetched(u64),
    /// Chunk written to the data file, not yet synced nor marked.
    DataWritten(u64),
    /// A state batch: data synced, states not written yet.
    DataSynced,
    /// A state batch: states written, not yet synced.
    StateWritten,
}

/// Called at every [`Step`]; a crash test kills the process there.
pub type FailHook = Arc<dyn Fn(Step) + Send + Sync>;

/// What to do when the state file describes another layout or content.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnMismatch {
    /// Start over when the cache holds nothing local-only (no dirty or
    /// zeroed chunks); refuse otherwise.
    #[default]
    ResetIfClean,
    /// Always start over (drops local writes).
    Reset,
    /// Always refuse.
    Refuse,
}

/// Tunables of a LazyFile.
#[derive(Clone)]
pub struct LazyOptions {
    /// I/O engine for the data and state files (None: the shared auto engine).
    pub engine: Option<Arc<dyn IoEngine>>,
    /// Allow write / trim / write_zeroes (nbdserver).
    pub writable: bool,
    /// Source fetches in flight at most, over all readers.
    pub fetch_depth: usize,
    /// Most chunks fetched ahead of a sequential reader (0: off); the window
    /// ramps up from 0 as the reader moves from chunk to chunk.
    pub readahead: u32,
    /// Of `fetch_depth`, how many a background prefetch may use.
    pub prefetch_depth: usize,
    pub on_mismatch: OnMismatch,
    /// Longest time a fetch keeps retrying while no store can be reached
    /// (an outage, a hanging replica) before the read fails: like an NFS
    /// hard mount, bounded. Zero: fail at the first unreachable answer.
    /// A chunk that reachable stores do not have, or only corrupt, fails
    /// at once whatever this says.
    pub outage_wait: Duration,
    /// Longest time a state change nobody waits for stays unpersisted.
    pub state_sync_interval: Duration,
    /// Crash-test hook (see [`Step`]).
    #[doc(hidden)]
    pub failpoint: Option<FailHook>,
}

impl Default for LazyOptions {
    fn default() -> Self {
        LazyOptions {
            engine: None,
            writable: false,
            fetch_depth: 16,
            readahead: 8,
            prefetch_depth: 4,
            on_mismatch: OnMismatch::default(),
            outage_wait: Duration::ZERO,
            state_sync_interval: Duration::from_secs(1),
            failpoint: None,
        }
    }
}

/// A region of a LazyFile and what is known about it
/// (for NBD `base:allocation` and `zosfs:cached`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
    /// Reads are served without fetching.
    pub local: bool,
    /// Reads give zeros for sure.
    pub zero: bool,
}

pub(crate) struct Inner {
    name: String,
    path: PathBuf,
    layout: Layout,
    source: RwLock<Arc<dyn ChunkSource>>,
    engine: Arc<dyn IoEngine>,
    data: Arc<File>,
    states: StateTable,
    /// Chunks that are absent and not zero in the source: what a full fill fetches.
    missing: AtomicU64,
    jobs: Mutex<HashMap<u64, watch::Receiver<jobs::Outcome>>>,
    journal: Journal,
    /// Closes when the journal task has ended and released the files.
    journal_done: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
    header: Mutex<Header>,
    fetch_permits: Semaphore,
    prefetch_permits: Arc<Semaphore>,
    counters: Arc<Counters>,
    opts: LazyOptions,
    rt: tokio::runtime::Handle,
    /// End of the last read, for sequential detection.
    last_read_end: AtomicU64,
    /// Current read-ahead window in chunks (0 ..= opts.readahead).
    ra_window: AtomicU64,
    /// preadv2(RWF_NOWAIT) works on the data file (cleared on EOPNOTSUPP).
    nowait_reads: AtomicBool,
}

/// Largest single write to the data file (see [`Inner::write_data`]).
const WRITE_PIECE: u64 = 64 << 10;

impl Inner {
    fn source(&self) -> Arc<dyn ChunkSource> {
        self.source.read().clone()
    }

    /// Change a chunk's state (the caller owns the chunk's job).
    fn set_state(&self, i: u64, s: ChunkState) {
        let old = self.states.set(i, s);
        if old == ChunkState::Absent && s != ChunkState::Absent && !self.source().is_zero(i) {
            self.missing.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Write `data` at `off` of the data file, as writes of at most
    /// [`WRITE_PIECE`] bytes on `WRITE_PIECE` boundaries, run concurrently.
    ///
    /// Why pieces: the page cache sizes a folio after the write that creates
    /// it, so one 1 MiB write leaves 1 MiB folios, and every later 4 KiB
    /// write into such a folio walks all of its 256 block heads (ext4 on
    /// Linux 6.x): random 4 KiB writes to a filled NBD device ran 3x slower
    /// than on a file written in 64 KiB pieces.
    async fn write_data(&self, off: u64, data: Bytes) -> Result<()> {
        let len = data.len();
        let end = off + len as u64;
        let mut pieces = Vec::with_capacity(len / WRITE_PIECE as usize + 2);
        let mut at = off;
        while at < end {
            let next = ((at / WRITE_PIECE + 1) * WRITE_PIECE).min(end);
            let part = data.slice((at - off) as usize..(next - off) as usize);
            pieces.push(self.engine.write_at(self.data.clone(), at, part));
            at = next;
        }
        for r in futures::future::join_all(pieces).await {
            r.map_err(|e| Error::io(format!("{}: write {len} bytes at {off}", self.name), e))?;
        }
        Ok(())
    }

    fn hit(&self, step: Step) {
        if let Some(f) = &self.opts.failpoint {
            f(step);
        }
    }

    fn check_writable(&self, what: &str) -> Result<()> {
        if !self.opts.writable {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!("{}: {what} on a read-only LazyFile", self.name),
            ));
        }
        if self.journal.is_poisoned() {
            return Err(Error::new(
                ErrorKind::Io,
                format!("{}: {what} refused: an earlier sync failed", self.name),
            ));
        }
        Ok(())
    }

    /// The byte range `[off, off+len)` must lie inside the file.
    fn check_range(&self, what: &str, off: u64, len: u64) -> Result<()> {
        match off.checked_add(len) {
            Some(end) if end <= self.layout.size() => Ok(()),
            _ => Err(invalid(format!(
                "{}: {what} of {len} bytes at {off} is past the end ({} bytes)",
                self.name,
                self.layout.size()
            ))),
        }
    }
}

/// A lazily filled local file. Cheap to clone (one shared state).
#[derive(Clone)]
pub struct LazyFile {
    inner: Arc<Inner>,
}

impl LazyFile {
    /// Open (or create) the cache at `path` (data) and `path.state`
    /// (chunk states) for `layout` filled from `source`. Must be called
    /// inside a tokio runtime; background work runs on that runtime.
    pub async fn open(
        path: &Path,
        layout: Layout,
        source: Arc<dyn ChunkSource>,
        opts: LazyOptions,
    ) -> Result<LazyFile> {
        open::open(path, layout, source, opts).await.map(|inner| LazyFile { inner })
    }

    /// Path of the state file kept next to `data_path`.
    pub fn state_path(data_path: &Path) -> PathBuf {
        open::state_path(data_path)
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    pub fn size(&self) -> u64 {
        self.inner.layout.size()
    }

    pub fn is_writable(&self) -> bool {
        self.inner.opts.writable
    }

    /// Read `[off, off+len)`, clamped to the file size; absent chunks are
    /// fetched (concurrently), each at most once however many read it.
    pub async fn read(&self, off: u64, len: usize) -> Result<Vec<u8>> {
        read::read(&self.inner, off, len).await
    }

    /// [`read`](Self::read) without waiting: the bytes when every chunk of
    /// the range is local and in the page cache, else None (nothing done).
    /// For event loops that answer such reads in place.
    pub fn read_now(&self, off: u64, len: usize) -> Option<Vec<u8>> {
        read::read_now(&self.inner, off, len)
    }

    /// The range as a [`FileRange`] of the data file, for sending without
    /// a copy, when all of it is local and in the page cache; else None.
    pub fn file_range_now(&self, off: u64, len: usize) -> Option<FileRange> {
        read::file_range_now(&self.inner, off, len)
    }

    /// Write `data` at `off` (not durable until [`flush`](Self::flush)).
    pub async fn write(&self, off: u64, data: Bytes) -> Result<()> {
        write::write(&self.inner, off, data).await
    }

    /// Write and make durable before returning (NBD FUA).
    pub async fn write_sync(&self, off: u64, data: Bytes) -> Result<()> {
        self.write(off, data).await?;
        self.flush().await
    }

    /// Make every completed write and every state change durable.
    pub async fn flush(&self) -> Result<()> {
        self.inner.journal.flush().await
    }

    /// Wait until no chunk job runs: every fill started before (or while)
    /// waiting has written its data and recorded its state. Readers get a
    /// fill's plaintext before it is written, so this is when the data
    /// file's allocation is final for what was read.
    pub async fn settled(&self) {
        loop {
            let running: Vec<_> = self.inner.jobs.lock().values().cloned().collect();
            if running.is_empty() {
                return;
            }
            for rx in running {
                jobs::wait_closed(rx).await;
            }
        }
    }

    /// Flush, then wait until the files are closed and unlocked, so the
    /// cache can be opened again. Waits for every other clone of this
    /// handle to be dropped too (background fills end by themselves).
    pub async fn close(self) -> Result<()> {
        let done = self.inner.journal_done.lock().take();
        let flushed = self.flush().await;
        drop(self);
        if let Some(done) = done {
            let _ = done.await;
        }
        flushed
    }

    /// Discard whole chunks inside the range: they read as zeros without
    /// fetching, and their space is freed. Partly covered chunks are left
    /// as they are (a trim is advisory).
    pub async fn trim(&self, off: u64, len: u64) -> Result<()> {
        write::trim(&self.inner, off, len).await
    }

    /// Make the range read as zeros: whole chunks as by `trim`, the partly
    /// covered edges by writing zeros.
    pub async fn write_zeroes(&self, off: u64, len: u64) -> Result<()> {
        write::write_zeroes(&self.inner, off, len).await
    }

    /// Current state of chunk `i`.
    pub fn state(&self, i: u64) -> ChunkState {
        self.inner.states.get(i)
    }

    /// Whether every chunk overlapping the range reads without a fetch.
    pub fn is_local(&self, off: u64, len: u64) -> bool {
        let src = self.inner.source();
        self.inner
            .layout
            .chunks_in(off, len)
            .all(|i| self.inner.states.get(i) != ChunkState::Absent || src.is_zero(i))
    }

    /// Whether the whole file reads without fetching (fsmount may then
    /// hand [`backing_file`](Self::backing_file) to the kernel).
    pub fn is_fully_present(&self) -> bool {
        self.inner.missing.load(Ordering::Acquire) == 0
    }

    /// The sparse data file. Regions of absent chunks are holes once open
    /// returns, so when [`is_fully_present`](Self::is_fully_present) the
    /// file reads exactly like the content.
    pub fn backing_file(&self) -> Arc<File> {
        self.inner.data.clone()
    }

    /// The range split into runs of equal (local, zero) flags, chunk-granular.
    pub fn extents(&self, off: u64, len: u64) -> Vec<Extent> {
        let inner = &self.inner;
        let src = inner.source();
        let end = off.saturating_add(len).min(inner.layout.size());
        let mut out: Vec<Extent> = Vec::new();
        for i in inner.layout.chunks_in(off, len) {
            let span = inner.layout.span(i);
            let (s, e) = (span.start.max(off), span.end.min(end));
            let (local, zero) = match inner.states.get(i) {
                ChunkState::Present | ChunkState::Dirty => (true, false),
                ChunkState::Zero => (true, true),
                ChunkState::Absent => {
                    let z = src.is_zero(i);
                    (z, z)
                }
            };
            match out.last_mut() {
                Some(x) if x.local == local && x.zero == zero => x.length += e - s,
                _ => out.push(Extent { offset: s, length: e - s, local, zero }),
            }
        }
        out
    }

    /// Chunks that differ (or may differ) from the source: what
    /// `nbdserver commit` must upload. Zeroed chunks are included unless
    /// the source has zeros there too.
    pub fn dirty_chunks(&self) -> Vec<u64> {
        let src = self.inner.source();
        (0..self.inner.states.len())
            .filter(|&i| match self.inner.states.get(i) {
                ChunkState::Dirty => true,
                ChunkState::Zero => !src.is_zero(i),
                _ => false,
            })
            .collect()
    }

    /// Adopt `source` as the new base after the local content was committed
    /// as it: dirty chunks become present. The layout must not change, and
    /// the caller must hold off reads and writes while this runs.
    pub async fn rebase(&self, source: Arc<dyn ChunkSource>) -> Result<()> {
        write::rebase(&self.inner, source).await
    }

    pub fn stats(&self) -> LazyStats {
        let inner = &self.inner;
        let mut s = inner.counters.snapshot();
        s.chunks = inner.states.len();
        s.present = inner.states.count(ChunkState::Present);
        s.dirty = inner.states.count(ChunkState::Dirty);
        // An absent chunk the source knows is zero (a blank disk, a hole of
        // the image) reads as zeros without a fetch: it counts as zero, so
        // a blank disk is not "all absent" next to a full fill figure.
        let src = inner.source();
        let absent_zero = (0..s.chunks)
            .filter(|&i| inner.states.get(i) == ChunkState::Absent && src.is_zero(i))
            .count() as u64;
        s.absent = inner.states.count(ChunkState::Absent) - absent_zero;
        s.zero = inner.states.count(ChunkState::Zero) + absent_zero;
        s
    }

    /// Fetch the absent chunks of a range in the background, at most
    /// `bandwidth` plaintext bytes per second (None: no cap).
    pub fn prefetch(&self, off: u64, len: u64, bandwidth: Option<u64>) -> Prefetch {
        prefetch::start(&self.inner, off, len, bandwidth)
    }

    /// Fetch every absent chunk in the background.
    pub fn fill_all(&self, bandwidth: Option<u64>) -> Prefetch {
        self.prefetch(0, self.size(), bandwidth)
    }

    /// A blocking handle for threads outside the runtime (FUSE workers).
    pub fn blocking(&self) -> BlockingLazyFile {
        BlockingLazyFile::new(self.clone())
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }
}
