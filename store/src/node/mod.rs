//! The node store shared by every process on a node: `local://PATH` opened
//! by any number of fsmount mounts, nbdserver devices and tools at once.
//!
//! One process owns the store: the first to take `PATH/LOCK`. Only the
//! owner runs the io_uring engine, the group-commit writer, the index and
//! maintenance ([`LocalStore`]); it serves them to everyone else over a
//! unix socket ([`server`], wire format in [`proto`], location in
//! [`locate`]). Every other handle, in another process or in the owner's
//! own process, is a client ([`client`]).
//!
//! When the owner exits or dies, a client whose request fails takes the
//! lock itself, becoming the owner (it replays the log's tail), or connects
//! to whoever did; then it sends the request again. Requests are idempotent
//! (a put of an id that exists changes nothing) and a put is acknowledged
//! only once durable, so a client in flight loses nothing acknowledged.
//!
//! Maintenance (`fsck`, `gc`) and `stat` run in the owner, whoever asks.
//! The owner's open options (sync policy, cache budget, segment size) are
//! the store's; a client's are ignored except that a client opened with
//! [`SyncPolicy::EveryPut`] asks for durable puts.

mod client;
mod exec;
pub mod frame;
pub mod locate;
pub mod proto;
mod server;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use crate::backend::{ChunkStore, OpenOptions, StoreStats, SyncPolicy, blocking};
use crate::chunk::ChunkId;
use crate::error::{Error, ErrorKind, Result};
use crate::local::{FsckOptions, GcReport, LocalStats, LocalStore, OpenReport};
use client::{Client, Fail};
use locate::OwnerRecord;
use proto::{FsckAnswer, MAX_IDS, Op, Reply};
use server::Server;

pub use server::MAX_CONNECTIONS;

/// How long finding an owner (or becoming one) may take before giving up,
/// in units of the open options' network timeout (10 s by default, so a
/// minute): long enough for a successor to replay a large log's tail.
const ATTACH_TIMEOUTS: u32 = 6;
/// Times a request is sent again after its owner went away.
const MAX_FAILOVERS: u32 = 5;

/// What this handle is to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Owner,
    /// A client of the owner with this pid, over this socket.
    Client {
        owner_pid: u32,
        socket: PathBuf,
    },
}

enum Mode {
    /// Field order is drop order: the server stops (joining every request
    /// in flight) before the store closes.
    Owner {
        _server: Server,
        store: Arc<LocalStore>,
    },
    Client(Client),
}

struct Shared {
    dir: PathBuf,
    name: String,
    opts: OpenOptions,
    /// The current mode and its generation (bumped on every change).
    mode: RwLock<(u64, Arc<Mode>)>,
    /// Held while finding a new owner, so concurrent failures do it once.
    switching: Mutex<()>,
}

/// A handle on the node store at `PATH`; see the module docs.
pub struct NodeStore {
    sh: Arc<Shared>,
}

impl NodeStore {
    /// Open the store in `path` (creating it, mode 0700): as its owner if
    /// nobody holds it, else as a client of the owner.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<NodeStore> {
        let name = format!("local://{}", path.display());
        locate::private_dir(path).map_err(|e| Error::io(format!("{name}: create"), e))?;
        let mode = attach(path, &name, opts)?;
        let sh = Shared {
            dir: path.to_path_buf(),
            name,
            opts: opts.clone(),
            mode: RwLock::new((0, Arc::new(mode))),
            switching: Mutex::new(()),
        };
        Ok(NodeStore { sh: Arc::new(sh) })
    }

    pub fn path(&self) -> &Path {
        &self.sh.dir
    }

    pub fn role(&self) -> Role {
        match &*self.sh.mode.read().1 {
            Mode::Owner { .. } => Role::Owner,
            Mode::Client(c) => Role::Client { owner_pid: c.owner.pid, socket: c.socket() },
        }
    }

    /// What opening found, when this handle opened the store itself.
    pub fn open_report(&self) -> Option<OpenReport> {
        match &*self.sh.mode.read().1 {
            Mode::Owner { store, .. } => Some(store.open_report()),
            Mode::Client(_) => None,
        }
    }

    /// The owner's figures (node-wide: every client's gets and puts).
    pub async fn local_stats(&self) -> Result<LocalStats> {
        match self.run(Op::Stats).await? {
            Reply::Stats(s) => Ok(*s),
            other => Err(unexpected(&self.sh.name, &other)),
        }
    }

    /// Verify every record, in the owner; with what the owner's open found.
    pub async fn fsck(&self, opts: &FsckOptions) -> Result<FsckAnswer> {
        match self.run(Op::Fsck { verify_ids: opts.verify_ids }).await? {
            Reply::Fsck(a) => Ok(*a),
            other => Err(unexpected(&self.sh.name, &other)),
        }
    }

    /// Compact now, in the owner.
    pub async fn gc(&self) -> Result<GcReport> {
        match self.run(Op::Gc).await? {
            Reply::Gc(r) => Ok(r),
            other => Err(unexpected(&self.sh.name, &other)),
        }
    }

    /// Carry out `op`: in this process when it owns the store, else through
    /// the owner, finding the next owner when this one is gone.
    async fn run(&self, op: Op) -> Result<Reply> {
        let mut failovers = 0;
        loop {
            let (epoch, mode) = self.sh.current();
            let client = match &*mode {
                Mode::Owner { store, .. } => return exec::exec(store, op).await,
                Mode::Client(_) => mode.clone(),
            };
            let req = op.clone();
            let res = blocking(move || match &*client {
                Mode::Client(c) => c.call(&req),
                Mode::Owner { .. } => unreachable!("checked above"),
            })
            .await;
            match res {
                Ok(answer) => return answer,
                Err(Fail::Refused(e)) => return Err(e),
                Err(Fail::Gone(e)) if failovers >= MAX_FAILOVERS => {
                    return Err(Error::with_source(
                        ErrorKind::Unavailable,
                        format!("{}: the owner went away {failovers} times", self.sh.name),
                        e,
                    ));
                }
                Err(Fail::Gone(e)) => {
                    failovers += 1;
                    tracing::info!("{}: owner gone ({e}); finding the next one", self.sh.name);
                    let sh = self.sh.clone();
                    blocking(move || sh.failover(epoch)).await?;
                }
            }
        }
    }
}

impl Shared {
    fn current(&self) -> (u64, Arc<Mode>) {
        let g = self.mode.read();
        (g.0, g.1.clone())
    }

    /// Replace the mode of generation `epoch` (whose owner is gone) by a new
    /// one; a no-op when another request already did.
    fn failover(&self, epoch: u64) -> Result<()> {
        let _one = self.switching.lock();
        if self.mode.read().0 != epoch {
            return Ok(());
        }
        let mode = attach(&self.dir, &self.name, &self.opts)?;
        let mut g = self.mode.write();
        *g = (epoch + 1, Arc::new(mode));
        Ok(())
    }
}

/// Become the owner, or a client of the current one; wait (bounded) while
/// the lock's holder is not serving yet.
fn attach(dir: &Path, name: &str, opts: &OpenOptions) -> Result<Mode> {
    let deadline = Instant::now() + opts.timeout * ATTACH_TIMEOUTS;
    let mut last;
    loop {
        if let Some(store) = LocalStore::try_open(dir, opts)? {
            let store = Arc::new(store);
            let socket = locate::socket_path(dir)?;
            let server = Server::start(store.clone(), &socket)?;
            tracing::debug!("{name}: owner, serving {}", socket.display());
            return Ok(Mode::Owner { _server: server, store });
        }
        match OwnerRecord::read(dir) {
            Some(Ok(rec)) => match Client::connect(name, rec.clone()) {
                Ok(c) => return Ok(Mode::Client(c)),
                Err(Fail::Refused(e)) => return Err(e),
                Err(Fail::Gone(e)) => {
                    last = format!("owner pid {} at {}: {e}", rec.pid, rec.socket.display())
                }
            },
            Some(Err(why)) => last = why,
            None => last = "no OWNER file".into(),
        }
        if Instant::now() > deadline {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "{name}: another process holds the store's LOCK but does not serve it \
                     ({last}); a zosfs older than the shared node store? (see `fuser {}/LOCK`)",
                    dir.display()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn unexpected(name: &str, r: &Reply) -> Error {
    Error::new(ErrorKind::Protocol, format!("{name}: unexpected answer {r:?}"))
}

impl From<&LocalStats> for StoreStats {
    fn from(s: &LocalStats) -> Self {
        StoreStats {
            chunks: s.chunks,
            bytes: s.blob_bytes,
            disk_bytes: Some(s.disk_bytes()),
            gets: s.gets,
            hits: s.hits,
            puts: s.puts,
            evictions: s.evictions,
            engine: Some(s.engine.clone()),
            budget: s.budget,
        }
    }
}

#[async_trait]
impl ChunkStore for NodeStore {
    fn url(&self) -> &str {
        &self.sh.name
    }

    async fn get(&self, id: &ChunkId) -> Result<Option<Bytes>> {
        match self.run(Op::Get(*id)).await? {
            Reply::Blob(b) => Ok(b),
            other => Err(unexpected(&self.sh.name, &other)),
        }
    }

    async fn put(&self, id: &ChunkId, blob: Bytes) -> Result<()> {
        let durable = self.sh.opts.sync == SyncPolicy::EveryPut;
        self.run(Op::Put { id: *id, durable, blob }).await.map(|_| ())
    }

    async fn has(&self, id: &ChunkId) -> Result<bool> {
        Ok(self.has_many(std::slice::from_ref(id)).await?[0])
    }

    async fn has_many(&self, ids: &[ChunkId]) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(ids.len());
        for part in ids.chunks(MAX_IDS) {
            match self.run(Op::Has(part.to_vec())).await? {
                Reply::Bools(v) => out.extend(v),
                other => return Err(unexpected(&self.sh.name, &other)),
            }
        }
        Ok(out)
    }

    async fn delete(&self, id: &ChunkId) -> Result<bool> {
        match self.run(Op::Delete(*id)).await? {
            Reply::Bool(b) => Ok(b),
            other => Err(unexpected(&self.sh.name, &other)),
        }
    }

    async fn stats(&self) -> Result<StoreStats> {
        Ok(StoreStats::from(&self.local_stats().await?))
    }

    async fn list_ids(&self) -> Result<Vec<ChunkId>> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            match self.run(Op::List { after }).await? {
                Reply::Ids { ids, more } => {
                    after = ids.last().copied();
                    out.extend(ids);
                    if !more || after.is_none() {
                        return Ok(out);
                    }
                }
                other => return Err(unexpected(&self.sh.name, &other)),
            }
        }
    }

    async fn sync(&self) -> Result<()> {
        self.run(Op::Sync).await.map(|_| ())
    }
}
