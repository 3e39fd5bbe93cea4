//! Where the chunks of one file content come from: the chunk list of an
//! flist file (any format), fetched and decoded through the mount's store
//! by the flist crate's [`FileSource`], counted here for the mounts.
//!
//! A content is shared by every mount that shows it, but counters are per
//! mount: each fetch is counted for the mount that read the content last
//! ([`Attribution`]); the read that triggers a fetch (or its read-ahead)
//! sets it just before, so single-mount figures are exact and concurrent
//! readers of one content in two mounts split them roughly.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use zosfs_flist::content::Store;
use zosfs_flist::source::{FileChunks, FileSource};
use zosfs_store::lazy::{ChunkSource, Layout};

use crate::stats::Counters;

/// The counters of the mount that reads a content right now.
#[derive(Default)]
pub struct Attribution(Mutex<Option<Arc<Counters>>>);

impl Attribution {
    pub fn set(&self, c: &Arc<Counters>) {
        let mut cur = self.0.lock();
        if !cur.as_ref().is_some_and(|x| Arc::ptr_eq(x, c)) {
            *cur = Some(c.clone());
        }
    }

    fn get(&self) -> Option<Arc<Counters>> {
        self.0.lock().clone()
    }
}

/// The chunks of one file content.
pub struct FlistSource {
    inner: FileSource,
    pub attribution: Attribution,
}

impl FlistSource {
    pub fn new(store: Store, chunks: FileChunks) -> FlistSource {
        FlistSource { inner: FileSource::new(store, chunks), attribution: Attribution::default() }
    }

    /// Chunk boundaries: the flist's own (fixed or content-defined).
    pub fn layout(&self) -> Layout {
        self.inner.chunks().layout().clone()
    }
}

#[async_trait]
impl ChunkSource for FlistSource {
    fn is_zero(&self, index: u64) -> bool {
        self.inner.is_zero(index)
    }

    async fn fetch(&self, index: u64, len: usize) -> zosfs_store::Result<Bytes> {
        let counters = self.attribution.get();
        let started = Instant::now();
        let res = self.inner.fetch(index, len).await;
        if let Some(c) = counters {
            match &res {
                Ok(_) => {
                    Counters::add(&c.chunks_fetched, 1);
                    Counters::add(&c.bytes_fetched, len as u64);
                    c.fetch_latency.observe(started.elapsed());
                }
                Err(_) => Counters::add(&c.fetch_errors, 1),
            }
        }
        res
    }

    fn identity(&self) -> [u8; 32] {
        self.inner.identity()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}
