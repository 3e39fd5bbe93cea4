//! The set of namespaces on disk: `<data>/namespaces/ns-<uid>/journal`.
//!
//! * NSNEW writes a complete journal into `.new-<uid>/`, then renames the
//!   directory into place: a crash leaves either nothing or a whole namespace.
//! * NSDEL renames the directory to `.trash-<uid>` (atomic), then deletes
//!   the namespace's blobs and the directory; a crash in between is finished
//!   at the next start.
//! * At start, journals much larger than the state they describe are
//!   rewritten (compaction) so replay time follows the live data.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;

use super::journal::{self, Record, Setting};
use super::{Context, Mode, Namespace};
use crate::backend::DynStore;
use crate::error::{Error, ErrorKind, Result};

pub const JOURNAL: &str = "journal";
const DIR: &str = "namespaces";
const LIVE_PREFIX: &str = "ns-";
const NEW_PREFIX: &str = ".new-";
const TRASH_PREFIX: &str = ".trash-";
pub const DEFAULT: &[u8] = b"default";

/// Compact a journal when it is this much larger than its live state.
const COMPACT_RATIO: u64 = 4;
const COMPACT_MIN_BYTES: u64 = 1 << 20;

/// Why NSNEW failed.
#[derive(Debug)]
pub enum CreateError {
    Exists,
    Io(Error),
}

/// All namespaces of one server.
pub struct Namespaces {
    root: PathBuf,
    /// Sorted by creation order; `default` (order 0) first.
    list: RwLock<Vec<Arc<Namespace>>>,
    /// Serialises NSNEW / NSDEL (file work happens under it).
    admin: tokio::sync::Mutex<()>,
    ctx: Arc<Context>,
}

impl std::fmt::Debug for Namespaces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespaces").field("root", &self.root).finish()
    }
}

fn hex_uid(uid: &[u8; 16]) -> String {
    hex::encode(uid)
}

fn io(ctx: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let ctx = ctx.into();
    move |e| Error::io(ctx, e)
}

/// Replay one namespace directory (blocking), compacting its journal if due.
fn open_dir(dir: &Path, ctx: &Arc<Context>) -> Result<Namespace> {
    let path = dir.join(JOURNAL);
    let replay = journal::read(&path)?;
    if replay.valid_len < replay.file_len {
        tracing::warn!(
            "{}: cutting a torn tail of {} bytes (records after a crash that were never acknowledged)",
            path.display(),
            replay.file_len - replay.valid_len
        );
    }
    let ns = Namespace::from_replay(dir.to_path_buf(), replay, ctx.clone())?;
    let snapshot = ns.snapshot();
    let mut live = Vec::new();
    for r in &snapshot {
        r.encode(&mut live);
    }
    let on_disk = ns.journal.len();
    if on_disk > COMPACT_MIN_BYTES && on_disk > COMPACT_RATIO * live.len() as u64 {
        tracing::info!(
            "{}: compacting journal {} -> {} bytes",
            path.display(),
            on_disk,
            live.len()
        );
        drop(ns);
        journal::write_new(&path, &snapshot)?;
        let replay = journal::read(&path)?;
        return Namespace::from_replay(dir.to_path_buf(), replay, ctx.clone());
    }
    Ok(ns)
}

/// Write a new namespace directory and move it into place (blocking).
fn create_dir(root: &Path, uid: [u8; 16], order: u64, name: &[u8], mode: Mode) -> Result<PathBuf> {
    let tmp = root.join(format!("{NEW_PREFIX}{}", hex_uid(&uid)));
    let dir = root.join(format!("{LIVE_PREFIX}{}", hex_uid(&uid)));
    std::fs::create_dir(&tmp).map_err(io(format!("create {}", tmp.display())))?;
    let mut records = vec![Record::Create { uid, order, name: name.to_vec() }];
    if mode == Mode::Sequential {
        records.push(Record::Setting(Setting::Sequential(true)));
    }
    journal::write_new(&tmp.join(JOURNAL), &records)?;
    std::fs::rename(&tmp, &dir).map_err(io(format!("rename {} into place", tmp.display())))?;
    journal::sync_dir(root)?;
    Ok(dir)
}

impl Namespaces {
    /// Load every namespace under `data` (blocking; call once at start).
    ///
    /// Creates `default` on a new data directory. With a single-mode server
    /// (`forced`), empty namespaces are switched to that mode and a
    /// namespace holding data in the other mode is an error.
    /// Returns the table and the directories of interrupted NSDELs, to be
    /// finished with [`Namespaces::purge`].
    pub fn load(
        data: &Path,
        ctx: Arc<Context>,
        default_mode: Mode,
        forced: Option<Mode>,
    ) -> Result<(Namespaces, Vec<PathBuf>)> {
        let root = data.join(DIR);
        std::fs::create_dir_all(&root).map_err(io(format!("create {}", root.display())))?;
        let mut list = Vec::new();
        let mut trash = Vec::new();
        for ent in std::fs::read_dir(&root).map_err(io(format!("list {}", root.display())))? {
            let ent = ent.map_err(io(format!("list {}", root.display())))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            let path = ent.path();
            if name.starts_with(NEW_PREFIX) {
                // An NSNEW that crashed before its rename: never acknowledged.
                std::fs::remove_dir_all(&path).map_err(io(format!("remove {}", path.display())))?;
            } else if name.starts_with(TRASH_PREFIX) {
                trash.push(path);
            } else if name.starts_with(LIVE_PREFIX) {
                list.push(Arc::new(open_dir(&path, &ctx)?));
            }
        }
        list.sort_by_key(|n| n.order());
        for pair in list.windows(2) {
            if pair[0].name() == pair[1].name() {
                return Err(crate::error::corrupt(format!(
                    "{}: two namespaces named {:?}",
                    root.display(),
                    String::from_utf8_lossy(pair[0].name())
                )));
            }
        }
        if !list.iter().any(|n| n.name() == DEFAULT) {
            let dir = create_dir(&root, rand::random(), 0, DEFAULT, default_mode)?;
            list.insert(0, Arc::new(open_dir(&dir, &ctx)?));
        }
        let table = Namespaces { root, list: RwLock::new(list), admin: Default::default(), ctx };
        if let Some(mode) = forced {
            table.force_mode(mode)?;
        }
        Ok((table, trash))
    }

    /// Switch empty namespaces to `mode`; refuse ones holding other-mode data.
    fn force_mode(&self, mode: Mode) -> Result<()> {
        for ns in self.all() {
            if ns.mode() == mode {
                continue;
            }
            if !ns.is_fresh() {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "namespace {:?} holds data in {} mode; this server was started for {} mode only",
                        String::from_utf8_lossy(ns.name()),
                        ns.mode().info_name(),
                        mode.info_name()
                    ),
                ));
            }
            let mut buf = Vec::new();
            Record::Setting(Setting::Sequential(mode == Mode::Sequential)).encode(&mut buf);
            // Still single-threaded start-up: append directly.
            ns.journal.append(&buf)?;
            let mut s = ns.state.lock();
            s.queued += buf.len() as u64;
            s.apply(&Record::Setting(Setting::Sequential(mode == Mode::Sequential)));
            drop(s);
            *ns.written.try_lock().expect("no writer during start-up") += buf.len() as u64;
        }
        Ok(())
    }

    pub fn get(&self, name: &[u8]) -> Option<Arc<Namespace>> {
        self.list.read().iter().find(|n| n.name() == name).cloned()
    }

    pub fn default_ns(&self) -> Arc<Namespace> {
        self.get(DEFAULT).expect("default namespace always exists")
    }

    pub fn names(&self) -> Vec<Bytes> {
        self.list.read().iter().map(|n| n.name().clone()).collect()
    }

    pub fn all(&self) -> Vec<Arc<Namespace>> {
        self.list.read().clone()
    }

    /// NSNEW (the dialect has validated the name).
    pub async fn create(&self, name: &[u8], mode: Mode) -> Result<Arc<Namespace>, CreateError> {
        let _admin = self.admin.lock().await;
        if self.get(name).is_some() {
            return Err(CreateError::Exists);
        }
        let order = self.list.read().iter().map(|n| n.order()).max().unwrap_or(0) + 1;
        let (root, ctx) = (self.root.clone(), self.ctx.clone());
        let name = name.to_vec();
        let ns = tokio::task::spawn_blocking(move || {
            let dir = create_dir(&root, rand::random(), order, &name, mode)?;
            open_dir(&dir, &ctx)
        })
        .await
        .expect("namespace create task panicked")
        .map_err(CreateError::Io)?;
        let ns = Arc::new(ns);
        self.list.write().push(ns.clone());
        Ok(ns)
    }

    /// NSDEL: unlist the namespace, mark it removed, move its directory to
    /// the trash, then delete its blobs and files.
    pub async fn remove(&self, ns: &Arc<Namespace>) -> Result<()> {
        let _admin = self.admin.lock().await;
        let dir = ns.dir().to_path_buf();
        let uid = hex_uid(ns.uid());
        let trash = self.root.join(format!("{TRASH_PREFIX}{uid}"));
        let root = self.root.clone();
        let (from, to) = (dir.clone(), trash.clone());
        tokio::task::spawn_blocking(move || {
            std::fs::rename(&from, &to).map_err(io(format!("move {} to trash", from.display())))?;
            journal::sync_dir(&root)
        })
        .await
        .expect("namespace remove task panicked")?;
        self.list.write().retain(|n| !Arc::ptr_eq(n, ns));
        ns.mark_removed();
        let blobs = ns.blobs();
        let values = self.ctx.values.clone();
        tokio::spawn(async move {
            purge_blobs(&values, blobs).await;
            remove_dir(trash).await;
        });
        Ok(())
    }

    /// Finish NSDELs interrupted by a crash (directories from [`load`](Self::load)).
    pub async fn purge(&self, trash: Vec<PathBuf>) {
        for dir in trash {
            let ctx = self.ctx.clone();
            let d = dir.clone();
            let blobs = tokio::task::spawn_blocking(move || {
                let replay = journal::read(&d.join(JOURNAL))?;
                let ns = Namespace::from_replay(d, replay, ctx)?;
                Ok::<_, Error>(ns.blobs())
            })
            .await
            .expect("trash replay task panicked");
            match blobs {
                Ok(blobs) => purge_blobs(&self.ctx.values, blobs).await,
                Err(e) => tracing::warn!("{}: {e}; removing without blob cleanup", dir.display()),
            }
            remove_dir(dir).await;
        }
    }

    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// Delete values no namespace refers to: blobs put by writes that never
    /// reached the journal (a crash between the two) or replaced/deleted
    /// values whose removal a crash interrupted. Only for a value store this
    /// server owns alone; call before serving (no write is in flight).
    pub async fn collect_garbage(&self) -> Result<usize> {
        let live: std::collections::HashSet<crate::chunk::ChunkId> =
            self.all().iter().flat_map(|ns| ns.blobs()).collect();
        let mut removed = 0;
        for id in self.ctx.values.list_ids().await? {
            if !live.contains(&id) && self.ctx.values.delete(&id).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Write and fsync every journal (periodic sync, shutdown).
    pub async fn sync_all(&self) -> Result<()> {
        for ns in self.all() {
            ns.sync().await?;
        }
        Ok(())
    }
}

async fn purge_blobs(values: &DynStore, blobs: Vec<crate::chunk::ChunkId>) {
    for id in blobs {
        if let Err(e) = values.delete(&id).await {
            tracing::warn!("removing a blob of a deleted namespace: {e}");
        }
    }
}

async fn remove_dir(dir: PathBuf) {
    let d = dir.clone();
    let res = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&d))
        .await
        .expect("remove task panicked");
    if let Err(e) = res {
        tracing::warn!("remove {}: {e}", dir.display());
    }
}
