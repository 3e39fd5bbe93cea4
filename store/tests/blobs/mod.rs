//! Deterministic incompressible test data, shared by the store's test
//! files (each includes this module; not every file uses every helper).
#![allow(dead_code)]

use bytes::Bytes;
use zosfs_store::ChunkId;

/// `len` bytes of BLAKE3 output for `seed`: incompressible, reproducible.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut ctr = 0u64;
    while out.len() < len {
        let mut h = blake3::Hasher::new();
        h.update(&seed.to_le_bytes());
        h.update(&ctr.to_le_bytes());
        out.extend_from_slice(h.finalize().as_bytes());
        ctr += 1;
    }
    out.truncate(len);
    out
}

/// A content-addressed blob (id = BLAKE3(blob)).
pub fn blob(seed: u64, len: usize) -> (ChunkId, Bytes) {
    let b = random_bytes(seed, len);
    (ChunkId::of_blob(&b), Bytes::from(b))
}
