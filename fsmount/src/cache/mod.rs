//! The node cache of file contents: one [`LazyFile`] per distinct content
//! (named by the hash of its chunk list, so two flists, two mounts or two
//! hardlinked names sharing a content share its local copy), under
//! `CACHE/contents/<hex>` (+ `.state`), with a byte budget.
//!
//! Invariants:
//! * one process owns the cache directory (the fsmount server of that
//!   cache), and this map holds at most one LazyFile per content;
//! * a content with an open handle (or a running prefetch) is never
//!   evicted; the others go least recently used first when the contents
//!   take more than the budget (their allocated bytes, measured when the
//!   last handle closes and at startup);
//! * eviction unlinks the files at once and forgets the LazyFile: fills
//!   still in flight finish into the unlinked inode, and the next open of
//!   that content starts a new file.
//!
//! The cache owns the tokio runtime every LazyFile and store client of
//! the server runs on; FUSE workers wait on it through blocking handles.

pub mod content;
pub mod source;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use zosfs_flist::DataChunk;
use zosfs_flist::content::Store;
use zosfs_store::lazy::{LazyFile, LazyOptions};

pub use content::{EmptyContent, LazyContent};
use source::FlistSource;
use zosfs_flist::source::{FileChunks, content_id};

use crate::error::{Error, ErrorKind, Result, flist_err};
use crate::records::{private_dir, private_root};
use crate::stats::Counters;

/// Contents `CACHE/contents/<hex>` and unpacked flists `CACHE/flists`.
const CONTENTS: &str = "contents";

/// Chunk fetches in flight per content (and connections per remote store,
/// since a 0-db connection carries one request at a time). A cold
/// sequential read is bound by depth × chunk size / round trip.
pub const FETCH_DEPTH: usize = 32;
/// Chunks fetched ahead of a sequential reader.
const READAHEAD: u32 = 16;
const FLISTS: &str = "flists";
/// Contents kept open while no one uses them (each holds two files and a
/// task); older idle ones are closed, and opened again when needed.
const MAX_IDLE_LOADED: usize = 256;

struct Entry {
    /// None: files found on disk at startup, not opened yet.
    loaded: Option<(LazyFile, Arc<FlistSource>)>,
    /// Open handles and running prefetches.
    users: usize,
    last_used: u64,
    /// Allocated bytes of data + state file when last measured.
    bytes: u64,
    /// Bytes of the content (0: not known yet).
    size: u64,
    /// The close of the LazyFile last unloaded: a new open waits for it
    /// (the files are flock'ed until it ends).
    closing: Option<tokio::sync::watch::Receiver<bool>>,
}

struct State {
    entries: HashMap<[u8; 32], Entry>,
    /// Loaded contents nobody uses, by `last_used`.
    idle: BTreeMap<u64, [u8; 32]>,
    tick: u64,
}

pub struct ContentCache {
    dir: PathBuf,
    budget: Option<u64>,
    /// How long a fetch waits out an unreachable store (LazyOptions).
    outage_wait: std::time::Duration,
    rt: tokio::runtime::Runtime,
    /// Shared with eviction runs spawned on `rt` (which must not hold the
    /// cache itself: its last drop would drop the runtime inside a task).
    state: Arc<Mutex<State>>,
}

fn allocated(p: &Path) -> u64 {
    std::fs::symlink_metadata(p).map(|m| m.blocks() * 512).unwrap_or(0)
}

fn measure(dir: &Path, id: &[u8; 32]) -> u64 {
    let p = data_path(dir, id);
    allocated(&p) + allocated(&LazyFile::state_path(&p))
}

/// Drop unused contents, least recently used first, until the measured
/// total fits the budget. Idle contents not measured full are measured
/// again (fills land on disk shortly after readers got their data).
fn evict(dir: &Path, budget: Option<u64>, state: &Mutex<State>) {
    let Some(budget) = budget else { return };
    let mut victims = Vec::new();
    {
        let mut st = state.lock();
        let stale: Vec<[u8; 32]> = st
            .entries
            .iter()
            .filter(|(_, e)| e.users == 0 && e.bytes < e.size)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            let bytes = measure(dir, &id);
            if let Some(e) = st.entries.get_mut(&id) {
                e.bytes = bytes;
            }
        }
        let mut total: u64 = st.entries.values().map(|e| e.bytes).sum();
        if total <= budget {
            return;
        }
        let mut idle: Vec<([u8; 32], u64, u64)> = st
            .entries
            .iter()
            .filter(|(_, e)| e.users == 0)
            .map(|(id, e)| (*id, e.last_used, e.bytes))
            .collect();
        idle.sort_by_key(|v| v.1);
        for (id, last_used, bytes) in idle {
            if total <= budget {
                break;
            }
            total -= bytes;
            st.idle.remove(&last_used);
            st.entries.remove(&id);
            victims.push(id);
        }
        // Unlink under the lock: a new open of the same content must
        // find no file, or its own.
        for id in &victims {
            let p = data_path(dir, id);
            let _ = std::fs::remove_file(LazyFile::state_path(&p));
            let _ = std::fs::remove_file(&p);
        }
    }
    if !victims.is_empty() {
        tracing::info!("cache over budget: evicted {} contents", victims.len());
    }
}

fn data_path(dir: &Path, id: &[u8; 32]) -> PathBuf {
    dir.join(CONTENTS).join(hex::encode(id))
}

/// As many open files as the system allows: every loaded content holds two.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid resource id and out-pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

impl ContentCache {
    /// Open the cache in `dir` (created when missing); contents already
    /// there are kept and count against `budget`.
    pub fn open(dir: &Path, budget: Option<u64>) -> Result<ContentCache> {
        // 0700: the contents are the files of the images, whatever their
        // own modes say (an image's /etc/shadow is cached here too).
        private_root(dir, CONTENTS)?;
        let contents = dir.join(CONTENTS);
        private_dir(&contents)?;
        raise_nofile_limit();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fsmount-io")
            .enable_all()
            .build()
            .map_err(|e| Error::io("start the I/O runtime", e))?;
        let mut found: Vec<([u8; 32], u64, i64)> = Vec::new();
        let rd = std::fs::read_dir(&contents)
            .map_err(|e| Error::io(format!("list {}", contents.display()), e))?;
        for ent in rd.flatten() {
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            let mut id = [0u8; 32];
            if name.len() != 64 || hex::decode_to_slice(name, &mut id).is_err() {
                continue;
            }
            let p = ent.path();
            let md = match std::fs::symlink_metadata(&p) {
                Ok(m) => m,
                Err(_) => continue,
            };
            let bytes = md.blocks() * 512 + allocated(&LazyFile::state_path(&p));
            found.push((id, bytes, md.mtime()));
        }
        // Older files first: they are the first to go.
        found.sort_by_key(|f| f.2);
        let mut entries = HashMap::new();
        for (tick, (id, bytes, _)) in found.into_iter().enumerate() {
            entries.insert(
                id,
                Entry {
                    loaded: None,
                    users: 0,
                    last_used: tick as u64,
                    bytes,
                    size: 0,
                    closing: None,
                },
            );
        }
        let tick = entries.len() as u64;
        let cache = ContentCache {
            dir: dir.to_path_buf(),
            budget,
            outage_wait: std::time::Duration::ZERO,
            rt,
            state: Arc::new(Mutex::new(State { entries, idle: BTreeMap::new(), tick })),
        };
        cache.evict();
        Ok(cache)
    }

    /// How long reads wait out an unreachable store before EIO (applies
    /// to contents opened later).
    pub fn set_outage_wait(&mut self, wait: std::time::Duration) {
        self.outage_wait = wait;
    }

    pub fn runtime(&self) -> &tokio::runtime::Handle {
        self.rt.handle()
    }

    /// Where flist files are unpacked.
    /// The byte budget (`--cache-size`), if any.
    pub fn budget(&self) -> Option<u64> {
        self.budget
    }

    pub fn flists_dir(&self) -> PathBuf {
        self.dir.join(FLISTS)
    }

    fn data_path(&self, id: &[u8; 32]) -> PathBuf {
        data_path(&self.dir, id)
    }

    /// The LazyFile of a content, opened (and counted as used) for a reader
    /// whose fetches count for `counters`. Call [`ContentCache::release`]
    /// once per successful call (the handles returned do it on drop).
    fn acquire(
        &self,
        store: &Store,
        chunks: Vec<DataChunk>,
        counters: &Arc<Counters>,
    ) -> Result<([u8; 32], LazyFile, Arc<FlistSource>)> {
        let id = content_id(&chunks);
        let mut st = loop {
            let mut st = self.state.lock();
            st.tick += 1;
            let tick = st.tick;
            let st_ref = &mut *st;
            let Some(e) = st_ref.entries.get_mut(&id) else { break st };
            if let Some((lf, src)) = &e.loaded {
                if e.users == 0 {
                    st_ref.idle.remove(&e.last_used);
                }
                e.users += 1;
                e.last_used = tick;
                src.attribution.set(counters);
                return Ok((id, lf.clone(), src.clone()));
            }
            match e.closing.clone() {
                // Unloaded a moment ago: its files are free once the close
                // ends. Wait without the lock (the close may need a release).
                Some(mut rx) if !*rx.borrow() => {
                    drop(st);
                    let _ = self.rt.block_on(rx.wait_for(|done| *done));
                }
                _ => {
                    e.closing = None;
                    break st;
                }
            }
        };
        let tick = st.tick;
        // Open under the lock: a second opener of the same content must not
        // race us to the file (LazyFile files are flock'ed). Opening reads
        // one small state file.
        let chunks = FileChunks::content(chunks).map_err(flist_err)?;
        let source = Arc::new(FlistSource::new(store.clone(), chunks));
        source.attribution.set(counters);
        let layout = source.layout();
        let path = self.data_path(&id);
        let opts = LazyOptions {
            readahead: READAHEAD,
            fetch_depth: FETCH_DEPTH,
            outage_wait: self.outage_wait,
            ..LazyOptions::default()
        };
        let src: Arc<dyn zosfs_store::lazy::ChunkSource> = source.clone();
        let lf = self
            .rt
            .block_on(LazyFile::open(&path, layout, src, opts))
            .map_err(|e| Error::from(e).context_prefix("open cached content"))?;
        let e = st.entries.entry(id).or_insert(Entry {
            loaded: None,
            users: 0,
            last_used: tick,
            bytes: 0,
            size: lf.size(),
            closing: None,
        });
        e.size = lf.size();
        e.loaded = Some((lf.clone(), source.clone()));
        e.users += 1;
        e.last_used = tick;
        Ok((id, lf, source))
    }

    /// One user of `id` is done: close the longest idle contents beyond
    /// [`MAX_IDLE_LOADED`], and make room if the cache is over budget.
    ///
    /// When the last user goes, eviction runs now and once more after the
    /// content's fills in flight have landed: readers get a chunk before
    /// it is written, so the size measured now can be short, and without
    /// the second run a cache left over budget by late writes would stay
    /// so until some other file is released.
    fn release(self: &Arc<Self>, id: &[u8; 32]) {
        let (idle, settling) = {
            let mut st = self.state.lock();
            let st = &mut *st;
            let (idle, settling) = match st.entries.get_mut(id) {
                Some(e) => {
                    e.users = e.users.saturating_sub(1);
                    if e.users == 0 && e.loaded.is_some() {
                        st.idle.insert(e.last_used, *id);
                    }
                    let settling = match &e.loaded {
                        Some((lf, _)) if e.users == 0 && self.budget.is_some() => Some(lf.clone()),
                        _ => None,
                    };
                    (e.users == 0, settling)
                }
                None => (false, None),
            };
            while st.idle.len() > MAX_IDLE_LOADED {
                let Some((_, old)) = st.idle.pop_first() else { break };
                if let Some(e) = st.entries.get_mut(&old) {
                    if let Some((lf, _)) = e.loaded.take() {
                        let (tx, rx) = tokio::sync::watch::channel(false);
                        e.closing = Some(rx);
                        self.rt.spawn(async move {
                            if let Err(e) = lf.close().await {
                                tracing::warn!("close cached content: {}", e.chain());
                            }
                            let _ = tx.send(true);
                        });
                    }
                }
            }
            (idle, settling)
        };
        if idle {
            self.evict();
        }
        if let Some(lf) = settling {
            let (dir, budget, state) = (self.dir.clone(), self.budget, self.state.clone());
            self.rt.spawn(async move {
                lf.settled().await;
                drop(lf);
                // Unlinks and stats: off the async workers.
                let _ = tokio::task::spawn_blocking(move || evict(&dir, budget, &state)).await;
            });
        }
    }

    /// Drop unused contents until the cache fits its budget.
    fn evict(&self) {
        evict(&self.dir, self.budget, &self.state);
    }

    /// Open a regular file's content for reading in a mount.
    pub fn open_content(
        self: &Arc<Self>,
        store: &Store,
        chunks: Vec<DataChunk>,
        counters: &Arc<Counters>,
    ) -> Result<Arc<dyn crate::tree::Content>> {
        if chunks.is_empty() {
            return Ok(Arc::new(EmptyContent));
        }
        let (id, lf, source) = self.acquire(store, chunks, counters)?;
        Ok(Arc::new(LazyContent::new(self.clone(), id, lf, source, counters.clone())))
    }

    /// Fill a content entirely (prefetch), at most `bandwidth` bytes per
    /// second; it is not evicted meanwhile.
    pub fn fill(
        self: &Arc<Self>,
        store: &Store,
        chunks: Vec<DataChunk>,
        counters: &Arc<Counters>,
        bandwidth: Option<u64>,
    ) -> Result<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        let (id, lf, _source) = self.acquire(store, chunks, counters)?;
        let res = if lf.is_fully_present() {
            Ok(None)
        } else {
            lf.blocking().fill_all(bandwidth).map(Some)
        };
        self.release(&id);
        match res {
            Ok(Some(r)) if r.failed > 0 => Err(Error::new(
                ErrorKind::Fetch,
                format!(
                    "{} chunks not fetched: {}",
                    r.failed,
                    r.first_error.unwrap_or_else(|| "unknown error".into())
                ),
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Contents known and their measured bytes (for tests and logs).
    pub fn usage(&self) -> (usize, u64) {
        let st = self.state.lock();
        (st.entries.len(), st.entries.values().map(|e| e.bytes).sum())
    }
}
