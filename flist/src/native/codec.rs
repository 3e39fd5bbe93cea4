//! Value encoding: bincode with a size limit, so a damaged or hostile
//! database can neither panic the reader nor make it allocate without bound.

use serde::Serialize;
use serde::de::DeserializeOwned;

use bincode::Options;

use crate::error::{Error, ErrorKind, Result};

/// No single value of a valid flist is near this.
const LIMIT: u64 = 64 << 20;

fn opts() -> impl Options {
    bincode::DefaultOptions::new().with_limit(LIMIT).reject_trailing_bytes()
}

pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    opts().serialize(v).map_err(|e| Error::with_source(ErrorKind::InvalidInput, "encode value", e))
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: impl FnOnce() -> String) -> Result<T> {
    opts().deserialize(bytes).map_err(|e| Error::with_source(ErrorKind::Corrupt, what(), e))
}
