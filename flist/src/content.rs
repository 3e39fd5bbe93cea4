//! File contents: the chunks a file is made of, fetched from a chunk store
//! and decoded. Every format's chunk kind lives here so readers of any
//! format share `cat`, `unpack` and `verify`.

use std::sync::Arc;

use futures::StreamExt;
use zosfs_store::{ChunkId, ChunkRef, ChunkStore};

use crate::error::{Error, ErrorKind, Result};

/// One chunk of a file, in the codec of the flist it came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DataChunk {
    /// Native zosfs chunk (ZCK1 codec).
    Zck1(ChunkRef),
}

impl DataChunk {
    /// The id a store keeps the blob under.
    pub fn store_id(&self) -> ChunkId {
        match self {
            DataChunk::Zck1(c) => c.id,
        }
    }

    /// Plaintext bytes of this chunk.
    pub fn len(&self) -> u64 {
        match self {
            DataChunk::Zck1(c) => u64::from(c.len),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decode a blob (already checked against its id by the router) into
    /// plaintext, checking the plaintext hash and length.
    pub fn decode(&self, blob: &[u8]) -> Result<Vec<u8>> {
        let plain = match self {
            DataChunk::Zck1(c) => zosfs_store::chunk::decode(blob, &c.key)
                .map_err(|e| Error::with_source(ErrorKind::Store, format!("chunk {}", c.id), e))?,
        };
        if plain.len() as u64 != self.len() {
            return Err(Error::new(
                ErrorKind::Store,
                format!(
                    "chunk {}: {} plaintext bytes, the flist says {}",
                    self.store_id(),
                    plain.len(),
                    self.len()
                ),
            ));
        }
        Ok(plain)
    }

    /// The native reference, if this is a native chunk.
    pub fn as_native(&self) -> Option<&ChunkRef> {
        match self {
            DataChunk::Zck1(c) => Some(c),
        }
    }
}

/// Shared handle to the store chunks are read from.
pub type Store = Arc<dyn ChunkStore>;

/// Fetch one chunk and decode it (decoding runs off the async workers).
pub async fn fetch(store: &Store, chunk: &DataChunk) -> Result<Vec<u8>> {
    let id = chunk.store_id();
    let blob = store
        .get(&id)
        .await
        .map_err(|e| Error::with_source(ErrorKind::Store, format!("fetch chunk {id}"), e))?
        .ok_or_else(|| {
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
