//! A regular file of an flist as the chunk source of a `LazyFile`: the one
//! source both views read through (fsmount per file content, nbdserver per
//! image device). Chunks are fetched from the flist's stores
//! ([`crate::stores`]) and decoded with the flist's codec
//! ([`DataChunk::decode`]).
//!
//! What a file is made of ([`FileChunks`]) is fixed without a store: its
//! pieces, chunk boundaries and identity. The two views name and lay out
//! their caches differently, and each keeps its own so that caches made
//! before stay valid:
//!
//! * [`FileChunks::content`] (fsmount): every chunk is fetched, boundaries
//!   are explicit, the identity is [`content_id`] (also the name of the
//!   cache file);
//! * [`FileChunks::image`] (nbdserver): a native chunk whose key is the
//!   BLAKE3 of all-zero plaintext reads as zeros without a fetch (commit
//!   does not upload it again), boundaries are fixed where the header's
//!   chunking allows, the identity is the store's
//!   [`origins_identity`](zosfs_store::lazy::origins_identity).

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;
use zosfs_store::chunk::CHUNK_SIZE_MAX;
use zosfs_store::lazy::{ChunkSource, Layout, Origin, origins_identity};
use zosfs_store::{ChunkKey, ChunkRef};

use crate::content::{DataChunk, Store, fetch};
use crate::error::{Result, invalid};
use crate::model::Chunking;

/// One chunk of a file as a source sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Fetched from a store and decoded.
    Chunk(DataChunk),
    /// `len` zero bytes, fetched from nowhere.
    Zeros(u64),
}

impl Piece {
    pub fn len(&self) -> u64 {
        match self {
            Piece::Chunk(c) => c.len(),
            Piece::Zeros(n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The pieces of one file, their boundaries and the identity of the content.
#[derive(Clone, Debug)]
pub struct FileChunks {
    pieces: Vec<Piece>,
    layout: Layout,
    identity: [u8; 32],
}

impl FileChunks {
    /// A file's content as fsmount shows it: every chunk fetched.
    pub fn content(chunks: Vec<DataChunk>) -> Result<FileChunks> {
        let identity = content_id(&chunks);
        let layout = Layout::from_lens(chunks.iter().map(DataChunk::len))?;
        Ok(FileChunks { pieces: chunks.into_iter().map(Piece::Chunk).collect(), layout, identity })
    }

    /// A disk image as nbdserver serves it: all-zero chunks are holes. The
    /// chunks must be native (commit reuses their references).
    pub fn image(chunks: Vec<DataChunk>, chunking: &Chunking) -> Result<FileChunks> {
        let mut zeros = ZeroKeys::default();
        let origins = chunks
            .iter()
            .map(|c| match c {
                DataChunk::Zck1(r) if zeros.is_zero(r) => Ok(Origin::Zeros(u64::from(r.len))),
                DataChunk::Zck1(r) => Ok(Origin::Chunk(*r)),
                _ => Err(invalid(
                    "chunks in a legacy codec; convert the flist first (flist convert)",
                )),
            })
            .collect::<Result<Vec<Origin>>>()?;
        let layout = compact_layout(chunking, &origins)?;
        let identity = origins_identity(&origins);
        let pieces = chunks
            .into_iter()
            .zip(&origins)
            .map(|(c, o)| match o {
                Origin::Zeros(n) => Piece::Zeros(*n),
                Origin::Chunk(_) => Piece::Chunk(c),
            })
            .collect();
        Ok(FileChunks { pieces, layout, identity })
    }

    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// Chunk boundaries for the LazyFile.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Names the content (see [`ChunkSource::identity`]).
    pub fn identity(&self) -> [u8; 32] {
        self.identity
    }

    /// Plaintext bytes of the file.
    pub fn size(&self) -> u64 {
        self.layout.size()
    }
}

/// The chunks of one file, fetched from `store`. Indices past the pieces
/// read as zeros (a device larger than its image).
pub struct FileSource {
    store: Store,
    chunks: FileChunks,
}

impl FileSource {
    pub fn new(store: Store, chunks: FileChunks) -> FileSource {
        FileSource { store, chunks }
    }

    pub fn chunks(&self) -> &FileChunks {
        &self.chunks
    }
}

#[async_trait]
impl ChunkSource for FileSource {
    fn is_zero(&self, index: u64) -> bool {
        !matches!(self.chunks.pieces.get(index as usize), Some(Piece::Chunk(_)))
    }

    async fn fetch(&self, index: u64, len: usize) -> zosfs_store::Result<Bytes> {
        let Some(Piece::Chunk(chunk)) = self.chunks.pieces.get(index as usize) else {
            // Zero pieces are at most a chunk long (see `ZeroKeys`); the
            // LazyFile asks for no more than one chunk at a time.
            if len > CHUNK_SIZE_MAX {
                return Err(zosfs_store::Error::new(
                    zosfs_store::ErrorKind::InvalidInput,
                    format!("zero chunk {index} of {len} bytes is larger than a chunk"),
                ));
            }
            return Ok(Bytes::from(vec![0u8; len]));
        };
        // Whatever the reason, the data did not arrive: never a "not found"
        // that could read as a missing file. The LazyFile names the index,
        // the error the chunk.
        let plain = fetch(&self.store, chunk)
            .await
            .map_err(|e| zosfs_store::Error::wrap(zosfs_store::ErrorKind::Unavailable, e))?;
        if plain.len() != len {
            return Err(zosfs_store::Error::new(
                zosfs_store::ErrorKind::Corrupt,
                format!("chunk {}: {} bytes, want {len}", chunk.store_id(), plain.len()),
            ));
        }
        Ok(Bytes::from(plain))
    }

    fn identity(&self) -> [u8; 32] {
        self.chunks.identity
    }

    fn describe(&self) -> String {
        format!("{} chunks from {}", self.chunks.pieces.len(), self.store.url())
    }
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

/// Keys of all-zero chunks, per length (almost every chunk has one length).
/// A chunk's key is the BLAKE3 of its plaintext.
#[derive(Default)]
struct ZeroKeys(HashMap<u32, ChunkKey>);

impl ZeroKeys {
    /// Whether `r` is an all-zero chunk. A length over the largest chunk
    /// (an flist may claim up to 4 GiB) is never one: such a chunk is
    /// fetched and refused by its length check, and no zeros are made.
    fn is_zero(&mut self, r: &ChunkRef) -> bool {
        if r.len as usize > CHUNK_SIZE_MAX {
            return false;
        }
        let key = self.0.entry(r.len).or_insert_with(|| zero_key(u64::from(r.len)));
        *key == r.key
    }
}

/// The key (BLAKE3) of `len` zero bytes, hashed from one small buffer.
fn zero_key(len: u64) -> ChunkKey {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let mut h = blake3::Hasher::new();
    let mut left = len;
    while left > 0 {
        let n = left.min(ZEROS.len() as u64) as usize;
        h.update(&ZEROS[..n]);
        left -= n as u64;
    }
    ChunkKey(*h.finalize().as_bytes())
}

/// The layout of `origins`: fixed when every chunk but the last has the
/// header's fixed size (compact in memory), explicit otherwise.
fn compact_layout(chunking: &Chunking, origins: &[Origin]) -> Result<Layout> {
    let size: u64 = origins.iter().map(Origin::len).sum();
    if let Chunking::Fixed { size: cs } = *chunking {
        let n = origins.len();
        let regular = origins.iter().take(n.saturating_sub(1)).all(|o| o.len() == u64::from(cs));
        let last_ok = origins.last().is_none_or(|o| o.len() <= u64::from(cs));
        if regular && last_ok {
            if let Ok(l) = Layout::fixed(cs, size) {
                return Ok(l);
            }
        }
    }
    Ok(Layout::from_lens(origins.iter().map(Origin::len))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zosfs_store::ChunkId;

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

    #[test]
    fn image_chunks_know_zeros_and_keep_the_store_identity() {
        let zero = zosfs_store::chunk::encode(&[0u8; 4096]).unwrap().chunk;
        let data = zosfs_store::chunk::encode(&[1u8; 4096]).unwrap().chunk;
        let chunks = vec![DataChunk::Zck1(data), DataChunk::Zck1(zero)];
        let fixed = Chunking::Fixed { size: 4096 };
        let img = FileChunks::image(chunks.clone(), &fixed).unwrap();
        assert_eq!(img.pieces()[1], Piece::Zeros(4096));
        let origins = [Origin::Chunk(data), Origin::Zeros(4096)];
        assert_eq!(img.identity(), origins_identity(&origins));
        assert_eq!(*img.layout(), Layout::fixed(4096, 8192).unwrap());
        // A content fetches every chunk and is named by its chunk list.
        let content = FileChunks::content(chunks.clone()).unwrap();
        assert!(content.pieces().iter().all(|p| matches!(p, Piece::Chunk(_))));
        assert_eq!(content.identity(), content_id(&chunks));
        // Legacy chunks make no image.
        let rfs = DataChunk::Rfs { id: [1; 32], key: [2; 32], len: 10 };
        assert!(FileChunks::image(vec![rfs], &fixed).is_err());
    }

    #[test]
    fn compact_layouts() {
        let z = |n| Origin::Zeros(n);
        let fixed = Chunking::Fixed { size: 4096 };
        let l = compact_layout(&fixed, &[z(4096), z(4096), z(100)]).unwrap();
        assert_eq!(l, Layout::fixed(4096, 8292).unwrap());
        // Irregular chunks fall back to explicit boundaries.
        let l = compact_layout(&fixed, &[z(4096), z(100), z(4096)]).unwrap();
        assert_eq!(l.count(), 3);
        assert!(l.fixed_chunk_size().is_none());
    }
}
