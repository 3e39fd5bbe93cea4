//! Value encoding: bincode with a size limit, so a damaged or hostile
//! database can neither panic the reader nor make it allocate without bound.
//!
//! Two ways to decode: [`decode_exact`] for a layout this build knows in
//! full (a trailing byte means damage), [`decode_prefix`] for a record a
//! newer minor version wrote (fields it appended are skipped).

use serde::Serialize;
use serde::de::DeserializeOwned;

use bincode::Options;

use crate::error::{Error, ErrorKind, Result};

/// No single value of a valid flist is near this.
const LIMIT: u64 = 64 << 20;

fn opts() -> impl Options {
    bincode::DefaultOptions::new().with_limit(LIMIT)
}

/// Append the encoding of `v` to `out`.
pub fn encode_into<T: Serialize>(out: &mut Vec<u8>, v: &T) -> Result<()> {
    opts()
        .serialize_into(out, v)
        .map_err(|e| Error::with_source(ErrorKind::InvalidInput, "encode value", e))
}

/// Decode a value that must use every byte.
pub fn decode_exact<T: DeserializeOwned>(bytes: &[u8], what: impl FnOnce() -> String) -> Result<T> {
    opts()
        .reject_trailing_bytes()
        .deserialize(bytes)
        .map_err(|e| Error::with_source(ErrorKind::Corrupt, what(), e))
}

/// Decode a value from the start of `bytes`, ignoring what follows it.
pub fn decode_prefix<T: DeserializeOwned>(
    bytes: &[u8],
    what: impl FnOnce() -> String,
) -> Result<T> {
    opts()
        .allow_trailing_bytes()
        .deserialize(bytes)
        .map_err(|e| Error::with_source(ErrorKind::Corrupt, what(), e))
}
