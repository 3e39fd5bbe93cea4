//! Opening a store: lock, load the index snapshot (fast path) or start
//! empty (slow path), replay the segment tail, cut a torn tail, drop index
//! entries that point nowhere.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::time::{Duration, Instant};

use futures::executor::block_on;
use parking_lot::{Mutex, RwLock};

use super::index::{Index, Loc};
use super::record::{Kind, Pos, decode_target};
use super::segment::{self, Item, Scanner};
use super::{Config, Counters, Inner, MIN_BUDGET, Seg, State, maint, snapshot};
use crate::backend::OpenOptions;
use crate::engine::{IoEngine, shared_engine};
use crate::error::{Error, Result, invalid};

pub(crate) const SNAPSHOT: &str = "index";
pub(crate) const SNAPSHOT_TMP: &str = "index.tmp";
pub(crate) const QUARANTINE: &str = "quarantine";

/// What opening found and did.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct OpenReport {
    /// The index came from a snapshot (else every segment was replayed).
    pub from_snapshot: bool,
    /// Why an existing snapshot was not used.
    pub snapshot_rejected: Option<String>,
    pub replayed_records: u64,
    pub replayed_bytes: u64,
    /// Bytes of torn tail cut off segments.
    pub truncated_bytes: u64,
    /// Bytes that parse as no record (left for compaction).
    pub damaged_bytes: u64,
    /// Records whose payload failed its CRC, copied aside.
    pub quarantined: Vec<PathBuf>,
    /// Index entries that pointed past a segment's end or at a missing one.
    pub dangling_dropped: u64,
    pub elapsed: Duration,
}

/// Open the store, or `None` when another process (or handle) holds its
/// lock: the caller then uses the owner's socket (`crate::node`).
pub(crate) fn open(path: &Path, opts: &OpenOptions) -> Result<Option<Inner>> {
    let t0 = Instant::now();
    let name = format!("local://{}", path.display());
    if let Some(b) = opts.cache_budget {
        if b < MIN_BUDGET {
            return Err(invalid(format!("{name}: cache budget {b} is below {MIN_BUDGET} bytes")));
        }
    }
    std::fs::create_dir_all(path).map_err(|e| Error::io(format!("{name}: create"), e))?;
    let Some(lock) = lock(path, &name)? else { return Ok(None) };
    let engine = shared_engine(opts.engine)
        .map_err(|e| Error::io(format!("{name}: open I/O engine {:?}", opts.engine), e))?;
    let dir_file =
        Arc::new(File::open(path).map_err(|e| Error::io(format!("{name}: open directory"), e))?);
    let ctx = |what: &str| format!("{name}: {what}");

    let mut nums = segment::list(path).map_err(|e| Error::io(ctx("list segments"), e))?;
    if nums.is_empty() {
        segment::open(path, 1, true).map_err(|e| Error::io(ctx("create segment 1"), e))?;
        block_on(engine.fdatasync(dir_file.clone()))
            .map_err(|e| Error::io(ctx("sync directory"), e))?;
        nums.push(1);
    }
    let mut segs = BTreeMap::new();
    for n in nums {
        let f = segment::open(path, n, false)
            .map_err(|e| Error::io(format!("{name}: open segment {n}"), e))?;
        let size = f.metadata().map_err(|e| Error::io(ctx("stat segment"), e))?.len();
        segs.insert(n, Seg { file: Arc::new(f), size, live: 0 });
    }

    let mut report = OpenReport::default();
    let (snap, snap_bytes) = load_snapshot(&engine, path, &segs, &mut report);
    let (mut index, clock, start) = match snap {
        Some(s) => {
            report.from_snapshot = true;
            (s.index, s.clock, s.replay_from)
        }
        None => (Index::new(), 0, Pos { seg: 0, off: 0 }),
    };
    index.set_bulk(true);
    let clock = AtomicU32::new(clock);
    replay(&engine, path, &name, &mut segs, start, &mut index, &clock, &mut report)?;
    index.set_bulk(false);

    let mut st = State {
        index,
        applied: Pos { seg: 0, off: 0 },
        segs,
        blob_bytes: 0,
        live_bytes: 0,
        seg_bytes: 0,
    };
    account(&mut st, &mut report);
    let active = st.active();
    st.applied = Pos { seg: active, off: st.segs[&active].size as u32 };
    report.elapsed = t0.elapsed();
    let force_snapshot = !report.from_snapshot || report.replayed_records > 0;
    if report.truncated_bytes > 0 || !report.quarantined.is_empty() || report.dangling_dropped > 0 {
        tracing::warn!("{name}: opened with repairs: {report:?}");
    }
    Ok(Some(Inner {
        name,
        dir: path.to_path_buf(),
        engine,
        cfg: Config {
            sync: opts.sync,
            budget: opts.cache_budget,
            seg_size: super::segment_size(opts),
        },
        state: RwLock::new(st),
        queue: Default::default(),
        maint_lock: tokio::sync::Mutex::new(()),
        snap_lock: tokio::sync::Mutex::new(()),
        clock,
        counters: Counters::default(),
        broken: Mutex::new(None),
        dir_file,
        snap_bytes: AtomicU64::new(snap_bytes),
        snap_applied: AtomicU64::new(0),
        snap_appended: AtomicU64::new(0),
        force_snapshot: AtomicBool::new(force_snapshot),
        open_report: Mutex::new(report),
        maint_signal: maint::Signal::default(),
        _lock: lock,
    }))
}

/// flock the store so a second process (or handle) cannot open it; `None`
/// when someone else holds it.
fn lock(path: &Path, name: &str) -> Result<Option<File>> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.join("LOCK"))
        .map_err(|e| Error::io(format!("{name}: open LOCK"), e))?;
    // SAFETY: flock on an fd we own; plain integer arguments.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Ok(None);
        }
        return Err(Error::io(format!("{name}: lock"), e));
    }
    Ok(Some(f))
}

/// The snapshot, if present, sound and consistent with the segments; and
/// the snapshot file's size.
fn load_snapshot(
    engine: &Arc<dyn IoEngine>,
    dir: &Path,
    segs: &BTreeMap<u32, Seg>,
    report: &mut OpenReport,
) -> (Option<snapshot::Snapshot>, u64) {
    let Ok(f) = File::open(dir.join(SNAPSHOT)) else { return (None, 0) };
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let bytes = match block_on(engine.read_at(Arc::new(f), 0, size as usize)) {
        Ok(b) => b,
        Err(e) => {
            report.snapshot_rejected = Some(format!("read: {e}"));
            return (None, size);
        }
    };
    let snap = match snapshot::decode(&bytes) {
        Ok(s) => s,
        Err(why) => {
            report.snapshot_rejected = Some(why);
            return (None, size);
        }
    };
    if let Some(s) = segs.get(&snap.replay_from.seg) {
        if u64::from(snap.replay_from.off) > s.size {
            report.snapshot_rejected = Some(format!(
                "it covers segment {} up to {} but the segment has {} bytes",
                snap.replay_from.seg, snap.replay_from.off, s.size
            ));
            return (None, size);
        }
    }
    (Some(snap), size)
}

/// Apply every record from `start` on (segments after a missing start
/// segment from their beginning). Torn tails are cut; bad payloads are
/// copied aside and not indexed.
#[allow(clippy::too_many_arguments)]
fn replay(
    engine: &Arc<dyn IoEngine>,
    dir: &Path,
    name: &str,
    segs: &mut BTreeMap<u32, Seg>,
    start: Pos,
    index: &mut Index,
    clock: &AtomicU32,
    report: &mut OpenReport,
) -> Result<()> {
    let last = *segs.keys().next_back().expect("at least one segment");
    for (&n, seg) in segs.range_mut(start.seg..) {
        let from = if n == start.seg { u64::from(start.off) } else { 0 };
        let mut sc = Scanner::new(engine.clone(), seg.file.clone(), from, seg.size);
        // Start of the run of unsound items after the last sound record.
        let mut bad_since: Option<u64> = None;
        let mut bad_payloads = Vec::new();
        while let Some(item) =
            block_on(sc.next()).map_err(|e| Error::io(format!("{name}: replay segment {n}"), e))?
        {
            match item {
                Item::Record { pos, header, payload } => {
                    bad_since = None;
                    report.replayed_records += 1;
                    report.replayed_bytes += header.record_len();
                    let at = Pos { seg: n, off: pos as u32 };
                    match header.kind {
                        Kind::Blob => {
                            let loc = Loc { pos: at, len: header.len };
                            let tick = clock.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            index.insert(header.id, loc, tick);
                        }
                        Kind::Tombstone => {
                            let target = decode_target(&payload);
                            index.remove_if(&header.id, |l| l.pos == target);
                        }
                    }
                }
                Item::BadPayload { pos, header, .. } => {
                    bad_since.get_or_insert(pos);
                    bad_payloads.push((pos, header.record_len()));
                }
                Item::Damaged { pos, len, .. } => {
                    bad_since.get_or_insert(pos);
                    report.damaged_bytes += len;
                }
                Item::Torn { pos, .. } => {
                    bad_since.get_or_insert(pos);
                }
            }
        }
        // Unsound bytes with nothing sound after them in the last segment
        // are a torn tail (an interrupted write): cut them.
        let cut = bad_since.filter(|_| n == last);
        for (pos, len) in bad_payloads {
            if cut.is_some_and(|c| pos >= c) {
                continue;
            }
            let bytes = block_on(engine.read_at(seg.file.clone(), pos, len as usize))
                .map_err(|e| Error::io(format!("{name}: read bad record"), e))?;
            let p =
                block_on(write_quarantine(engine, dir, &format!("{n:08}-{pos:010}.bad"), bytes))?;
            report.quarantined.push(p);
        }
        if let Some(c) = cut {
            // Damaged bytes inside the cut were counted; they are gone now.
            report.truncated_bytes += seg.size - c;
            seg.file
                .set_len(c)
                .map_err(|e| Error::io(format!("{name}: truncate segment {n}"), e))?;
            block_on(engine.fdatasync(seg.file.clone()))
                .map_err(|e| Error::io(format!("{name}: sync segment {n}"), e))?;
            seg.size = c;
        }
    }
    Ok(())
}

/// Drop entries that point at missing segments or past a segment's end,
/// and compute live/dead accounting.
fn account(st: &mut State, report: &mut OpenReport) {
    let State { index, segs, .. } = st;
    let sizes: BTreeMap<u32, u64> = segs.iter().map(|(n, s)| (*n, s.size)).collect();
    report.dangling_dropped += index.retain(|_, loc| {
        sizes
            .get(&loc.pos.seg)
            .is_some_and(|&size| u64::from(loc.pos.off) + loc.record_len() <= size)
    }) as u64;
    let mut live: BTreeMap<u32, u64> = BTreeMap::new();
    let (mut blob_bytes, mut live_bytes) = (0u64, 0u64);
    index.for_each(|_, loc, _| {
        *live.entry(loc.pos.seg).or_default() += loc.record_len();
        blob_bytes += u64::from(loc.len);
        live_bytes += loc.record_len();
    });
    for (n, s) in segs.iter_mut() {
        s.live = live.get(n).copied().unwrap_or(0);
    }
    st.blob_bytes = blob_bytes;
    st.live_bytes = live_bytes;
    st.seg_bytes = st.segs.values().map(|s| s.size).sum();
}

/// Copy bytes into `quarantine/NAME` (through the engine).
pub(crate) async fn write_quarantine(
    engine: &Arc<dyn IoEngine>,
    dir: &Path,
    file_name: &str,
    bytes: Vec<u8>,
) -> Result<PathBuf> {
    let qdir = dir.join(QUARANTINE);
    std::fs::create_dir_all(&qdir)
        .map_err(|e| Error::io(format!("create {}", qdir.display()), e))?;
    let path = qdir.join(file_name);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    let f = Arc::new(f);
    engine
        .write_at(f.clone(), 0, bytes.into())
        .await
        .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    engine.fdatasync(f).await.map_err(|e| Error::io(format!("sync {}", path.display()), e))?;
    Ok(path)
}
