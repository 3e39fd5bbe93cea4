//! Where the plaintext of chunk `i` comes from.
//!
//! A [`ChunkSource`] answers two questions per chunk index: is it known to
//! be all zeros (a hole in an image, any chunk of a blank device), and what
//! its plaintext is. [`StoreSource`] fetches `ChunkRef`s from a `DynStore`
//! (the Router in practice) and verifies them; [`BlankSource`] is a device
//! with no image. Other formats (legacy flists with their own codecs) can
//! implement the trait themselves.

use async_trait::async_trait;
use bytes::Bytes;

use super::layout::Layout;
use crate::backend::DynStore;
use crate::chunk::{ChunkRef, decode, verify_blob};
use crate::error::{Error, ErrorKind, Result, corrupt};

/// The plaintext of the chunks of one file or device.
#[async_trait]
pub trait ChunkSource: Send + Sync + 'static {
    /// True when chunk `index` reads as zeros and needs no fetch.
    fn is_zero(&self, index: u64) -> bool;

    /// The plaintext of chunk `index`: exactly `len` bytes, verified.
    /// Only called for chunks where `is_zero` is false.
    async fn fetch(&self, index: u64, len: usize) -> Result<Bytes>;

    /// Names the content: a cache file made for another identity is never
    /// served. Equal identities must mean equal plaintext for every chunk.
    fn identity(&self) -> [u8; 32];

    /// For messages.
    fn describe(&self) -> String;
}

/// What one chunk of a file is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A stored chunk.
    Chunk(ChunkRef),
    /// `len` zero bytes, stored nowhere.
    Zeros(u64),
}

impl Origin {
    pub fn len(&self) -> u64 {
        match self {
            Origin::Chunk(r) => r.len as u64,
            Origin::Zeros(n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Chunks fetched from a store by `(id, key)`; indices past the list read
/// as zeros (a device larger than its image).
pub struct StoreSource {
    store: DynStore,
    chunks: Vec<Origin>,
    identity: [u8; 32],
}

/// The [`ChunkSource::identity`] of chunks stored by `(id, key)` or known
/// to be zeros: [`StoreSource`]'s, and that of any other source of such
/// chunks whose caches must stay valid with it (flist image devices).
pub fn origins_identity(chunks: &[Origin]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"zosfs-lazy-store-source-v1");
    for c in chunks {
        match c {
            Origin::Chunk(r) => {
                h.update(&[1]);
                h.update(r.id.as_bytes());
                h.update(&r.len.to_le_bytes());
            }
            Origin::Zeros(n) => {
                h.update(&[0]);
                h.update(&n.to_le_bytes());
            }
        }
    }
    *h.finalize().as_bytes()
}

impl StoreSource {
    pub fn new(store: DynStore, chunks: Vec<Origin>) -> StoreSource {
        let identity = origins_identity(&chunks);
        StoreSource { store, chunks, identity }
    }

    /// The explicit layout these chunks tile.
    pub fn layout(&self) -> Result<Layout> {
        Layout::from_lens(self.chunks.iter().map(Origin::len))
    }

    pub fn chunks(&self) -> &[Origin] {
        &self.chunks
    }
}

#[async_trait]
impl ChunkSource for StoreSource {
    fn is_zero(&self, index: u64) -> bool {
        !matches!(self.chunks.get(index as usize), Some(Origin::Chunk(_)))
    }

    async fn fetch(&self, index: u64, len: usize) -> Result<Bytes> {
        let Some(Origin::Chunk(r)) = self.chunks.get(index as usize).copied() else {
            return Ok(Bytes::from(vec![0u8; len]));
        };
        // The LazyFile names the index in errors; we name the id.
        if r.len as usize != len {
            return Err(corrupt(format!(
                "chunk {} is {} bytes in the chunk list but {len} in the layout",
                r.id, r.len
            )));
        }
        let blob = self.store.get(&r.id).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("chunk {} is in no store of {}", r.id, self.store.url()),
            )
        })?;
        // Hashing and decrypting a MiB is milliseconds of CPU: off the async workers.
        let plain = crate::backend::blocking(move || -> Result<Vec<u8>> {
            verify_blob(&r.id, &blob)?;
            decode(&blob, &r.key).map_err(|e| e.context_prefix(format!("chunk {}", r.id)))
        })
        .await?;
        if plain.len() != len {
            return Err(corrupt(format!(
                "chunk {} decodes to {} bytes, want {len}",
                r.id,
                plain.len()
            )));
        }
        Ok(Bytes::from(plain))
    }

    fn identity(&self) -> [u8; 32] {
        self.identity
    }

    fn describe(&self) -> String {
        format!("{} chunks from {}", self.chunks.len(), self.store.url())
    }
}

/// A blank device: every chunk is zeros until written.
#[derive(Clone, Copy, Debug, Default)]
pub struct BlankSource;

#[async_trait]
impl ChunkSource for BlankSource {
    fn is_zero(&self, _index: u64) -> bool {
        true
    }

    async fn fetch(&self, _index: u64, len: usize) -> Result<Bytes> {
        Ok(Bytes::from(vec![0u8; len]))
    }

    fn identity(&self) -> [u8; 32] {
        *blake3::hash(b"zosfs-lazy-blank-source-v1").as_bytes()
    }

    fn describe(&self) -> String {
        "blank device".into()
    }
}
