//! File contents: the chunks a file is made of ([`DataChunk`], defined in
//! [`crate::codec`]), fetched from a chunk store and decoded, so readers
//! of any format share `cat`, `unpack` and `verify`.

use std::sync::Arc;

use futures::StreamExt;
use zosfs_store::{ChunkId, ChunkStore};

pub use crate::codec::DataChunk;
use crate::error::{Error, ErrorKind, Result};

/// Shared handle to the store chunks are read from.
pub type Store = Arc<dyn ChunkStore>;

/// Several backends read without the router's BLAKE3 check, for flists
/// whose chunk ids are not BLAKE3 (legacy formats): each
/// [`DataChunk::decode`] checks the blob against its own id instead. A
/// backend without the chunk, or whose copy does not decode, is skipped in
/// favour of the next (see [`fetch`]).
pub struct RawStores {
    members: Vec<(zosfs_store::url::Route, Store)>,
    name: String,
}

impl RawStores {
    pub async fn open(
        urls: &[zosfs_store::StoreUrl],
        opts: &zosfs_store::OpenOptions,
    ) -> Result<RawStores> {
        let mut members = Vec::new();
        for u in urls {
            let s = zosfs_store::open_backend(u, opts).await?;
            members.push((u.route, s));
        }
        let name = urls.iter().map(|u| u.redacted()).collect::<Vec<_>>().join(",");
        Ok(RawStores { members, name })
    }

    fn matching(&self, id: &ChunkId) -> impl Iterator<Item = &Store> {
        self.members.iter().filter(move |(r, _)| r.contains(id.prefix())).map(|(_, s)| s)
    }
}

#[async_trait::async_trait]
impl ChunkStore for RawStores {
    fn url(&self) -> &str {
        &self.name
    }

    async fn get(&self, id: &ChunkId) -> zosfs_store::Result<Option<bytes::Bytes>> {
        let mut last = None;
        for s in self.matching(id) {
            match s.get(id).await {
                Ok(Some(b)) => return Ok(Some(b)),
                Ok(None) => {}
                Err(e) => last = Some(e),
            }
        }
        match last {
            // Named like the router names it.
            Some(e) => Err(e.context_prefix(format!("chunk {id}"))),
            None => Ok(None),
        }
    }

    async fn put(&self, id: &ChunkId, _blob: bytes::Bytes) -> zosfs_store::Result<()> {
        Err(zosfs_store::Error::new(
            zosfs_store::ErrorKind::InvalidInput,
            format!("{}: read-only legacy store view (chunk {id})", self.name),
        ))
    }

    async fn has(&self, id: &ChunkId) -> zosfs_store::Result<bool> {
        for s in self.matching(id) {
            if s.has(id).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn delete(&self, _id: &ChunkId) -> zosfs_store::Result<bool> {
        Ok(false)
    }
}

/// Fetch one chunk and decode it (decoding runs off the async workers).
pub async fn fetch(store: &Store, chunk: &DataChunk) -> Result<Vec<u8>> {
    let id = chunk.store_id();
    // The store names the chunk in its errors.
    let blob =
        store.get(&id).await.map_err(|e| Error::wrap(ErrorKind::Store, e))?.ok_or_else(|| {
            Error::new(ErrorKind::Store, format!("chunk {id} is missing from {}", store.url()))
        })?;
    let chunk = chunk.clone();
    tokio::task::spawn_blocking(move || chunk.decode(&blob))
        .await
        .map_err(|e| Error::with_source(ErrorKind::Io, "decode task", e))?
}

/// The plaintext of a file's chunks in order, `ahead` fetches in flight.
/// Memory is bounded by `ahead` chunks whatever the file size.
pub fn stream_file(
    store: Store,
    chunks: Vec<DataChunk>,
    ahead: usize,
) -> impl futures::Stream<Item = Result<Vec<u8>>> {
    futures::stream::iter(chunks)
        .map(move |c| {
            let store = store.clone();
            async move { fetch(&store, &c).await }
        })
        .buffered(ahead.max(1))
}
