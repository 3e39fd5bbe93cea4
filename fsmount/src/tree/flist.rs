//! An flist as a tree: metadata from the flist reader (point lookups and
//! prefix scans of one directory, never a scan of the whole database),
//! file contents from the node cache ([`ContentCache`]), fetched through
//! the mount's stores.
//!
//! Inode numbers are the flist's own (the root is 1), so they are the same
//! on every mount of the same flist, and every name of a hardlinked file
//! has one inode.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zosfs_flist::content::Store;
use zosfs_flist::legacy::open_any;
use zosfs_flist::stores::{RoutePolicy, StoreOpener};
use zosfs_flist::{Inode, OpenOptions, Tree as FlistReader};

use super::{Attr, Content, DirEntry, Ino, Kind, Tree, TreeStats};
use crate::cache::ContentCache;
use crate::error::{Error, ErrorKind, Result, flist_err};
use crate::stats::Counters;

pub struct FlistTree {
    reader: Box<dyn FlistReader>,
    store: Store,
    cache: Arc<ContentCache>,
    counters: Arc<Counters>,
}

fn time(ns: i64) -> SystemTime {
    let d = Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 { UNIX_EPOCH + d } else { UNIX_EPOCH - d }
}

fn kind_of(k: zosfs_flist::Kind) -> Kind {
    use zosfs_flist::Kind as F;
    match k {
        F::File => Kind::File,
        F::Dir => Kind::Dir,
        F::Symlink => Kind::Symlink,
        F::CharDev => Kind::CharDev,
        F::BlockDev => Kind::BlockDev,
        F::Fifo => Kind::Fifo,
        F::Socket => Kind::Socket,
    }
}

fn attr_of(i: &Inode) -> Attr {
    let t = time(i.mtime_ns);
    Attr {
        ino: i.ino,
        kind: kind_of(i.kind),
        perm: (i.perm & 0o7777) as u16,
        nlink: i.nlink,
        uid: i.uid,
        gid: i.gid,
        size: i.size,
        blocks: if i.kind == zosfs_flist::Kind::File { i.size.div_ceil(512) } else { 0 },
        atime: t,
        mtime: t,
        ctime: t,
        rdev: i.rdev,
    }
}

impl FlistTree {
    /// Open the flist file at `path` (unpacked once into the cache) with
    /// its chunks read from `stores`, or from the routes it records.
    pub fn open(
        path: &Path,
        stores: &[String],
        routes: RoutePolicy,
        cache: Arc<ContentCache>,
        counters: Arc<Counters>,
    ) -> Result<FlistTree> {
        let opts = OpenOptions { cache_dir: cache.flists_dir() };
        // The flist crate's errors name `path`.
        let reader = open_any(path, &opts).map_err(flist_err)?;
        let mut cfg = zosfs_store::RouterConfig::default();
        cfg.open.pool_size = crate::cache::FETCH_DEPTH;
        let opener = StoreOpener::new(stores.to_vec(), cfg).route_policy(routes);
        let (_, store) = cache
            .runtime()
            .block_on(opener.open_for(reader.header()))
            .map_err(|e| flist_err(e).context_prefix(format!("stores of {}", path.display())))?;
        Ok(FlistTree { reader, store, cache, counters })
    }

    /// A warning for the terminal when the stores do not answer now:
    /// the mount works, but reads of data not cached here will wait for
    /// them (up to `--outage-wait`) and then fail. One `has` of an id no
    /// store holds, bounded by [`PROBE_TIMEOUT`].
    pub fn probe_stores(&self) -> Option<String> {
        let probe = zosfs_store::ChunkId([0u8; 32]);
        let asked = self
            .cache
            .runtime()
            .block_on(async { tokio::time::timeout(PROBE_TIMEOUT, self.store.has(&probe)).await });
        let why = match asked {
            Ok(Ok(_)) => return None,
            Ok(Err(e)) => e.chain(),
            Err(_) => format!("no answer within {PROBE_TIMEOUT:?}"),
        };
        Some(format!(
            "warning: store {} not usable now ({why}); reads of data not cached here will wait \
             for it (--outage-wait) and then fail",
            self.store.url()
        ))
    }

    fn inode(&self, ino: Ino) -> Result<Inode> {
        self.reader.getattr(ino).map_err(flist_err)
    }

    /// Fill every file of the flist in the background, `bandwidth` bytes
    /// per second at most over all of them. Stops when the tree is dropped
    /// (the mount went away).
    pub fn start_prefetch(self: &Arc<Self>, bandwidth: Option<u64>) -> Result<()> {
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("fsmount-prefetch".into())
            .spawn(move || prefetch_all(weak, bandwidth))
            .map_err(|e| Error::io("spawn prefetch thread", e))?;
        Ok(())
    }
}

/// How long the mount-time store probe waits for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Files filled at once by `--prefetch all` (small files are mostly round
/// trips: one at a time would leave the bandwidth unused).
const PREFETCH_WORKERS: usize = 8;

/// Start times of fills under one bandwidth cap: each file reserves the
/// time its bytes take at the cap, after the previous reservation.
struct Pacer {
    bandwidth: Option<u64>,
    next: parking_lot::Mutex<std::time::Instant>,
}

impl Pacer {
    fn wait_turn(&self, bytes: u64) {
        let Some(bw) = self.bandwidth else { return };
        let start = {
            let mut next = self.next.lock();
            let start = (*next).max(std::time::Instant::now());
            *next = start + Duration::from_secs_f64(bytes as f64 / bw as f64);
            start
        };
        let now = std::time::Instant::now();
        if start > now {
            std::thread::sleep(start - now);
        }
    }
}

/// Walk the flist for its files (each inode once), then fill them, a few
/// at a time, paced to the bandwidth cap over all of them.
fn prefetch_all(tree: Weak<FlistTree>, bandwidth: Option<u64>) {
    let files = {
        let Some(t) = tree.upgrade() else { return };
        let mut seen = std::collections::HashSet::new();
        let mut files = Vec::new();
        let res = zosfs_flist::walk(&*t.reader, t.reader.root(), b"", &mut |_, inode| {
            if inode.kind == zosfs_flist::Kind::File && inode.size > 0 && seen.insert(inode.ino) {
                files.push((inode.ino, inode.size));
            }
            Ok(zosfs_flist::Step::Continue)
        });
        if let Err(e) = res {
            tracing::error!("prefetch: walking the flist failed: {}", e.chain());
            return;
        }
        let skipped = fit_budget(&mut files, t.cache.budget());
        t.counters.prefetch_skipped_bytes.store(skipped, Ordering::Relaxed);
        t.counters.prefetch.store(crate::stats::PREFETCH_RUNNING, Ordering::Relaxed);
        files
    };
    let started = std::time::Instant::now();
    let pacer = Pacer { bandwidth, next: parking_lot::Mutex::new(started) };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (done, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        for _ in 0..PREFETCH_WORKERS {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(ino, size)) = files.get(i) else { return };
                    pacer.wait_turn(size);
                    // Stop as soon as the mount went away.
                    let Some(t) = tree.upgrade() else { return };
                    let res =
                        t.reader.data(ino).map_err(flist_err).and_then(|chunks| {
                            t.cache.fill(&t.store, chunks, &t.counters, bandwidth)
                        });
                    match res {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            tracing::warn!("prefetch of inode {ino}: {}", e.chain());
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            });
        }
    });
    let Some(t) = tree.upgrade() else {
        tracing::info!("prefetch stopped: the mount went away");
        return;
    };
    t.counters.prefetch.store(crate::stats::PREFETCH_DONE, Ordering::Relaxed);
    tracing::info!(
        "prefetch: {} files filled, {} failed in {:?}",
        done.into_inner(),
        failed.into_inner(),
        started.elapsed()
    );
}

/// Share of the cache budget `--prefetch all` may fill: what it fetches
/// beyond the budget would only evict what it fetched before.
const PREFETCH_BUDGET_SHARE: f64 = 0.9;

/// Keep the files (in walk order) that fit the cache budget; returns the
/// bytes left out, and says so in the log.
fn fit_budget(files: &mut Vec<(Ino, u64)>, budget: Option<u64>) -> u64 {
    let Some(budget) = budget else { return 0 };
    let room = (budget as f64 * PREFETCH_BUDGET_SHARE) as u64;
    let total: u64 = files.iter().map(|f| f.1).sum();
    if total <= room {
        return 0;
    }
    let mut used = 0u64;
    files.retain(|&(_, size)| {
        let fits = used + size <= room;
        if fits {
            used += size;
        }
        fits
    });
    let skipped = total - used;
    tracing::warn!(
        "prefetch all: the image's files take {total} bytes, more than the cache budget \
         ({budget} bytes): prefetching {used} bytes, leaving {skipped} to be fetched on read"
    );
    skipped
}

impl Tree for FlistTree {
    fn root(&self) -> Ino {
        self.reader.root()
    }

    fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Attr> {
        match self.reader.lookup(parent, name.as_bytes()).map_err(flist_err)? {
            Some(e) => Ok(attr_of(&self.inode(e.ino)?)),
            None => Err(Error::new(ErrorKind::NotFound, format!("{name:?} in inode {parent}"))),
        }
    }

    fn getattr(&self, ino: Ino) -> Result<Attr> {
        Ok(attr_of(&self.inode(ino)?))
    }

    fn readdir(&self, ino: Ino) -> Result<Vec<DirEntry>> {
        let entries = self.reader.readdir_all(ino).map_err(flist_err)?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let attr = attr_of(&self.inode(e.ino)?);
            out.push(DirEntry { name: OsString::from_vec(e.name), attr });
        }
        Ok(out)
    }

    fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        self.reader.readlink(ino).map_err(flist_err)
    }

    fn listxattr(&self, ino: Ino) -> Result<Vec<OsString>> {
        Ok(self.inode(ino)?.xattrs.into_iter().map(|x| OsString::from_vec(x.name)).collect())
    }

    fn getxattr(&self, ino: Ino, name: &OsStr) -> Result<Option<Vec<u8>>> {
        let inode = self.inode(ino)?;
        Ok(inode.xattrs.into_iter().find(|x| x.name == name.as_bytes()).map(|x| x.value))
    }

    fn open(&self, ino: Ino) -> Result<Arc<dyn Content>> {
        let chunks = self.reader.data(ino).map_err(flist_err)?;
        self.cache.open_content(&self.store, chunks, &self.counters)
    }

    fn stats(&self) -> TreeStats {
        // Counting would scan the whole flist: statfs shows no usage.
        TreeStats::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How often `what` appears in `text`.
    fn count(text: &str, what: &str) -> usize {
        text.matches(what).count()
    }

    #[test]
    fn open_errors_name_the_flist_once() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(ContentCache::open(&dir.path().join("cache"), None).unwrap());
        let counters = Arc::new(Counters::default());
        let missing = dir.path().join("nope.flist");
        let garbage = dir.path().join("garbage.flist");
        std::fs::write(&garbage, b"not an flist at all").unwrap();
        for (path, kind) in [(&missing, ErrorKind::NotFound), (&garbage, ErrorKind::Io)] {
            let e = match FlistTree::open(
                path,
                &[],
                RoutePolicy::Refuse,
                cache.clone(),
                counters.clone(),
            ) {
                Ok(_) => panic!("{} opened", path.display()),
                Err(e) => e,
            };
            let msg = e.chain();
            assert_eq!(count(&msg, &path.display().to_string()), 1, "{msg}");
            assert_eq!(e.kind(), kind, "{msg}");
        }
        let e = FlistTree::open(&missing, &[], RoutePolicy::Refuse, cache, counters).err().unwrap();
        assert_eq!(e.errno(), libc::ENOENT);
        let msg = e.chain();
        assert!(msg.starts_with(&format!("open {}: not found: ", missing.display())), "{msg}");
    }
}
