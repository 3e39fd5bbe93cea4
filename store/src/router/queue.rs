//! The durable replication queue: writes a replica did not take yet.
//!
//! Layout under the queue directory:
//!
//! ```text
//! <target key>/TARGET        the target's URL (redacted), for humans and listing
//! <target key>/<hex id>      the blob still to be written to that target
//! <target key>/.<hex>.<pid>.tmp  a write in progress by process <pid>
//!                            (removed at open once <pid> is gone)
//! ```
//!
//! `<target key>` is the first 16 hex digits of BLAKE3(URL). Every entry
//! holds its own copy of the blob, so the queue never depends on another
//! store keeping it (a local cache may evict). An entry is written to a
//! temporary name, fsynced, renamed into place and its directory fsynced
//! before [`Queue::push`] returns: once the caller acknowledges a write,
//! a crash cannot lose the pending replication.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::chunk::ChunkId;
use crate::error::{Error, Result};

const TARGET_FILE: &str = "TARGET";

/// Pending entries for one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub target: String,
    pub ids: Vec<ChunkId>,
}

pub(crate) struct Queue {
    dir: PathBuf,
    /// Serialises this process's changes so a push and a removal of the
    /// same entry cannot interleave. Several processes of a node share one
    /// queue (every router on the node store): across them entries are
    /// safe because each is written under a temporary name of its writer's
    /// own and renamed into place, removals accept a missing entry, and an
    /// entry is a whole blob (content-addressed), so a push and a removal
    /// racing in two processes at worst replicate a chunk twice.
    lock: Mutex<()>,
}

impl Queue {
    pub(crate) fn open(dir: &Path) -> Result<Queue> {
        let ctx = |what: &str| format!("replication queue {}: {what}", dir.display());
        fs::create_dir_all(dir).map_err(|e| Error::io(ctx("create"), e))?;
        // Writes cut off by a crash were never acknowledged: drop them, but
        // not those of live processes sharing the queue.
        for t in subdirs(dir).map_err(|e| Error::io(ctx("list"), e))? {
            for f in fs::read_dir(&t).map_err(|e| Error::io(ctx("list"), e))?.flatten() {
                let name = f.file_name();
                if tmp_writer(&name.to_string_lossy()).is_some_and(|pid| !pid_alive(pid)) {
                    let _ = fs::remove_file(f.path());
                }
            }
        }
        Ok(Queue { dir: dir.to_path_buf(), lock: Mutex::new(()) })
    }

    /// The queue in `dir` as it is, for reporting: nothing is cleaned up
    /// (other processes may be writing to it).
    pub(crate) fn look(dir: &Path) -> Queue {
        Queue { dir: dir.to_path_buf(), lock: Mutex::new(()) }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn target_dir(&self, target: &str) -> PathBuf {
        let h = blake3::hash(target.as_bytes()).to_hex();
        self.dir.join(&h.as_str()[..16])
    }

    /// Record that `target` still needs `blob` under `id`. Durable on return.
    pub(crate) fn push(&self, target: &str, id: &ChunkId, blob: &[u8]) -> Result<()> {
        let _g = self.lock.lock();
        let tdir = self.target_dir(target);
        let ctx = |what: &str| format!("replication queue {}: {what}", self.dir.display());
        if !tdir.join(TARGET_FILE).exists() {
            fs::create_dir_all(&tdir).map_err(|e| Error::io(ctx("create"), e))?;
            write_durably(&tdir, TARGET_FILE, target.as_bytes())
                .map_err(|e| Error::io(ctx("record target"), e))?;
            sync_dir(&self.dir).map_err(|e| Error::io(ctx("fsync"), e))?;
        }
        let name = id.to_hex();
        if tdir.join(&name).exists() {
            return Ok(());
        }
        write_durably(&tdir, &name, blob)
            .map_err(|e| Error::io(ctx(&format!("add chunk {id} for {target}")), e))
    }

    /// Every target with entries, in a stable order.
    pub(crate) fn pending(&self) -> Result<Vec<Pending>> {
        let ctx = |what: &str| format!("replication queue {}: {what}", self.dir.display());
        let mut out = Vec::new();
        let mut dirs = subdirs(&self.dir).map_err(|e| Error::io(ctx("list"), e))?;
        dirs.sort();
        for t in dirs {
            let Ok(target) = fs::read_to_string(t.join(TARGET_FILE)) else { continue };
            let mut ids = Vec::new();
            for f in fs::read_dir(&t).map_err(|e| Error::io(ctx("list"), e))?.flatten() {
                if let Some(id) = f.file_name().to_str().and_then(|n| n.parse::<ChunkId>().ok()) {
                    ids.push(id);
                }
            }
            if !ids.is_empty() {
                ids.sort();
                out.push(Pending { target, ids });
            }
        }
        Ok(out)
    }

    pub(crate) fn len(&self) -> Result<usize> {
        Ok(self.pending()?.iter().map(|p| p.ids.len()).sum())
    }

    pub(crate) fn read(&self, target: &str, id: &ChunkId) -> Result<Option<Bytes>> {
        let path = self.target_dir(target).join(id.to_hex());
        match fs::read(&path) {
            Ok(b) => Ok(Some(Bytes::from(b))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("replication queue: read {}", path.display()), e)),
        }
    }

    /// The blob of `id` from any target's entry (reads of acknowledged
    /// chunks no replica has yet).
    pub(crate) fn find(&self, id: &ChunkId) -> Option<Bytes> {
        let name = id.to_hex();
        subdirs(&self.dir)
            .ok()?
            .into_iter()
            .find_map(|t| fs::read(t.join(&name)).ok().map(Bytes::from))
    }

    pub(crate) fn remove(&self, target: &str, id: &ChunkId) -> Result<()> {
        let _g = self.lock.lock();
        let path = self.target_dir(target).join(id.to_hex());
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("replication queue: remove {}", path.display()), e)),
        }
    }

    /// Drop every entry of `id` (the chunk was deleted on purpose).
    pub(crate) fn forget(&self, id: &ChunkId) -> Result<()> {
        let _g = self.lock.lock();
        let name = id.to_hex();
        for t in subdirs(&self.dir).map_err(|e| Error::io("replication queue: list", e))? {
            match fs::remove_file(t.join(&name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("replication queue: remove", e)),
            }
        }
        Ok(())
    }

    /// Set a bad entry aside (renamed `<hex>.corrupt`), never deleting it.
    pub(crate) fn quarantine(&self, target: &str, id: &ChunkId) -> Result<PathBuf> {
        let _g = self.lock.lock();
        let from = self.target_dir(target).join(id.to_hex());
        let to = from.with_extension("corrupt");
        fs::rename(&from, &to).map_err(|e| {
            Error::io(format!("replication queue: quarantine {}", from.display()), e)
        })?;
        Ok(to)
    }
}

/// The writer of a temporary entry: `Some(pid)` for `.<name>.<pid>.tmp`,
/// `Some(0)` for the pid-less `.<name>.tmp` of earlier versions (whose
/// writer is gone: a node runs one version at a time), `None` otherwise.
fn tmp_writer(name: &str) -> Option<u32> {
    let stem = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    match stem.rsplit_once('.') {
        Some((_, pid)) => pid.parse().ok().or(Some(0)),
        None => Some(0),
    }
}

fn pid_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks the process exists.
    pid != 0
        && (unsafe { libc::kill(pid as i32, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

fn subdirs(p: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in fs::read_dir(p)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            v.push(e.path());
        }
    }
    Ok(v)
}

/// tmp file, fsync, rename, fsync the directory.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_list_read_remove_survive_reopen() {
        let d = tempfile::tempdir().unwrap();
        let q = Queue::open(d.path()).unwrap();
        let a = ChunkId::of_blob(b"a");
        let b = ChunkId::of_blob(b"b");
        q.push("zdb://h:1/ns", &a, b"a").unwrap();
        q.push("zdb://h:1/ns", &a, b"a").unwrap();
        q.push("redis://h:2/0", &b, b"b").unwrap();
        // A torn write from a crash (pid-less as earlier versions named it,
        // or of a dead pid) is dropped at open; a live writer's is kept.
        let tdir = q.target_dir("zdb://h:1/ns");
        let old = tdir.join(format!(".{}.tmp", b.to_hex()));
        let dead = tdir.join(format!(".{}.{}.tmp", b.to_hex(), i32::MAX));
        let live = tdir.join(format!(".{}.{}.tmp", a.to_hex(), std::process::id()));
        for f in [&old, &dead, &live] {
            fs::write(f, b"torn").unwrap();
        }
        drop(q);

        let q = Queue::open(d.path()).unwrap();
        assert_eq!(q.len().unwrap(), 2);
        let p = q.pending().unwrap();
        assert!(p.contains(&Pending { target: "zdb://h:1/ns".into(), ids: vec![a] }));
        assert!(p.contains(&Pending { target: "redis://h:2/0".into(), ids: vec![b] }));
        assert_eq!(q.read("zdb://h:1/ns", &a).unwrap().unwrap(), &b"a"[..]);
        assert_eq!(q.find(&b).unwrap(), &b"b"[..]);
        q.remove("zdb://h:1/ns", &a).unwrap();
        q.forget(&b).unwrap();
        assert_eq!(q.len().unwrap(), 0);
        assert!(!old.exists() && !dead.exists());
        assert!(live.exists(), "a live process's write in progress was removed");
    }
}
