//! Where the chunks of one file content come from: the chunk list of an
//! flist file (any format), fetched and decoded through the mount's store.
//!
//! A content is shared by every mount that shows it, but counters are per
//! mount: each fetch is counted for the mount that read the content last
//! ([`Attribution`]); the read that triggers a fetch (or its read-ahead)
//! sets it just before, so single-mount figures are exact and concurrent
//! readers of one content in two mounts split them roughly.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use zosfs_flist::DataChunk;
use zosfs_flist::content::Store;
use zosfs_store::lazy::{ChunkSource, Layout};

use crate::stats::Counters;

/// The counters of the mount that reads a content right now.
#[derive(Default)]
pub struct Attribution(Mutex<Option<Arc<Counters>>>);

impl Attribution {
    pub fn set(&self, c: &Arc<Counters>) {
        let mut cur = self.0.lock();
        if !cur.as_ref().is_some_and(|x| Arc::ptr_eq(x, c)) {
            *cur = Some(c.clone());
        }
    }

    fn get(&self) -> Option<Arc<Counters>> {
        self.0.lock().clone()
    }
}

/// The chunks of one file content.
pub struct FlistSource {
    store: Store,
    chunks: Vec<DataChunk>,
    identity: [u8; 32],
    pub attribution: Attribution,
}

/// Names a content by its chunk list: equal lists mean equal plaintext
/// (a chunk's store id fixes its blob, and its key and length its plaintext).
pub fn content_id(chunks: &[DataChunk]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"zosfs-fsmount-content-v1");
    for c in chunks {
        match c {
            DataChunk::Zck1(r) => {
                h.update(&[1]);
                h.update(r.id.as_bytes());
                h.update(r.key.as_bytes());
                h.update(&r.len.to_le_bytes());
            }
            DataChunk::Rfs { id, key, len } => {
                h.update(&[2]);
                h.update(id);
                h.update(key);
                h.update(&len.to_le_bytes());
            }
            DataChunk::ZeroFs(b) => {
                let (id, key) = (b.id.as_slice(), b.key.as_slice());
                h.update(&[3, id.len() as u8, key.len() as u8]);
                h.update(id);
                h.update(key);
                h.update(&b.len.to_le_bytes());
            }
        }
    }
    *h.finalize().as_bytes()
}

impl FlistSource {
    pub fn new(store: Store, chunks: Vec<DataChunk>) -> FlistSource {
        let identity = content_id(&chunks);
        FlistSource { store, chunks, identity, attribution: Attribution::default() }
    }

    /// Chunk boundaries: the flist's own (fixed or content-defined).
    pub fn layout(&self) -> zosfs_store::Result<Layout> {
        Layout::from_lens(self.chunks.iter().map(DataChunk::len))
    }
}

#[async_trait]
impl ChunkSource for FlistSource {
    fn is_zero(&self, _index: u64) -> bool {
        false
    }

    async fn fetch(&self, index: u64, len: usize) -> zosfs_store::Result<Bytes> {
        let counters = self.attribution.get();
        let Some(chunk) = self.chunks.get(index as usize) else {
            return Err(zosfs_store::Error::new(
                zosfs_store::ErrorKind::InvalidInput,
                format!("chunk {index} is past the chunk list"),
            ));
        };
        let started = Instant::now();
        let res = zosfs_flist::content::fetch(&self.store, chunk).await;
        match res {
            Ok(plain) if plain.len() == len => {
                if let Some(c) = counters {
                    Counters::add(&c.chunks_fetched, 1);
                    Counters::add(&c.bytes_fetched, len as u64);
                    c.fetch_latency.observe(started.elapsed());
                }
                Ok(Bytes::from(plain))
            }
            Ok(plain) => Err(zosfs_store::Error::new(
                zosfs_store::ErrorKind::Corrupt,
                format!("chunk {index}: {} bytes, want {len}", plain.len()),
            )),
            Err(e) => {
                if let Some(c) = counters {
                    Counters::add(&c.fetch_errors, 1);
                }
                // Whatever the reason, the data did not arrive: never a
                // "not found" that could read as a missing file. The
                // LazyFile names the index, the error the chunk.
                Err(zosfs_store::Error::wrap(zosfs_store::ErrorKind::Unavailable, e))
            }
        }
    }

    fn identity(&self) -> [u8; 32] {
        self.identity
    }

    fn describe(&self) -> String {
        format!("{} chunks from {}", self.chunks.len(), self.store.url())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zosfs_store::{ChunkId, ChunkKey, ChunkRef};

    fn chunk(b: u8, len: u32) -> DataChunk {
        DataChunk::Zck1(ChunkRef { id: ChunkId([b; 32]), key: ChunkKey([b ^ 0x55; 32]), len })
    }

    #[test]
    fn content_ids_name_chunk_lists() {
        let a = vec![chunk(1, 10), chunk(2, 20)];
        assert_eq!(content_id(&a), content_id(&a.clone()));
        // Order, length and membership all matter.
        assert_ne!(content_id(&a), content_id(&[chunk(2, 20), chunk(1, 10)]));
        assert_ne!(content_id(&a), content_id(&[chunk(1, 10), chunk(2, 21)]));
        assert_ne!(content_id(&a), content_id(&a[..1]));
        // The same bytes as a legacy chunk are another content.
        let rfs = DataChunk::Rfs { id: [1; 32], key: [1 ^ 0x55; 32], len: 10 };
        assert_ne!(content_id(&a[..1]), content_id(&[rfs]));
    }
}
