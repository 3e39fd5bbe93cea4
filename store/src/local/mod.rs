//! `local://PATH`: the node's own chunk store (append-only segments,
//! CRC-framed records, persistent index, byte budget with LRU eviction).
//!
//! Placeholder until the local store lands: opening fails with a clear error.

use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;

use crate::backend::{ChunkStore, OpenOptions};
use crate::chunk::ChunkId;
use crate::error::{Error, ErrorKind, Result};

pub struct LocalStore {
    name: String,
}

impl LocalStore {
    pub fn open(path: &Path, _opts: &OpenOptions) -> Result<Self> {
        Err(Error::new(
            ErrorKind::Unavailable,
            format!("local://{}: the local store is not built yet", path.display()),
        ))
    }
}

#[async_trait]
impl ChunkStore for LocalStore {
    fn url(&self) -> &str {
        &self.name
    }
    async fn get(&self, _id: &ChunkId) -> Result<Option<Bytes>> {
        Ok(None)
    }
    async fn put(&self, _id: &ChunkId, _blob: Bytes) -> Result<()> {
        Ok(())
    }
    async fn has(&self, _id: &ChunkId) -> Result<bool> {
        Ok(false)
    }
    async fn delete(&self, _id: &ChunkId) -> Result<bool> {
        Ok(false)
    }
}
