//! rfs `.fl` blocks: key = BLAKE2b-256(plain); blob =
//! AES-256-GCM(snappy(plain)) with that key and its first 12 bytes as
//! nonce; id = BLAKE2b-256(blob).

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};

use super::snappy_plain;
use crate::error::{Error, ErrorKind, Result};

fn blake2b256(data: &[u8]) -> [u8; 32] {
    Blake2b::<U32>::digest(data).into()
}

/// Encode one block the rfs way: (id, key, blob).
pub fn encode_block(plain: &[u8]) -> Result<([u8; 32], [u8; 32], Vec<u8>)> {
    let key = blake2b256(plain);
    let compressed = snap::raw::Encoder::new()
        .compress_vec(plain)
        .map_err(|e| Error::with_source(ErrorKind::InvalidInput, "snappy compress", e))?;
    let cipher = Aes256Gcm::new(key.as_slice().into());
    let blob = cipher
        .encrypt(Nonce::from_slice(&key[..12]), compressed.as_slice())
        .map_err(|_| Error::new(ErrorKind::Io, "AES-GCM encrypt failed"))?;
    Ok((blake2b256(&blob), key, blob))
}

/// Check and decode one rfs block.
pub fn decode_block(id: &[u8; 32], key: &[u8; 32], blob: &[u8]) -> Result<Vec<u8>> {
    let bad =
        |why: &str| Error::new(ErrorKind::Store, format!("rfs block {}: {why}", hex::encode(id)));
    if &blake2b256(blob) != id {
        return Err(bad("blob does not hash to its id (BLAKE2b-256)"));
    }
    let cipher = Aes256Gcm::new(key.as_slice().into());
    let compressed = cipher
        .decrypt(Nonce::from_slice(&key[..12]), blob)
        .map_err(|_| bad("AES-GCM authentication failed (wrong key or damaged)"))?;
    let plain = snappy_plain(&compressed).map_err(bad)?;
    if &blake2b256(&plain) != key {
        return Err(bad("plaintext does not hash to its key"));
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_codec_round_trip_and_damage() {
        let plain = b"rfs block ".repeat(1000);
        let (id, key, blob) = encode_block(&plain).unwrap();
        assert_eq!(decode_block(&id, &key, &blob).unwrap(), plain);
        let mut bad = blob.clone();
        bad[3] ^= 1;
        assert!(decode_block(&id, &key, &bad).is_err());
        let (_, other_key, _) = encode_block(b"x").unwrap();
        assert!(decode_block(&id, &other_key, &blob).is_err());
    }
}
