//! Chunk codecs of every flist format: how a chunk's blob is checked
//! against its id, decrypted, decompressed and checked against its key.
//! [`DataChunk`] names one chunk in the codec of the flist it came from.
//!
//! * native zosfs chunks (ZCK1): [`zosfs_store::chunk`];
//! * [`rfs`] — rfs `.fl` blocks: BLAKE2b-256, snappy, AES-256-GCM;
//! * [`zerofs`] + [`xxtea`] — 0-fs `.flist` blocks: BLAKE2b-128, snappy,
//!   XXTEA.
//!
//! This module knows no flist format's metadata: [`crate::content`]
//! fetches chunks, [`crate::legacy`] and [`crate::native`] read flists.

pub mod rfs;
pub mod xxtea;
pub mod zerofs;

use zosfs_store::{ChunkId, ChunkRef};

use crate::error::{Error, ErrorKind, Result};

/// One chunk of a file, in the codec of the flist it came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DataChunk {
    /// Native zosfs chunk (ZCK1 codec).
    Zck1(ChunkRef),
    /// rfs `.fl` block: id = BLAKE2b-256(blob), key = BLAKE2b-256(plain).
    Rfs { id: [u8; 32], key: [u8; 32], len: u32 },
    /// 0-fs `.flist` block: BLAKE2b-128 (or -256) id and key, snappy, XXTEA.
    ZeroFs(zerofs::Block),
}

impl DataChunk {
    /// The id a store keeps the blob under.
    pub fn store_id(&self) -> ChunkId {
        match self {
            DataChunk::Zck1(c) => c.id,
            DataChunk::Rfs { id, .. } => ChunkId(*id),
            DataChunk::ZeroFs(b) => b.store_id(),
        }
    }

    /// Plaintext bytes of this chunk.
    pub fn len(&self) -> u64 {
        match self {
            DataChunk::Zck1(c) => u64::from(c.len),
            DataChunk::Rfs { len, .. } => u64::from(*len),
            DataChunk::ZeroFs(b) => u64::from(b.len),
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
            DataChunk::Rfs { id, key, .. } => rfs::decode_block(id, key, blob)?,
            DataChunk::ZeroFs(b) => b.decode(blob)?,
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
            _ => None,
        }
    }
}

/// Largest plaintext a legacy chunk may claim (0-db's value limit).
pub(crate) const MAX_PLAIN: usize = 8 << 20;

/// Snappy-decompress a legacy chunk's plaintext, refusing claims over
/// [`MAX_PLAIN`] before allocating; Err is the reason, for the caller's
/// message.
pub(crate) fn snappy_plain(compressed: &[u8]) -> std::result::Result<Vec<u8>, &'static str> {
    let len = snap::raw::decompress_len(compressed).map_err(|_| "bad snappy header")?;
    if len > MAX_PLAIN {
        return Err("claims more than 8 MiB of plaintext");
    }
    snap::raw::Decoder::new().decompress_vec(compressed).map_err(|_| "snappy data is damaged")
}
