//! `local://PATH`: the node's own chunk store.
//!
//! Layout of `PATH`:
//!
//! ```text
//! LOCK               flock'ed while a process has the store open
//! NNNNNNNN.seg       append-only segments of CRC-framed records (record.rs)
//! index              index snapshot (snapshot.rs), replaced atomically
//! quarantine/        bad records moved aside by open, fsck and compaction
//! replication-queue/ the router's pending replication (router/queue.rs), not ours
//! ```
//!
//! Pieces: [`record`] and [`snapshot`] are wire formats; [`index`] is the
//! compact in-memory index; [`segment`] names segment files and scans
//! them; [`writer`] is the group-commit writer thread; [`open`] loads the
//! snapshot and replays the tail; [`maint`] does eviction, compaction and
//! snapshots; [`fsck`] verifies everything.
//!
//! Invariants:
//! * a record is written once and never changed; segments only grow, are
//!   truncated only to cut a torn tail, and are deleted whole by compaction;
//! * the index points only at records that were written and (under
//!   [`SyncPolicy::EveryPut`]) synced: puts are applied by the writer after
//!   their batch is durable, and acknowledged after that;
//! * replay applies records in log order: a blob record sets its id (last
//!   wins), a tombstone removes its id only if the index still points at
//!   the record it names. Compaction copies live records forward as plain
//!   blob records, so the same rules rebuild the same index;
//! * deletes, evictions, compaction and quarantine run under `maint_lock`,
//!   so a compaction copy never races a delete of the same id.
//!
//! All disk I/O (segments, snapshot, quarantine copies) goes through the
//! [`IoEngine`](crate::engine::IoEngine).

mod fsck;
mod index;
mod maint;
mod open;
mod record;
mod segment;
mod snapshot;
mod writer;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

pub use fsck::{FsckOptions, FsckReport};
pub use maint::GcReport;
pub use open::OpenReport;

use crate::backend::{ChunkStore, OpenOptions, StoreStats, SyncPolicy};
use crate::chunk::{ChunkId, MAX_BLOB};
use crate::engine::IoEngine;
use crate::error::{Error, ErrorKind, Result, corrupt, invalid};
use index::Index;
use record::{HEADER_LEN, Header, Kind, Pos};
use writer::Req;

/// Default segment size without a budget.
const DEFAULT_SEGMENT: u64 = 256 << 20;
/// Offsets are u32: segments stay well below 4 GiB.
const MAX_SEGMENT: u64 = 1 << 30;
const MIN_SEGMENT: u64 = 1 << 20;
/// Smallest cache budget accepted (a few segments must fit).
pub const MIN_BUDGET: u64 = 16 << 20;

/// The node's chunk store. Cheap to share behind an `Arc`; dropping the
/// last handle stops its threads and writes an index snapshot.
pub struct LocalStore {
    inner: Arc<Inner>,
    writer: Option<std::thread::JoinHandle<()>>,
    maint: Option<std::thread::JoinHandle<()>>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    sync: SyncPolicy,
    budget: Option<u64>,
    seg_size: u64,
}

/// One segment file.
pub(crate) struct Seg {
    file: Arc<File>,
    /// Bytes written and applied (the active segment grows).
    size: u64,
    /// Bytes of records the index points at.
    live: u64,
}

/// Everything readers and the writer share, under one lock.
pub(crate) struct State {
    index: Index,
    segs: BTreeMap<u32, Seg>,
    /// End of what the writer has applied: snapshots replay from here.
    applied: Pos,
    blob_bytes: u64,
    live_bytes: u64,
    seg_bytes: u64,
}

impl State {
    fn active(&self) -> u32 {
        *self.segs.keys().next_back().expect("there is always an active segment")
    }

    /// Account a blob record becoming live, and the one it replaces.
    fn add_live(&mut self, loc: index::Loc, old: Option<index::Loc>) {
        if let Some(s) = self.segs.get_mut(&loc.pos.seg) {
            s.live += loc.record_len();
        }
        self.live_bytes += loc.record_len();
        self.blob_bytes += u64::from(loc.len);
        if let Some(old) = old {
            self.drop_live(old);
        }
    }

    fn drop_live(&mut self, old: index::Loc) {
        if let Some(s) = self.segs.get_mut(&old.pos.seg) {
            s.live -= old.record_len().min(s.live);
        }
        self.live_bytes -= old.record_len().min(self.live_bytes);
        self.blob_bytes -= u64::from(old.len).min(self.blob_bytes);
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    gets: AtomicU64,
    hits: AtomicU64,
    puts: AtomicU64,
    evictions: AtomicU64,
    /// Records applied by the writer since open (snapshot scheduling).
    applied: AtomicU64,
    /// Bytes appended since open.
    appended: AtomicU64,
    /// fdatasyncs of segments (group commit: far fewer than puts).
    syncs: AtomicU64,
}

pub(crate) struct Inner {
    name: String,
    dir: PathBuf,
    engine: Arc<dyn IoEngine>,
    cfg: Config,
    state: RwLock<State>,
    queue: writer::Queue,
    maint_lock: tokio::sync::Mutex<()>,
    snap_lock: tokio::sync::Mutex<()>,
    /// LRU clock: ticks on every put and get hit.
    clock: AtomicU32,
    counters: Counters,
    /// Set when the writer could not undo a failed write: refuse puts.
    broken: Mutex<Option<String>>,
    dir_file: Arc<File>,
    /// Size of the snapshot file and the counters when it was taken.
    snap_bytes: AtomicU64,
    snap_applied: AtomicU64,
    snap_appended: AtomicU64,
    /// The index changed in ways the counters do not show (open replayed,
    /// gc ran): snapshot soon.
    force_snapshot: std::sync::atomic::AtomicBool,
    open_report: Mutex<OpenReport>,
    maint_signal: maint::Signal,
    _lock: File,
}

/// Detailed figures for `chunkstore stat`.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct LocalStats {
    pub chunks: u64,
    pub blob_bytes: u64,
    pub segments: u64,
    pub segment_bytes: u64,
    /// Bytes of sealed and active segments no live record uses.
    pub dead_bytes: u64,
    pub snapshot_bytes: u64,
    pub index_memory: u64,
    pub gets: u64,
    pub hits: u64,
    pub puts: u64,
    pub evictions: u64,
    /// Segment fdatasyncs since open.
    pub syncs: u64,
    pub engine: String,
    pub budget: Option<u64>,
    pub sync: SyncPolicy,
}

impl LocalStats {
    pub fn disk_bytes(&self) -> u64 {
        self.segment_bytes + self.snapshot_bytes
    }

    pub fn hit_ratio(&self) -> Option<f64> {
        (self.gets > 0).then(|| self.hits as f64 / self.gets as f64)
    }
}

impl LocalStore {
    /// Open (creating if needed) the store in `path`. Fails if another
    /// process (or handle) has it open: share a store through
    /// [`NodeStore`](crate::node::NodeStore) instead.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Self> {
        Self::try_open(path, opts)?.ok_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                format!(
                    "local://{}: store is in use by another process (or handle)",
                    path.display()
                ),
            )
        })
    }

    /// [`open`](Self::open), or `None` when another process (or handle)
    /// holds the store's lock.
    pub fn try_open(path: &Path, opts: &OpenOptions) -> Result<Option<Self>> {
        let Some(inner) = open::open(path, opts)? else { return Ok(None) };
        let inner = Arc::new(inner);
        let w = inner.clone();
        let writer = std::thread::Builder::new()
            .name("zosfs-local-writer".into())
            .spawn(move || writer::run(w))
            .map_err(|e| Error::io(format!("{}: start writer thread", inner.name), e))?;
        let mut store = LocalStore { inner: inner.clone(), writer: Some(writer), maint: None };
        let m = inner.clone();
        let maint = std::thread::Builder::new()
            .name("zosfs-local-maint".into())
            .spawn(move || maint::run(m))
            .map_err(|e| Error::io(format!("{}: start maintenance thread", inner.name), e))?;
        store.maint = Some(maint);
        Ok(Some(store))
    }

    /// The options the store was opened with that clients see (sync policy,
    /// budget).
    pub fn sync_policy(&self) -> SyncPolicy {
        self.inner.cfg.sync
    }

    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// What opening found: snapshot or replay, torn tail, quarantined records.
    pub fn open_report(&self) -> OpenReport {
        self.inner.open_report.lock().clone()
    }

    pub fn local_stats(&self) -> LocalStats {
        self.inner.local_stats()
    }

    /// Verify every record; quarantine bad ones (see [`FsckReport`]).
    pub async fn fsck(&self, opts: &FsckOptions) -> Result<FsckReport> {
        self.inner.fsck(opts).await
    }

    /// Compact every sealed segment that holds dead records, now.
    pub async fn gc(&self) -> Result<GcReport> {
        self.inner.gc().await
    }

    /// Write an index snapshot now (also done periodically and at close).
    pub async fn snapshot(&self) -> Result<()> {
        self.inner.write_snapshot().await
    }

    /// Where the record of `id` is, and a read-only handle on its segment,
    /// for a reader in another process: it reads and checks the record
    /// itself ([`check_record`]). Records never change and segments are
    /// only ever deleted whole, so the location stays readable through that
    /// handle for as long as it is open. Counted as a get (and a hit).
    pub fn locate(&self, id: &ChunkId) -> Option<(Located, Arc<File>)> {
        let inner = &self.inner;
        inner.counters.gets.fetch_add(1, Ordering::Relaxed);
        let st = inner.state.read();
        let (loc, atime) = st.index.get(id)?;
        let file = st.segs.get(&loc.pos.seg)?.file.clone();
        atime.store(inner.tick(), Ordering::Relaxed);
        inner.counters.hits.fetch_add(1, Ordering::Relaxed);
        Some((loc.into(), file))
    }

    /// Ids of every live chunk (tests and tools).
    pub fn ids(&self) -> Vec<ChunkId> {
        let st = self.inner.state.read();
        let mut out = Vec::with_capacity(st.index.len());
        st.index.for_each(|id, _, _| out.push(*id));
        out
    }

    /// Ask the kernel to drop cached pages of the segments (cold-read
    /// benchmarks). Only a hint.
    pub fn drop_page_cache(&self) {
        use std::os::fd::AsRawFd;
        let st = self.inner.state.read();
        for s in st.segs.values() {
            // SAFETY: posix_fadvise on an fd we keep open; plain integers.
            unsafe { libc::posix_fadvise(s.file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
    }
}

impl Drop for LocalStore {
    fn drop(&mut self) {
        // Maintenance first: its last act is the close snapshot, which needs
        // the writer. Then the writer drains, syncs and stops.
        self.inner.maint_signal.close();
        if let Some(h) = self.maint.take() {
            let _ = h.join();
        }
        self.inner.queue.shutdown();
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
    }
}

impl Inner {
    fn check_usable(&self) -> Result<()> {
        match &*self.broken.lock() {
            Some(why) => {
                Err(Error::new(ErrorKind::Io, format!("{}: store disabled: {why}", self.name)))
            }
            None => Ok(()),
        }
    }

    fn tick(&self) -> u32 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    fn local_stats(&self) -> LocalStats {
        let st = self.state.read();
        let c = &self.counters;
        LocalStats {
            chunks: st.index.len() as u64,
            blob_bytes: st.blob_bytes,
            segments: st.segs.len() as u64,
            segment_bytes: st.seg_bytes,
            dead_bytes: st.segs.values().map(|s| s.size - s.live.min(s.size)).sum(),
            snapshot_bytes: self.snap_bytes.load(Ordering::Relaxed),
            index_memory: st.index.memory_bytes() as u64,
            gets: c.gets.load(Ordering::Relaxed),
            hits: c.hits.load(Ordering::Relaxed),
            puts: c.puts.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            engine: self.engine.name().to_string(),
            budget: self.cfg.budget,
            sync: self.cfg.sync,
        }
    }

    /// Bytes counted against the budget.
    fn disk_bytes(&self) -> u64 {
        self.state.read().seg_bytes + self.snap_bytes.load(Ordering::Relaxed)
    }

    /// Queue a request for the writer.
    fn submit(&self, req: Req) -> Result<()> {
        self.queue.push(req).map_err(|()| {
            Error::new(ErrorKind::Unavailable, format!("{}: store is closing", self.name))
        })
    }

    async fn sync_writer(&self) -> Result<()> {
        let (tx, rx) = futures::channel::oneshot::channel();
        self.submit(Req::Sync { reply: tx })?;
        writer::wait(rx, &self.name).await
    }

    /// Read and check the record of `id` at `loc`.
    async fn read_record(&self, id: &ChunkId, loc: index::Loc, file: Arc<File>) -> Result<Bytes> {
        let len = HEADER_LEN + loc.len as usize;
        let buf = self.engine.read_at(file, u64::from(loc.pos.off), len).await.map_err(|e| {
            Error::io(
                format!(
                    "{}: chunk {id} (segment {}, offset {}): read",
                    self.name, loc.pos.seg, loc.pos.off
                ),
                e,
            )
        })?;
        check_record(&self.name, id, loc.into(), buf)
    }
}

/// Where a chunk's record is, for a reader in another process that has
/// the segment open ([`LocalStore::locate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Located {
    pub seg: u32,
    pub off: u32,
    /// Blob bytes (the record adds [`RECORD_HEADER`] before them).
    pub len: u32,
}

/// Bytes of a record before its blob.
pub const RECORD_HEADER: usize = HEADER_LEN;

/// The blob of `id` from `buf`, the bytes read at `loc`, once the header
/// (CRC, kind, id, length) and the payload CRC check out. Readers in other
/// processes check with this too: the one definition of a sound record.
pub fn check_record(name: &str, id: &ChunkId, at: Located, buf: Vec<u8>) -> Result<Bytes> {
    let ctx = || format!("{name}: chunk {id} (segment {}, offset {})", at.seg, at.off);
    let len = HEADER_LEN + at.len as usize;
    if buf.len() < len {
        return Err(corrupt(format!("{}: record cut short ({} of {len} bytes)", ctx(), buf.len())));
    }
    let h =
        Header::decode(&buf[..HEADER_LEN]).map_err(|why| corrupt(format!("{}: {why}", ctx())))?;
    if h.kind != Kind::Blob || h.id != *id || h.len != at.len {
        return Err(corrupt(format!("{}: the record there is not this chunk", ctx())));
    }
    let blob = Bytes::from(buf).slice(HEADER_LEN..len);
    h.check_payload(&blob).map_err(|why| corrupt(format!("{}: {why}", ctx())))?;
    Ok(blob)
}

impl From<index::Loc> for Located {
    fn from(l: index::Loc) -> Self {
        Located { seg: l.pos.seg, off: l.pos.off, len: l.len }
    }
}

#[async_trait]
impl ChunkStore for LocalStore {
    fn url(&self) -> &str {
        &self.inner.name
    }

    async fn get(&self, id: &ChunkId) -> Result<Option<Bytes>> {
        let inner = &self.inner;
        inner.counters.gets.fetch_add(1, Ordering::Relaxed);
        let found = {
            let st = inner.state.read();
            st.index.get(id).map(|(loc, atime)| {
                atime.store(inner.tick(), Ordering::Relaxed);
                (loc, st.segs.get(&loc.pos.seg).map(|s| s.file.clone()))
            })
        };
        let Some((loc, file)) = found else { return Ok(None) };
        let file = file.ok_or_else(|| {
            corrupt(format!("{}: chunk {id}: its segment {} is missing", inner.name, loc.pos.seg))
        })?;
        let blob = inner.read_record(id, loc, file).await?;
        inner.counters.hits.fetch_add(1, Ordering::Relaxed);
        Ok(Some(blob))
    }

    async fn put(&self, id: &ChunkId, blob: Bytes) -> Result<()> {
        let inner = &self.inner;
        if blob.len() > MAX_BLOB {
            return Err(invalid(format!(
                "{}: blob of {} bytes over 8 MiB",
                inner.name,
                blob.len()
            )));
        }
        inner.check_usable()?;
        inner.counters.puts.fetch_add(1, Ordering::Relaxed);
        if let Some((_, atime)) = inner.state.read().index.get(id) {
            atime.store(inner.tick(), Ordering::Relaxed);
            return Ok(());
        }
        if let Some(budget) = inner.cfg.budget {
            let rec = (HEADER_LEN + blob.len()) as u64;
            if rec > budget / 4 {
                return Err(Error::new(
                    ErrorKind::NoSpace,
                    format!(
                        "{}: blob of {} bytes does not fit a {budget} byte cache",
                        inner.name,
                        blob.len()
                    ),
                ));
            }
            inner.make_room(rec).await?;
        }
        let (tx, rx) = futures::channel::oneshot::channel();
        inner.submit(Req::Put { id: *id, blob, reply: Some(tx) })?;
        writer::wait(rx, &inner.name).await.map(|_| ())
    }

    async fn has(&self, id: &ChunkId) -> Result<bool> {
        Ok(self.inner.state.read().index.get(id).is_some())
    }

    async fn delete(&self, id: &ChunkId) -> Result<bool> {
        let inner = &self.inner;
        inner.check_usable()?;
        let _maint = inner.maint_lock.lock().await;
        let Some(loc) = inner.remove_entry(id, None) else { return Ok(false) };
        let (tx, rx) = futures::channel::oneshot::channel();
        inner.submit(Req::Tomb { id: *id, target: loc.pos, reply: Some(tx) })?;
        writer::wait(rx, &inner.name).await?;
        Ok(true)
    }

    async fn stats(&self) -> Result<StoreStats> {
        Ok(StoreStats::from(&self.inner.local_stats()))
    }

    async fn sync(&self) -> Result<()> {
        self.inner.sync_writer().await
    }

    async fn list_ids(&self) -> Result<Vec<ChunkId>> {
        Ok(self.ids())
    }
}

impl Inner {
    /// Remove `id` from the index (only if at `at`, when given), with its
    /// accounting. The caller writes the tombstone.
    fn remove_entry(&self, id: &ChunkId, at: Option<Pos>) -> Option<index::Loc> {
        let mut st = self.state.write();
        let loc = st.index.remove_if(id, |l| at.is_none_or(|p| p == l.pos))?;
        st.drop_live(loc);
        Some(loc)
    }
}

/// Segment size for a store with this budget.
fn segment_size(opts: &OpenOptions) -> u64 {
    let auto = match opts.cache_budget {
        Some(b) => (b / 16).clamp(MIN_SEGMENT, DEFAULT_SEGMENT),
        None => DEFAULT_SEGMENT,
    };
    opts.segment_size.unwrap_or(auto).clamp(MIN_SEGMENT, MAX_SEGMENT)
}
