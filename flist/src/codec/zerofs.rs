//! 0-fs file blocks: `key = BLAKE2b-128(plain)`, `blob = XXTEA(snappy(plain),
//! key)`, `id = BLAKE2b-128(blob)`; blocks are 512 KiB of plaintext (the
//! last one shorter) unless `File.blockSize` says otherwise (4 KiB units).
//!
//! Stores keep 0-fs blobs under the 16-byte id; zosfs stores key every blob
//! by a 32-byte [`ChunkId`], so a 0-fs blob lives under its id followed by
//! 16 zero bytes ([`Block::store_id`]). Ids and keys of 32 bytes (some
//! older writers used BLAKE2b-256) are used as they are.

use blake2::Blake2bVar;
use blake2::digest::{Update, VariableOutput};
use zosfs_store::ChunkId;

use super::{MAX_PLAIN, snappy_plain, xxtea};
use crate::error::{Error, ErrorKind, Result};

/// Plaintext bytes per block when the file record does not say.
pub const DEFAULT_BLOCK_SIZE: u64 = 512 << 10;

/// A BLAKE2b hash of 16 or 32 bytes, as 0-fs records keep them.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hash {
    len: u8,
    bytes: [u8; 32],
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hash({})", hex::encode(self.as_slice()))
    }
}

impl Hash {
    /// A 16- or 32-byte hash.
    pub fn from_slice(b: &[u8]) -> Option<Hash> {
        if b.len() != 16 && b.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 32];
        bytes[..b.len()].copy_from_slice(b);
        Some(Hash { len: b.len() as u8, bytes })
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// BLAKE2b of `data` with this hash's length.
    fn of_same_len(&self, data: &[u8]) -> Hash {
        blake2b(data, usize::from(self.len))
    }
}

/// BLAKE2b with an `n`-byte digest (16 or 32), no key.
pub fn blake2b(data: &[u8], n: usize) -> Hash {
    let mut h = Blake2bVar::new(n).expect("16 and 32 are valid BLAKE2b lengths");
    h.update(data);
    let mut bytes = [0u8; 32];
    h.finalize_variable(&mut bytes[..n]).expect("buffer of the requested length");
    Hash { len: n as u8, bytes }
}

/// One block of a 0-fs file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Block {
    pub id: Hash,
    pub key: Hash,
    /// Plaintext bytes.
    pub len: u32,
}

impl Block {
    /// The id a zosfs store keeps the blob under (see the module doc).
    pub fn store_id(&self) -> ChunkId {
        ChunkId(self.id.bytes)
    }

    /// Check a blob against the id, decrypt, decompress and check the
    /// plaintext against the key.
    pub fn decode(&self, blob: &[u8]) -> Result<Vec<u8>> {
        let bad = |why: &str| {
            Error::new(
                ErrorKind::Store,
                format!("0-fs block {}: {why}", hex::encode(self.id.as_slice())),
            )
        };
        if self.id.of_same_len(blob) != self.id {
            return Err(bad("blob does not hash to its id (BLAKE2b)"));
        }
        let compressed = xxtea::decrypt(blob, self.key.as_slice())
            .map_err(|e| bad(&format!("{} (wrong key or damaged)", e.context())))?;
        let plain = snappy_plain(&compressed).map_err(bad)?;
        if self.key.of_same_len(&plain) != self.key {
            return Err(bad("plaintext does not hash to its key"));
        }
        Ok(plain)
    }
}

/// Encode one block the 0-fs way: (block, blob). `hash_len` is 16 as
/// 0-flist writes them.
pub fn encode_block(plain: &[u8], hash_len: usize) -> Result<(Block, Vec<u8>)> {
    let len = u32::try_from(plain.len())
        .ok()
        .filter(|l| *l as usize <= MAX_PLAIN)
        .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "0-fs block over 8 MiB"))?;
    let key = blake2b(plain, hash_len);
    let compressed = snap::raw::Encoder::new()
        .compress_vec(plain)
        .map_err(|e| Error::with_source(ErrorKind::InvalidInput, "snappy compress", e))?;
    let blob = xxtea::encrypt(&compressed, key.as_slice())?;
    let id = blake2b(&blob, hash_len);
    Ok((Block { id, key, len }, blob))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_round_trip_and_damage() {
        for hash_len in [16, 32] {
            let plain = b"0-fs block ".repeat(5000);
            let (blk, blob) = encode_block(&plain, hash_len).unwrap();
            assert_eq!(blk.id.as_slice().len(), hash_len);
            assert_eq!(blk.decode(&blob).unwrap(), plain);
            let mut bad = blob.clone();
            bad[5] ^= 1;
            assert!(blk.decode(&bad).unwrap_err().to_string().contains("does not hash"));
            // Right id, wrong key: caught by XXTEA's length word or the key hash.
            let (other, _) = encode_block(b"x", hash_len).unwrap();
            let wrong = Block { key: other.key, ..blk.clone() };
            assert!(wrong.decode(&blob).is_err());
        }
        // The store id of a 16-byte id is the id padded with zeros.
        let (blk, _) = encode_block(b"abc", 16).unwrap();
        let sid = blk.store_id();
        assert_eq!(&sid.0[..16], blk.id.as_slice());
        assert_eq!(sid.0[16..], [0u8; 16]);
    }

    /// BLAKE2b-128 of the empty string (the root directory's key), checked
    /// against Python's hashlib.
    #[test]
    fn blake2b_128_of_empty_path() {
        assert_eq!(hex::encode(blake2b(b"", 16).as_slice()), "cae66941d9efbd404e4d88758ea67670");
    }
}
