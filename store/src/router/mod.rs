//! The router: several stores behind one `ChunkStore`.
//!
//! * Routes: a store given as `xx-yy=URL` takes only ids whose first byte is
//!   in the range; every other store takes all ids.
//! * Writes ([`write`]) go to every matching store at once. Without a
//!   replication queue a write succeeds when `quorum` stores took it (all
//!   matching stores by default). With a queue, every store that missed the
//!   write gets a durable queue entry, and the write succeeds when `quorum`
//!   stores hold the chunk now (one by default): nothing acknowledged is
//!   dropped, the queue finishes the replication ([`drain`]). So `--quorum
//!   N` fails a write that fewer than N stores took, queue or not.
//! * Reads ([`read`]) ask one store (local ones first), hedge to the next
//!   when the answer is slow, move on at once on an error, a miss or a blob
//!   whose BLAKE3 is not its id, and repair the stores found missing or
//!   corrupt by writing the good blob back.
//! * The queue ([`queue`]) lives in `RouterConfig::queue_dir`, or else in
//!   `replication-queue/` under the first `local://` store's directory.

mod drain;
pub mod queue;
mod read;
mod write;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;

pub use self::drain::{DrainReport, Event, Outcome, ReplicateReport};
pub use self::queue::Pending;
use self::queue::Queue;
use crate::backend::{ChunkStore, DynStore, OpenOptions, StoreStats, blocking};
use crate::chunk::ChunkId;
use crate::error::{Error, ErrorKind, Result, invalid};
use crate::open::open_backend;
use crate::url::{Backend, Route, StoreUrl};

/// Router settings.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    pub open: OpenOptions,
    /// Stores that must take a write (None: all matching stores). Without a
    /// replication queue, fewer is an error; with one, the missing stores
    /// are queued and the write succeeds if any store took it.
    pub quorum: Option<usize>,
    /// How long a read waits for one store before also asking the next.
    pub hedge_delay: Duration,
    /// Where writes a store missed are kept until it takes them (None: under
    /// the first `local://` store, or no queue at all).
    pub queue_dir: Option<PathBuf>,
    /// Retry queued writes in a background task (needs a tokio runtime).
    pub background_drain: bool,
    /// First and longest wait between retries of a store that failed.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            open: OpenOptions::default(),
            quorum: None,
            hedge_delay: Duration::from_millis(50),
            queue_dir: None,
            background_drain: true,
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
        }
    }
}

impl RouterConfig {
    /// The queue directory: explicit, or under the first `local://` store.
    pub fn queue_dir_for(&self, urls: &[StoreUrl]) -> Option<PathBuf> {
        self.queue_dir.clone().or_else(|| {
            urls.iter().find_map(|u| match &u.backend {
                Backend::Local { path } => Some(path.join("replication-queue")),
                _ => None,
            })
        })
    }
}

pub(crate) struct Member {
    pub(crate) route: Route,
    pub(crate) store: DynStore,
    /// On this node (local://, dir://, mem://): read first.
    pub(crate) local: bool,
    /// A write to it was queued already (warn once per store, not per chunk).
    pub(crate) queue_warned: std::sync::atomic::AtomicBool,
}

/// State shared with background tasks (repairs, the queue drainer).
pub(crate) struct Shared {
    pub(crate) members: Vec<Member>,
    pub(crate) quorum: Option<usize>,
    pub(crate) hedge_delay: Duration,
    pub(crate) queue: Option<Arc<Queue>>,
    pub(crate) retry_min: Duration,
    pub(crate) retry_max: Duration,
    /// Wakes the drainer when an entry is queued.
    pub(crate) queued: Notify,
    /// Background repairs still running (`sync` waits for them).
    pub(crate) repairs: AtomicUsize,
    pub(crate) repairs_done: Notify,
    /// Writes this router acknowledged with part of them queued.
    pub(crate) writes_queued: std::sync::atomic::AtomicU64,
}

pub struct Router {
    shared: Arc<Shared>,
    name: String,
    drainer: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Router {
    fn drop(&mut self) {
        if let Some(d) = self.drainer.take() {
            d.abort();
        }
    }
}

fn is_local_url(url: &str) -> bool {
    ["local://", "dir://", "mem://"].iter().any(|p| url.starts_with(p))
}

impl Router {
    pub async fn open(urls: &[StoreUrl], cfg: &RouterConfig) -> Result<Arc<Router>> {
        if urls.is_empty() {
            return Err(invalid("no store URL given"));
        }
        let mut stores = Vec::new();
        for u in urls {
            stores.push((u.route, open_backend(u, &cfg.open).await?));
        }
        let cfg = RouterConfig { queue_dir: cfg.queue_dir_for(urls), ..cfg.clone() };
        Ok(Arc::new(Router::with_config(stores, &cfg)?))
    }

    /// Build from already-open stores (tests, servers); no queue.
    pub fn from_stores(stores: Vec<(Route, DynStore)>, quorum: Option<usize>) -> Router {
        let cfg = RouterConfig { quorum, ..Default::default() };
        Router::build(stores, &cfg, None)
    }

    /// Build from already-open stores with every setting; opens the queue in
    /// `cfg.queue_dir` if given and starts draining it in the background.
    pub fn with_config(stores: Vec<(Route, DynStore)>, cfg: &RouterConfig) -> Result<Router> {
        if stores.is_empty() {
            return Err(invalid("no store given"));
        }
        if cfg.quorum == Some(0) {
            return Err(invalid("write quorum must be at least 1"));
        }
        let queue = match &cfg.queue_dir {
            Some(d) => Some(Arc::new(Queue::open(d)?)),
            None => None,
        };
        Ok(Router::build(stores, cfg, queue))
    }

    fn build(
        stores: Vec<(Route, DynStore)>,
        cfg: &RouterConfig,
        queue: Option<Arc<Queue>>,
    ) -> Router {
        let name = stores.iter().map(|(_, s)| s.url().to_string()).collect::<Vec<_>>().join(",");
        let members = stores
            .into_iter()
            .map(|(route, store)| Member {
                route,
                local: is_local_url(store.url()),
                store,
                queue_warned: Default::default(),
            })
            .collect();
        let shared = Arc::new(Shared {
            members,
            quorum: cfg.quorum,
            hedge_delay: cfg.hedge_delay,
            queue,
            retry_min: cfg.retry_min,
            retry_max: cfg.retry_max.max(cfg.retry_min),
            queued: Notify::new(),
            repairs: AtomicUsize::new(0),
            repairs_done: Notify::new(),
            writes_queued: Default::default(),
        });
        let drainer = match (&shared.queue, tokio::runtime::Handle::try_current()) {
            (Some(_), Ok(h)) if cfg.background_drain => {
                Some(h.spawn(drain::background(shared.clone())))
            }
            _ => None,
        };
        Router { shared, name, drainer }
    }

    /// Writes acknowledged so far with at least one store's copy queued
    /// (a command says so on its terminal: the replicas are behind).
    pub fn writes_queued(&self) -> u64 {
        self.shared.writes_queued.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The replication queue directory, if there is one.
    pub fn queue_dir(&self) -> Option<PathBuf> {
        self.shared.queue.as_ref().map(|q| q.dir().to_path_buf())
    }

    /// What the queue still holds, per target.
    pub async fn queue_pending(&self) -> Result<Vec<Pending>> {
        match &self.shared.queue {
            Some(q) => {
                let q = q.clone();
                blocking(move || q.pending()).await
            }
            None => Ok(Vec::new()),
        }
    }

    /// What the queue in `dir` holds, per target, read without opening
    /// it (`chunkstore stat`); empty when there is no queue.
    pub fn pending_at(dir: &std::path::Path) -> Result<Vec<Pending>> {
        if !dir.is_dir() {
            return Ok(Vec::new());
        }
        Queue::look(dir).pending()
    }

    /// Try every queued write once now (no backoff), reporting each.
    pub async fn drain_queue(
        &self,
        progress: &mut dyn FnMut(&drain::Event),
    ) -> Result<DrainReport> {
        drain::drain_all(&self.shared, progress).await
    }

    /// Make sure every matching store holds a verified copy of each id:
    /// copies missing ones, and with `verify` also reads every copy back and
    /// rewrites corrupt ones. Writes that fail go to the queue.
    pub async fn replicate(
        &self,
        ids: &[ChunkId],
        verify: bool,
        progress: &mut dyn FnMut(&drain::Event),
    ) -> Result<ReplicateReport> {
        drain::replicate(&self.shared, ids, verify, progress).await
    }

    /// Ids held by the local stores (those that can list them).
    pub async fn local_ids(&self) -> Result<Vec<ChunkId>> {
        let mut all = Vec::new();
        let mut any = false;
        for m in self.shared.members.iter().filter(|m| m.local) {
            any = true;
            all.extend(m.store.list_ids().await?);
        }
        if !any {
            return Err(invalid(format!("{}: no local store to list ids from", self.name)));
        }
        all.sort();
        all.dedup();
        Ok(all)
    }

    /// Wait for background repairs started by reads.
    pub async fn wait_repairs(&self) {
        loop {
            let done = self.shared.repairs_done.notified();
            if self.shared.repairs.load(Ordering::SeqCst) == 0 {
                return;
            }
            done.await;
        }
    }
}

impl Shared {
    pub(crate) fn matching(&self, id: &ChunkId) -> impl Iterator<Item = &Member> {
        let p = id.prefix();
        self.members.iter().filter(move |m| m.route.contains(p))
    }

    /// Matching members, local ones first (stable otherwise).
    pub(crate) fn read_order(&self, id: &ChunkId) -> Vec<&Member> {
        let mut v: Vec<&Member> = self.matching(id).collect();
        v.sort_by_key(|m| !m.local);
        v
    }

    pub(crate) fn member(&self, url: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.store.url() == url)
    }
}

#[async_trait]
impl ChunkStore for Router {
    fn url(&self) -> &str {
        &self.name
    }

    async fn get(&self, id: &ChunkId) -> Result<Option<Bytes>> {
        read::get(&self.shared, id).await
    }

    async fn put(&self, id: &ChunkId, blob: Bytes) -> Result<()> {
        write::put(&self.shared, id, blob).await
    }

    async fn has(&self, id: &ChunkId) -> Result<bool> {
        Ok(self.has_many(std::slice::from_ref(id)).await?[0])
    }

    async fn has_many(&self, ids: &[ChunkId]) -> Result<Vec<bool>> {
        read::has_many(&self.shared, ids).await
    }

    async fn has_many_everywhere(&self, ids: &[ChunkId]) -> Result<Vec<bool>> {
        read::has_many_everywhere(&self.shared, ids).await
    }

    async fn delete(&self, id: &ChunkId) -> Result<bool> {
        if let Some(q) = &self.shared.queue {
            let (q, id) = (q.clone(), *id);
            blocking(move || q.forget(&id)).await?;
        }
        let results =
            futures::future::join_all(self.shared.matching(id).map(|m| m.store.delete(id))).await;
        let mut any = false;
        let mut errors = Vec::new();
        for r in results {
            match r {
                Ok(b) => any |= b,
                Err(e) => errors.push(e.chain()),
            }
        }
        if !errors.is_empty() {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!("delete chunk {id}: {}", errors.join("; ")),
            ));
        }
        Ok(any)
    }

    async fn list_ids(&self) -> Result<Vec<ChunkId>> {
        self.local_ids().await
    }

    async fn stats(&self) -> Result<StoreStats> {
        match self.shared.members.first() {
            Some(m) if self.shared.members.len() == 1 => m.store.stats().await,
            _ => Ok(StoreStats::default()),
        }
    }

    async fn sync(&self) -> Result<()> {
        self.wait_repairs().await;
        for m in &self.shared.members {
            m.store.sync().await?;
        }
        Ok(())
    }
}

/// Open a router from URL strings.
pub async fn open_urls(urls: &[String], cfg: &RouterConfig) -> Result<Arc<Router>> {
    let parsed = urls.iter().map(|u| u.parse()).collect::<Result<Vec<StoreUrl>>>()?;
    Router::open(&parsed, cfg).await
}

#[cfg(test)]
mod tests;
