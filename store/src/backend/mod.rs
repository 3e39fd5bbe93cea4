//! The `ChunkStore` trait, what every backend shares, and the `dir://` and
//! in-memory stores. The other backends ([`local`](crate::local),
//! [`node`](crate::node), [`remote`](crate::remote)) build on this module;
//! [`open`](crate::open) picks one for a URL.
//!
//! Backends store opaque blobs under their [`ChunkId`]. They do not verify
//! blobs on `get`; the [`Router`](crate::router::Router), through which every
//! read of the node passes, verifies `BLAKE3(blob) == id` before any use.

pub mod dir;
pub mod mem;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::chunk::ChunkId;
use crate::error::Result;

/// Counters a store can report (`chunkstore stat`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub chunks: u64,
    /// Bytes of live blobs.
    pub bytes: u64,
    /// Bytes the store occupies on disk (live + garbage + framing), if known.
    pub disk_bytes: Option<u64>,
    pub gets: u64,
    pub hits: u64,
    pub puts: u64,
    pub evictions: u64,
    /// The I/O engine in use (local stores).
    pub engine: Option<String>,
    /// Byte budget when used as a cache.
    pub budget: Option<u64>,
}

/// A content-addressed blob store.
///
/// Invariants every backend keeps:
/// * `put` is idempotent: putting an id that exists succeeds and changes nothing;
/// * once `put` returns Ok, the blob survives a crash of this process
///   (for stores that promise durability; remote stores promise what the
///   server promises);
/// * `get` returns exactly the bytes that were put, or `None`;
/// * blobs over [`MAX_BLOB`](crate::chunk::MAX_BLOB) are refused before any I/O.
#[async_trait]
pub trait ChunkStore: Send + Sync + 'static {
    /// The store's URL without password, for messages.
    fn url(&self) -> &str;

    async fn get(&self, id: &ChunkId) -> Result<Option<Bytes>>;

    async fn put(&self, id: &ChunkId, blob: Bytes) -> Result<()>;

    async fn has(&self, id: &ChunkId) -> Result<bool>;

    /// Returns whether the chunk was there.
    async fn delete(&self, id: &ChunkId) -> Result<bool>;

    /// `has` for many ids; backends with a batch command override it.
    async fn has_many(&self, ids: &[ChunkId]) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.has(id).await?);
        }
        Ok(out)
    }

    /// Whether each id is on *every* replica that should hold it: what a
    /// writer asks before skipping an upload. One store: `has_many`; a
    /// router overrides it (its `has_many` answers for readers: any replica).
    async fn has_many_everywhere(&self, ids: &[ChunkId]) -> Result<Vec<bool>> {
        self.has_many(ids).await
    }

    async fn stats(&self) -> Result<StoreStats> {
        Ok(StoreStats::default())
    }

    /// Every id the store holds (`chunkstore repair --all-local`). Stores
    /// that cannot list say so with InvalidInput.
    async fn list_ids(&self) -> Result<Vec<ChunkId>> {
        Err(crate::error::invalid(format!("{}: this store cannot list its chunks", self.url())))
    }

    /// Make every acknowledged put durable (no-op where puts already are).
    async fn sync(&self) -> Result<()> {
        Ok(())
    }
}

/// Shared handle to any store.
pub type DynStore = Arc<dyn ChunkStore>;

/// When the local store makes puts durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SyncPolicy {
    /// A put returns only once its record is on disk (fdatasync; concurrent
    /// puts share one sync: group commit).
    #[default]
    EveryPut,
    /// Puts return once written; the store syncs at this interval (and on
    /// `sync()` / close), like 0-db. A crash may lose the last interval.
    Periodic(std::time::Duration),
}

/// Tunables for opening backends.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Byte budget for a `local://` store used as a cache (None: unbounded).
    pub cache_budget: Option<u64>,
    /// Force the plain pread/pwrite engine instead of probing io_uring.
    pub engine: crate::engine::EngineChoice,
    /// Network timeout per request.
    pub timeout: std::time::Duration,
    /// Connections per remote store.
    pub pool_size: usize,
    /// Attempts per request on a remote store (first try included).
    pub attempts: u32,
    /// Durability of puts to a `local://` store.
    pub sync: SyncPolicy,
    /// Segment file size of a `local://` store (None: 256 MiB, or a
    /// sixteenth of the cache budget).
    pub segment_size: Option<u64>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            cache_budget: None,
            engine: crate::engine::EngineChoice::Auto,
            timeout: std::time::Duration::from_secs(10),
            pool_size: 8,
            attempts: 3,
            sync: SyncPolicy::EveryPut,
            segment_size: None,
        }
    }
}

/// Run blocking filesystem work off the async workers (inline when called
/// outside a runtime, e.g. from a FUSE thread).
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => h.spawn_blocking(f).await.expect("blocking task panicked"),
        Err(_) => f(),
    }
}
