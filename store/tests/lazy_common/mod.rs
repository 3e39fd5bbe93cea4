//! Shared set-up of the LazyFile tests: content stored as chunks in a
//! MemStore (or a dir store) behind a DelayStore, and a temp dir for the cache.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zosfs_store::DynStore;
use zosfs_store::backend::mem::MemStore;
use zosfs_store::lazy::testing::{DelayStore, put_chunks, sample_bytes};
use zosfs_store::lazy::{ChunkSource, Layout, LazyFile, LazyOptions, Origin, StoreSource};

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub store: Arc<DelayStore>,
    pub content: Vec<u8>,
    pub origins: Vec<Origin>,
}

impl Fixture {
    /// `content` cut at `lens`, stored in a MemStore behind a `delay` DelayStore.
    pub async fn new(content: Vec<u8>, lens: &[usize], delay: Duration) -> Fixture {
        let mem: DynStore = Arc::new(MemStore::new());
        Self::with_store(mem, content, lens, delay).await
    }

    pub async fn with_store(
        inner: DynStore,
        content: Vec<u8>,
        lens: &[usize],
        delay: Duration,
    ) -> Fixture {
        let origins = put_chunks(&inner, &content, lens, true).await.unwrap();
        let store = DelayStore::new(inner, delay);
        Fixture { dir: tempfile::tempdir().unwrap(), store, content, origins }
    }

    /// Fixed-size chunks of sample content.
    pub async fn fixed(chunks: usize, chunk: usize, delay: Duration) -> Fixture {
        let content = sample_bytes(chunks * chunk, 7);
        Self::new(content, &vec![chunk; chunks], delay).await
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    pub fn source(&self) -> Arc<dyn ChunkSource> {
        Arc::new(StoreSource::new(self.store.clone(), self.origins.clone()))
    }

    pub fn layout(&self) -> Layout {
        StoreSource::new(self.store.clone(), self.origins.clone()).layout().unwrap()
    }

    pub async fn open(&self, opts: LazyOptions) -> LazyFile {
        LazyFile::open(&self.path(), self.layout(), self.source(), opts).await.unwrap()
    }

    /// Original bytes of chunk `i`.
    pub fn chunk(&self, i: u64) -> &[u8] {
        let span = self.layout().span(i);
        &self.content[span.start as usize..span.end as usize]
    }
}

pub fn rw() -> LazyOptions {
    LazyOptions { writable: true, ..Default::default() }
}

/// Poll `cond` every millisecond until true; panics after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
