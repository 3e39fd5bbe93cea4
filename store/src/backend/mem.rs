//! An in-memory store for unit tests of the layers above the backends.

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;

use super::{ChunkStore, StoreStats};
use crate::chunk::{ChunkId, MAX_BLOB};
use crate::error::{Result, invalid};

#[derive(Default)]
pub struct MemStore {
    map: Mutex<HashMap<ChunkId, Bytes>>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl ChunkStore for MemStore {
    fn url(&self) -> &str {
        "mem://"
    }

    async fn get(&self, id: &ChunkId) -> Result<Option<Bytes>> {
        Ok(self.map.lock().get(id).cloned())
    }

    async fn put(&self, id: &ChunkId, blob: Bytes) -> Result<()> {
        if blob.len() > MAX_BLOB {
            return Err(invalid(format!("mem://: blob of {} bytes over 8 MiB", blob.len())));
        }
        self.map.lock().entry(*id).or_insert(blob);
        Ok(())
    }

    async fn has(&self, id: &ChunkId) -> Result<bool> {
        Ok(self.map.lock().contains_key(id))
    }

    async fn delete(&self, id: &ChunkId) -> Result<bool> {
        Ok(self.map.lock().remove(id).is_some())
    }

    async fn list_ids(&self) -> Result<Vec<ChunkId>> {
        Ok(self.map.lock().keys().copied().collect())
    }

    async fn stats(&self) -> Result<StoreStats> {
        let map = self.map.lock();
        Ok(StoreStats {
            chunks: map.len() as u64,
            bytes: map.values().map(|b| b.len() as u64).sum(),
            ..Default::default()
        })
    }
}
