//! Maintenance: index snapshots, LRU eviction under a byte budget, segment
//! compaction (gc), and the background thread that schedules them.
//!
//! Compaction copies the live blob records of a sealed segment to the end
//! of the log through the writer (as ordinary blob records, so replay
//! rebuilds the same index), keeps tombstones whose target segment still
//! exists, waits until the copies are durable, then deletes the segment
//! file. Eviction removes the least recently used entries (by the store
//! clock recorded at each put and get) and writes tombstones for them; the
//! space comes back when their segments are compacted.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::executor::block_on;
use parking_lot::{Condvar, Mutex};

use super::open::{SNAPSHOT, SNAPSHOT_TMP, write_quarantine};
use super::record::{HEADER_LEN, Kind, Pos, decode_target};
use super::segment::{self, Item, Scanner};
use super::writer::{Req, wait};
use super::{Inner, snapshot};
use crate::chunk::ChunkId;
use crate::error::{Error, ErrorKind, Result};

/// What a gc pass did.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct GcReport {
    pub segments_compacted: u64,
    pub records_copied: u64,
    pub bytes_copied: u64,
    pub disk_bytes_before: u64,
    pub disk_bytes_after: u64,
    /// Live records found unreadable and quarantined on the way.
    pub quarantined: u64,
}

/// Wakes the maintenance thread for close.
#[derive(Default)]
pub(crate) struct Signal {
    closing: Mutex<bool>,
    cv: Condvar,
}

impl Signal {
    pub fn close(&self) {
        *self.closing.lock() = true;
        self.cv.notify_all();
    }

    /// Wait up to `t`; true when closing.
    fn wait(&self, t: Duration) -> bool {
        let mut c = self.closing.lock();
        if !*c {
            self.cv.wait_for(&mut c, t);
        }
        *c
    }
}

/// Snapshot when this many records were applied since the last one (and at
/// least a quarter of the index), or this many bytes appended: bounds the
/// replay work of an open after a crash.
const SNAPSHOT_RECORDS: u64 = 1 << 16;
const SNAPSHOT_BYTES: u64 = 1 << 30;
/// Background gc when dead bytes in sealed segments pass both thresholds.
const AUTO_GC_MIN_DEAD: u64 = 256 << 20;
/// Rebase the LRU clock before it wraps.
const CLOCK_REBASE_AT: u32 = 0xC000_0000;
const CLOCK_REBASE_BY: u32 = 0x8000_0000;

pub(crate) fn run(inner: Arc<Inner>) {
    let mut last_gc_try = Instant::now();
    loop {
        let closing = inner.maint_signal.wait(Duration::from_secs(1));
        if closing {
            if inner.snapshot_dirty() {
                if let Err(e) = block_on(inner.write_snapshot()) {
                    tracing::warn!("{}: close snapshot: {}", inner.name, e.chain());
                }
            }
            return;
        }
        if inner.snapshot_due() {
            if let Err(e) = block_on(inner.write_snapshot()) {
                tracing::warn!("{}: snapshot: {}", inner.name, e.chain());
            }
        }
        if inner.clock.load(Ordering::Relaxed) > CLOCK_REBASE_AT {
            let st = inner.state.write();
            st.index.age_all(CLOCK_REBASE_BY);
            inner.clock.fetch_sub(CLOCK_REBASE_BY, Ordering::Relaxed);
        }
        if inner.cfg.budget.is_some() {
            if let Err(e) = block_on(inner.make_room(0)) {
                tracing::warn!("{}: eviction: {}", inner.name, e.chain());
            }
        } else if inner.sealed_dead_bytes() >= AUTO_GC_MIN_DEAD.max(inner.disk_bytes() / 4)
            && last_gc_try.elapsed() > Duration::from_secs(10)
        {
            last_gc_try = Instant::now();
            if let Err(e) = block_on(inner.compact_worst(inner.disk_bytes() * 3 / 4)) {
                tracing::warn!("{}: background gc: {}", inner.name, e.chain());
            }
        }
    }
}

impl Inner {
    fn snapshot_dirty(&self) -> bool {
        self.force_snapshot.load(Ordering::Relaxed)
            || self.counters.applied.load(Ordering::Relaxed)
                != self.snap_applied.load(Ordering::Relaxed)
    }

    fn snapshot_due(&self) -> bool {
        if self.force_snapshot.load(Ordering::Relaxed) {
            return true;
        }
        let recs = self.counters.applied.load(Ordering::Relaxed)
            - self.snap_applied.load(Ordering::Relaxed);
        let bytes = self.counters.appended.load(Ordering::Relaxed)
            - self.snap_appended.load(Ordering::Relaxed);
        let n = self.state.read().index.len() as u64;
        recs >= SNAPSHOT_RECORDS.max(n / 4) || bytes >= SNAPSHOT_BYTES
    }

    /// Write the index snapshot: records up to the writer's applied
    /// position are synced first, so the snapshot never names data a crash
    /// could take back.
    pub(crate) async fn write_snapshot(&self) -> Result<()> {
        let _g = self.snap_lock.lock().await;
        let ctx = |what: &str| format!("{}: snapshot: {what}", self.name);
        self.force_snapshot.store(false, Ordering::Relaxed);
        let (buf, applied, appended) = {
            let st = self.state.read();
            let applied = self.counters.applied.load(Ordering::Relaxed);
            let appended = self.counters.appended.load(Ordering::Relaxed);
            let clock = self.clock.load(Ordering::Relaxed);
            (snapshot::encode(&st.index, st.applied, clock), applied, appended)
        };
        let res = async {
            self.sync_writer().await?;
            let tmp = self.dir.join(SNAPSHOT_TMP);
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&tmp)
                .map_err(|e| Error::io(ctx("create"), e))?;
            let f = Arc::new(f);
            let len = buf.len() as u64;
            let write = self.engine.write_at(f.clone(), 0, buf.into()).await;
            if let Err(e) = write.and(self.engine.fdatasync(f).await) {
                let _ = std::fs::remove_file(&tmp);
                return Err(Error::io(ctx("write"), e));
            }
            std::fs::rename(&tmp, self.dir.join(SNAPSHOT))
                .map_err(|e| Error::io(ctx("rename"), e))?;
            self.engine
                .fdatasync(self.dir_file.clone())
                .await
                .map_err(|e| Error::io(ctx("sync directory"), e))?;
            Ok(len)
        }
        .await;
        match res {
            Ok(len) => {
                self.snap_bytes.store(len, Ordering::Relaxed);
                self.snap_applied.store(applied, Ordering::Relaxed);
                self.snap_appended.store(appended, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.force_snapshot.store(true, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    fn sealed_dead_bytes(&self) -> u64 {
        let st = self.state.read();
        let active = st.active();
        st.segs.range(..active).map(|(_, s)| s.size - s.live.min(s.size)).sum()
    }

    /// Under a budget: before writing `incoming` more bytes, evict and
    /// compact so the store stays within it.
    pub(crate) async fn make_room(&self, incoming: u64) -> Result<()> {
        let Some(budget) = self.cfg.budget else { return Ok(()) };
        if self.disk_bytes() + incoming <= budget {
            return Ok(());
        }
        let _maint = self.maint_lock.lock().await;
        if self.disk_bytes() + incoming <= budget {
            return Ok(());
        }
        // Evict to a low-water mark so this does not run on every put, then
        // compact until the dead bytes are given back.
        self.evict_lru((budget * 5 / 8).saturating_sub(incoming)).await?;
        self.compact_worst((budget * 3 / 4).saturating_sub(incoming)).await?;
        if self.disk_bytes() + incoming > budget {
            tracing::warn!(
                "{}: still {} bytes on disk after eviction (budget {budget})",
                self.name,
                self.disk_bytes()
            );
        }
        Ok(())
    }

    /// Evict least recently used entries until live record bytes are at
    /// most `want_live`. Caller holds `maint_lock`. Returns how many went.
    async fn evict_lru(&self, want_live: u64) -> Result<u64> {
        let (mut order, excess) = {
            let st = self.state.read();
            if st.live_bytes <= want_live {
                return Ok(0);
            }
            let mut v: Vec<(u32, u32)> = Vec::with_capacity(st.index.len());
            st.index.for_each(|_, loc, atime| v.push((atime, loc.record_len() as u32)));
            (v, st.live_bytes - want_live)
        };
        order.sort_unstable();
        // The access time up to which entries go, and how many at exactly it.
        let (mut freed, mut cut, mut at_cut) = (0u64, 0u32, 0usize);
        for &(atime, len) in &order {
            if freed >= excess {
                break;
            }
            if atime != cut {
                cut = atime;
                at_cut = 0;
            }
            at_cut += 1;
            freed += u64::from(len);
        }
        drop(order);
        let victims = {
            let mut st = self.state.write();
            let mut v: Vec<(ChunkId, Pos)> = Vec::new();
            st.index.for_each(|id, loc, atime| {
                if atime < cut || (atime == cut && at_cut > 0) {
                    if atime == cut {
                        at_cut -= 1;
                    }
                    v.push((*id, loc.pos));
                }
            });
            for (id, pos) in &v {
                if let Some(loc) = st.index.remove_if(id, |l| l.pos == *pos) {
                    st.drop_live(loc);
                }
            }
            v
        };
        let n = victims.len() as u64;
        for (id, target) in victims {
            self.submit(Req::Tomb { id, target, reply: None })?;
        }
        self.counters.evictions.fetch_add(n, Ordering::Relaxed);
        Ok(n)
    }

    /// Compact sealed segments, most dead bytes first, until the store's
    /// disk bytes are at most `target` or nothing is left to gain.
    /// Caller holds `maint_lock`.
    pub(crate) async fn compact_worst(&self, target: u64) -> Result<GcReport> {
        let mut report = GcReport { disk_bytes_before: self.disk_bytes(), ..Default::default() };
        let mut sealed_once = false;
        while self.disk_bytes() > target {
            let pick = {
                let st = self.state.read();
                let active = st.active();
                st.segs
                    .range(..active)
                    .map(|(n, s)| (s.size - s.live.min(s.size), *n))
                    .filter(|(dead, _)| *dead > 0)
                    .max()
            };
            match pick {
                Some((_, n)) => self.compact_segment(n, &mut report).await?,
                None if !sealed_once && self.active_dead_bytes() > 0 => {
                    sealed_once = true;
                    self.seal().await?;
                }
                None => break,
            }
        }
        report.disk_bytes_after = self.disk_bytes();
        Ok(report)
    }

    fn active_dead_bytes(&self) -> u64 {
        let st = self.state.read();
        let s = &st.segs[&st.active()];
        s.size - s.live.min(s.size)
    }

    async fn seal(&self) -> Result<()> {
        let (tx, rx) = futures::channel::oneshot::channel();
        self.submit(Req::Seal { reply: tx })?;
        wait(rx, &self.name).await
    }

    /// Compact every sealed segment with dead bytes (sealing the active one
    /// first if it has some), then snapshot.
    pub(crate) async fn gc(&self) -> Result<GcReport> {
        let _maint = self.maint_lock.lock().await;
        let before = self.disk_bytes();
        if self.active_dead_bytes() > 0 {
            self.seal().await?;
        }
        let mut report = self.compact_worst(0).await?;
        report.disk_bytes_before = before;
        self.write_snapshot().await?;
        report.disk_bytes_after = self.disk_bytes();
        Ok(report)
    }

    /// Copy the live records of sealed segment `n` forward and delete it.
    async fn compact_segment(&self, n: u32, report: &mut GcReport) -> Result<()> {
        let ctx = |what: &str| format!("{}: compact segment {n}: {what}", self.name);
        let (file, size) = {
            let st = self.state.read();
            if n >= st.active() {
                return Err(Error::new(ErrorKind::InvalidInput, ctx("segment is active")));
            }
            let s = st.segs.get(&n).ok_or_else(|| Error::new(ErrorKind::NotFound, ctx("gone")))?;
            (s.file.clone(), s.size)
        };
        let mut sc = Scanner::new(self.engine.clone(), file.clone(), 0, size);
        let mut waits = Vec::new();
        let mut pending = 0u64;
        let mut bad = Vec::new();
        while let Some(item) = sc.next().await.map_err(|e| Error::io(ctx("read"), e))? {
            let (pos, header) = match &item {
                Item::Record { pos, header, .. } | Item::BadPayload { pos, header, .. } => {
                    (Pos { seg: n, off: *pos as u32 }, *header)
                }
                Item::Damaged { .. } | Item::Torn { .. } => continue,
            };
            let live = self.state.read().index.get(&header.id).is_some_and(|(l, _)| l.pos == pos);
            match item {
                Item::Record { payload, .. } if header.kind == Kind::Blob && live => {
                    let (tx, rx) = futures::channel::oneshot::channel();
                    pending += payload.len() as u64;
                    report.records_copied += 1;
                    report.bytes_copied += header.record_len();
                    self.submit(Req::Put { id: header.id, blob: payload, reply: Some(tx) })?;
                    waits.push(rx);
                    if pending >= 32 << 20 {
                        for rx in waits.drain(..) {
                            wait(rx, &self.name).await?;
                        }
                        pending = 0;
                    }
                }
                Item::Record { payload, .. } if header.kind == Kind::Tombstone => {
                    let target = decode_target(&payload);
                    let keep = target.seg != n && self.state.read().segs.contains_key(&target.seg);
                    if keep {
                        self.submit(Req::Tomb { id: header.id, target, reply: None })?;
                    }
                }
                Item::BadPayload { .. } if live => bad.push((header.id, pos)),
                _ => {}
            }
        }
        for rx in waits {
            wait(rx, &self.name).await?;
        }
        self.sync_writer().await?;
        // Whatever still points into the segment could not be read back.
        {
            let st = self.state.read();
            if st.segs.get(&n).is_some_and(|s| s.live > 0) {
                st.index.for_each(|id, loc, _| {
                    if loc.pos.seg == n && !bad.iter().any(|(_, p)| *p == loc.pos) {
                        bad.push((*id, loc.pos));
                    }
                });
            }
        }
        for (id, pos) in bad {
            self.quarantine(&id, pos, &format!("unreadable during compaction of segment {n}"))
                .await?;
            report.quarantined += 1;
        }
        {
            let mut st = self.state.write();
            if let Some(s) = st.segs.remove(&n) {
                st.seg_bytes -= s.size.min(st.seg_bytes);
            }
        }
        std::fs::remove_file(segment::seg_path(&self.dir, n))
            .map_err(|e| Error::io(ctx("delete"), e))?;
        report.segments_compacted += 1;
        Ok(())
    }

    /// Move the record of `id` at `pos` aside: copy its bytes into
    /// `quarantine/`, drop it from the index, write its tombstone.
    /// Caller holds `maint_lock`.
    pub(crate) async fn quarantine(&self, id: &ChunkId, pos: Pos, why: &str) -> Result<()> {
        let found = {
            let st = self.state.read();
            let loc = st.index.get(id).map(|(l, _)| l).filter(|l| l.pos == pos);
            loc.zip(st.segs.get(&pos.seg).map(|s| (s.file.clone(), s.size)))
        };
        if let Some((loc, (file, size))) = found {
            let start = u64::from(pos.off);
            let len = (HEADER_LEN as u64 + u64::from(loc.len)).min(size.saturating_sub(start));
            let bytes =
                self.engine.read_at(file, start, len as usize).await.map_err(|e| {
                    Error::io(format!("{}: read record to quarantine", self.name), e)
                })?;
            let name = format!("{:08}-{:010}-{id}.bad", pos.seg, pos.off);
            let path = write_quarantine(&self.engine, &self.dir, &name, bytes).await?;
            tracing::warn!("{}: chunk {id} quarantined to {} ({why})", self.name, path.display());
        }
        if self.remove_entry(id, Some(pos)).is_some() {
            let (tx, rx) = futures::channel::oneshot::channel();
            self.submit(Req::Tomb { id: *id, target: pos, reply: Some(tx) })?;
            wait(rx, &self.name).await?;
        }
        Ok(())
    }
}
