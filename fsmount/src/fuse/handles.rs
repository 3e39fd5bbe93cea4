//! Open file and directory handles, and passthrough backing ids.
//!
//! A directory's listing is taken at its handle's first readdir and kept
//! with the handle, so a long readdir with offsets is linear, not
//! quadratic; an opendir the kernel then serves from its own cache of the
//! directory (FOPEN_CACHE_DIR) costs no listing at all. A passthrough
//! backing id is shared by every open handle of one inode (the kernel
//! requires one id per inode while any handle using it is open) and closed
//! when the last such handle is released.
//!
//! The kernel refuses (EIO) a passthrough open of an inode that has files
//! open in cached mode, and the reverse. Contents only ever become
//! complete, so the one conflict is a cached handle still open (e.g. a
//! mapped library opened before its content was local) when the content
//! completes: [`Handles::cached_opens`] counts them per inode, and the
//! open path decides under that lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use fuser::BackingId;
use parking_lot::Mutex;

use crate::tree::{Content, DirEntry, Ino};

/// Fields drop in order: the backing id (the kernel's reference to the
/// content's file) goes before the content, whose release may close it.
struct OpenFile {
    ino: Ino,
    /// Keeps the backing id registered while this handle is open.
    backing: Option<Arc<BackingId>>,
    content: Arc<dyn Content>,
}

/// An open directory: its listing, once read.
pub(super) struct DirHandle {
    pub ino: Ino,
    entries: std::sync::OnceLock<Arc<Vec<DirEntry>>>,
}

impl DirHandle {
    /// The listing, read by `list` on first use.
    pub fn entries(
        &self,
        list: impl FnOnce() -> crate::error::Result<Vec<DirEntry>>,
    ) -> crate::error::Result<Arc<Vec<DirEntry>>> {
        if let Some(e) = self.entries.get() {
            return Ok(e.clone());
        }
        let e = Arc::new(list()?);
        // Two racing first readdirs read the same immutable listing.
        Ok(self.entries.get_or_init(|| e).clone())
    }
}

#[derive(Default)]
pub(super) struct Handles {
    next: AtomicU64,
    files: Mutex<HashMap<u64, OpenFile>>,
    dirs: Mutex<HashMap<u64, Arc<DirHandle>>>,
    backing: Mutex<HashMap<Ino, Weak<BackingId>>>,
    cached: Mutex<HashMap<Ino, usize>>,
}

impl Handles {
    fn next(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Files of each inode open without passthrough. Hold the guard while
    /// choosing the mode of a new open and registering it.
    pub fn cached_opens(&self) -> parking_lot::MutexGuard<'_, HashMap<Ino, usize>> {
        self.cached.lock()
    }

    /// Register an open file. Without `backing` it counts as a cached-mode
    /// open of `ino`: the caller holds `cached` (from [`Self::cached_opens`]).
    pub fn open_file(
        &self,
        cached: &mut HashMap<Ino, usize>,
        ino: Ino,
        content: Arc<dyn Content>,
        backing: Option<Arc<BackingId>>,
    ) -> u64 {
        let fh = self.next();
        if backing.is_none() {
            *cached.entry(ino).or_default() += 1;
        }
        self.files.lock().insert(fh, OpenFile { ino, content, backing });
        fh
    }

    pub fn file(&self, fh: u64) -> Option<Arc<dyn Content>> {
        self.files.lock().get(&fh).map(|f| f.content.clone())
    }

    pub fn close_file(&self, fh: u64) {
        // Drop outside the lock: dropping the last backing id is an ioctl.
        let f = self.files.lock().remove(&fh);
        if let Some(f) = &f {
            if f.backing.is_none() {
                let mut cached = self.cached.lock();
                if let Some(n) = cached.get_mut(&f.ino) {
                    *n -= 1;
                    if *n == 0 {
                        cached.remove(&f.ino);
                    }
                }
            }
        }
        drop(f);
    }

    pub fn open_dir(&self, ino: Ino) -> u64 {
        let fh = self.next();
        let h = DirHandle { ino, entries: std::sync::OnceLock::new() };
        self.dirs.lock().insert(fh, Arc::new(h));
        fh
    }

    pub fn dir(&self, fh: u64) -> Option<Arc<DirHandle>> {
        self.dirs.lock().get(&fh).cloned()
    }

    pub fn close_dir(&self, fh: u64) {
        self.dirs.lock().remove(&fh);
    }

    /// The live backing id of `ino`, or a new one from `create`.
    pub fn backing(
        &self,
        ino: Ino,
        create: impl FnOnce() -> std::io::Result<BackingId>,
    ) -> std::io::Result<Arc<BackingId>> {
        let mut map = self.backing.lock();
        if let Some(id) = map.get(&ino).and_then(Weak::upgrade) {
            return Ok(id);
        }
        let id = Arc::new(create()?);
        map.insert(ino, Arc::downgrade(&id));
        // Forget inodes whose last handle closed.
        if map.len() > 1024 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        Ok(id)
    }
}
