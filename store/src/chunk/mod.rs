//! Chunk identities and the convergent chunk codec.
//!
//! * `key = BLAKE3(plaintext)` — only holders of the flist know it;
//! * `blob = header ‖ AES-256-GCM(zstd(plaintext), key)`;
//! * `id = BLAKE3(blob)` — stores index blobs by it and can check a blob
//!   without the key.
//!
//! Identical plaintext gives an identical blob, so chunks dedup across images.

mod codec;

pub use codec::{
    CHUNK_SIZE_MAX, CHUNK_SIZE_MIN, Compression, DEFAULT_CHUNK_SIZE, DEFAULT_LEVEL, EncodedChunk,
    HEADER_LEN, MAX_BLOB, decode, encode, encode_with, verify_blob,
};

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};

macro_rules! hash32 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            pub const LEN: usize = 32;

            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            pub fn from_slice(b: &[u8]) -> Option<Self> {
                Some($name(b.try_into().ok()?))
            }

            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for b in &self.0 {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).map_err(|e| {
                    Error::with_source(
                        ErrorKind::InvalidInput,
                        format!(concat!("bad ", stringify!($name), " {:?} (want 64 hex digits)"), s),
                        e,
                    )
                })?;
                Ok($name(out))
            }
        }
    };
}

hash32!(
    /// BLAKE3 of a stored blob: the key under which every store keeps it.
    ChunkId
);
hash32!(
    /// BLAKE3 of a chunk's plaintext: the AEAD key, known only from the flist.
    ChunkKey
);

impl ChunkId {
    /// The id a blob must have.
    pub fn of_blob(blob: &[u8]) -> ChunkId {
        ChunkId(*blake3::hash(blob).as_bytes())
    }

    /// First byte, used by prefix routes (`00-7f=URL`).
    pub fn prefix(&self) -> u8 {
        self.0[0]
    }
}

/// What an flist records per chunk of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub key: ChunkKey,
    /// Plaintext length of this chunk.
    pub len: u32,
}
