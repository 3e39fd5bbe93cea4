//! The gc state directory: what earlier runs decided, and the trash.
//!
//! ```text
//! STATE/lock          flock LOCK_EX held by the running gc (one at a time)
//! STATE/state         "zosfs-gc-state 1" text, replaced by temp + fsync + rename
//! STATE/trash/<hex>   the blob of a hidden chunk (temp + fsync + rename)
//! ```
//!
//! Invariants: a blob leaves the store only once its trash copy is durable;
//! a trash copy is removed only once the blob is back in the store or its
//! grace has passed unreferenced. A trash file the state does not list (a
//! run that died before saving) is taken as hidden now: later, never
//! earlier. The format is in docs/formats/gc-state.md.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use zosfs_store::ChunkId;

/// First line of the state file; the number is the format version.
pub const MAGIC: &str = "zosfs-gc-state 1";

/// A chunk moved out of the store into the trash.
#[derive(Clone, Copy, Debug)]
pub struct Trashed {
    /// Unix seconds when it was hidden.
    pub since: u64,
    pub len: u64,
}

/// What earlier runs found.
#[derive(Default, Debug)]
pub struct State {
    /// Unreferenced and still in the store: unix seconds of the first run
    /// that found it unreferenced (and every run since did too).
    pub suspects: HashMap<ChunkId, u64>,
    /// Hidden from the store, kept in the trash.
    pub trash: HashMap<ChunkId, Trashed>,
}

/// An open, locked state directory for one store.
pub struct StateDir {
    dir: PathBuf,
    /// The store's redacted URL: a state belongs to one store.
    store: String,
    _lock: std::fs::File,
}

/// The default state directory of a store: named by its redacted URL, so
/// the same store always finds its state and two stores never share one.
pub fn default_dir(redacted_url: &str) -> PathBuf {
    let hex = ChunkId::of_blob(redacted_url.as_bytes()).to_hex();
    PathBuf::from("/var/lib/zosfs/gc").join(&hex[..16])
}

impl StateDir {
    /// Create (0700) and lock `dir`; another gc holding it is an error.
    pub fn open(dir: &Path, store: &str) -> Result<StateDir> {
        let ctx = || format!("gc state directory {}", dir.display());
        std::fs::create_dir_all(dir.join("trash")).with_context(ctx)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(ctx)?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .with_context(ctx)?;
        // SAFETY: flock on an fd this function owns.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            bail!("{}: another chunkstore gc is running on this state", ctx());
        }
        Ok(StateDir { dir: dir.to_path_buf(), store: store.to_string(), _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn file(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn trash_path(&self, id: &ChunkId) -> PathBuf {
        self.dir.join("trash").join(id.to_hex())
    }

    /// Read the state (empty when none was saved), adding orphan trash
    /// files as hidden at `now` and dropping trash entries whose file is
    /// gone (a purge that died before saving).
    pub fn load(&self, now: u64) -> Result<State> {
        let path = self.file();
        let mut st = match std::fs::read_to_string(&path) {
            Ok(text) => {
                parse(&text, &self.store).with_context(|| format!("gc state {}", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        let on_disk = self.trash_files()?;
        st.trash.retain(|id, _| on_disk.contains_key(id));
        for (id, len) in on_disk {
            st.trash.entry(id).or_insert(Trashed { since: now, len });
        }
        Ok(st)
    }

    fn trash_files(&self) -> Result<HashMap<ChunkId, u64>> {
        let dir = self.dir.join("trash");
        let ctx = || format!("read {}", dir.display());
        let mut out = HashMap::new();
        for e in std::fs::read_dir(&dir).with_context(ctx)? {
            let e = e.with_context(ctx)?;
            if let Some(id) = e.file_name().to_str().and_then(|n| n.parse::<ChunkId>().ok()) {
                out.insert(id, e.metadata().with_context(ctx)?.len());
            }
        }
        Ok(out)
    }

    /// Replace the state file atomically.
    pub fn save(&self, st: &State) -> Result<()> {
        let mut text = format!("{MAGIC}\nstore {}\n", self.store);
        let mut suspects: Vec<_> = st.suspects.iter().collect();
        suspects.sort();
        for (id, since) in suspects {
            text.push_str(&format!("suspect {id} {since}\n"));
        }
        let mut trash: Vec<_> = st.trash.iter().collect();
        trash.sort_by_key(|(id, _)| **id);
        for (id, t) in trash {
            text.push_str(&format!("trash {id} {} {}\n", t.since, t.len));
        }
        write_durable(&self.file(), text.as_bytes())
    }

    pub fn put_trash(&self, id: &ChunkId, blob: &[u8]) -> Result<()> {
        write_durable(&self.trash_path(id), blob)
    }

    pub fn read_trash(&self, id: &ChunkId) -> Result<bytes::Bytes> {
        let p = self.trash_path(id);
        Ok(std::fs::read(&p).with_context(|| format!("read {}", p.display()))?.into())
    }

    pub fn remove_trash(&self, id: &ChunkId) -> Result<()> {
        let p = self.trash_path(id);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("remove {}", p.display()))
            }
            _ => Ok(()),
        }
    }
}

/// Parse a state file of this format version for store `store`.
fn parse(text: &str, store: &str) -> Result<State> {
    let mut lines = text.lines();
    match lines.next() {
        Some(MAGIC) => {}
        Some(l) if l.starts_with("zosfs-gc-state ") => {
            bail!("format {l:?} is not supported (this chunkstore reads {MAGIC:?})")
        }
        _ => bail!("not a gc state file (first line is not {MAGIC:?})"),
    }
    match lines.next().and_then(|l| l.strip_prefix("store ")) {
        Some(s) if s == store => {}
        Some(s) => bail!("belongs to store {s}, not {store}; give another --state"),
        None => bail!("second line is not `store URL`"),
    }
    let mut st = State::default();
    for (n, line) in lines.enumerate() {
        let bad = || anyhow::anyhow!("line {}: malformed: {line:?}", n + 3);
        let f: Vec<&str> = line.split(' ').collect();
        let id = || f.get(1).and_then(|h| h.parse::<ChunkId>().ok()).ok_or_else(bad);
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).ok_or_else(bad);
        match (f[0], f.len()) {
            ("suspect", 3) => {
                st.suspects.insert(id()?, num(2)?);
            }
            ("trash", 4) => {
                st.trash.insert(id()?, Trashed { since: num(2)?, len: num(3)? });
            }
            _ => return Err(bad()),
        }
    }
    Ok(st)
}

/// Write `path` whole: temp file, fsync, rename, fsync of the directory.
fn write_durable(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().expect("state paths have a parent");
    let tmp =
        dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("state")));
    let ctx = || format!("write {}", path.display());
    let mut f = std::fs::File::create(&tmp).with_context(ctx)?;
    f.write_all(data).with_context(ctx)?;
    f.sync_all().with_context(ctx)?;
    std::fs::rename(&tmp, path).with_context(ctx)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).with_context(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_round_trip_and_orphans() {
        let d = tempfile::tempdir().unwrap();
        let sd = StateDir::open(d.path(), "dir:///s").unwrap();
        let (a, b, c) = (ChunkId([1; 32]), ChunkId([2; 32]), ChunkId([3; 32]));
        let mut st = State::default();
        st.suspects.insert(a, 10);
        st.trash.insert(b, Trashed { since: 20, len: 3 });
        // b's file is in the trash; c's file is an orphan (no state line).
        sd.put_trash(&b, b"bbb").unwrap();
        sd.put_trash(&c, b"cc").unwrap();
        sd.save(&st).unwrap();
        let got = sd.load(99).unwrap();
        assert_eq!(got.suspects, st.suspects);
        assert_eq!(got.trash[&b].since, 20);
        assert_eq!((got.trash[&c].since, got.trash[&c].len), (99, 2));
        // A trash entry whose file is gone is dropped.
        sd.remove_trash(&b).unwrap();
        assert!(!sd.load(99).unwrap().trash.contains_key(&b));
    }

    #[test]
    fn refuses_other_store_version_and_second_gc() {
        let d = tempfile::tempdir().unwrap();
        let sd = StateDir::open(d.path(), "dir:///s").unwrap();
        sd.save(&State::default()).unwrap();
        assert!(StateDir::open(d.path(), "dir:///s").is_err(), "second gc locked out");
        drop(sd);
        let other = StateDir::open(d.path(), "dir:///other").unwrap();
        let e = format!("{:#}", other.load(0).unwrap_err());
        assert!(e.contains("belongs to store dir:///s"), "{e}");
        std::fs::write(d.path().join("state"), "zosfs-gc-state 9\n").unwrap();
        let e = format!("{:#}", other.load(0).unwrap_err());
        assert!(e.contains("not supported"), "{e}");
    }
}
