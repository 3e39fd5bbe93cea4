//! An open file content of a mount: reads through the shared LazyFile
//! (blocking: FUSE worker threads), counted for that mount.

use std::fs::File;
use std::sync::Arc;

use zosfs_store::lazy::{BlockingLazyFile, ChunkState, LazyFile};

use super::ContentCache;
use super::source::FlistSource;
use crate::error::{Error, ErrorKind, Result};
use crate::stats::Counters;
use crate::tree::Content;

/// A regular file of size 0: nothing to fetch.
pub struct EmptyContent;

impl Content for EmptyContent {
    fn size(&self) -> u64 {
        0
    }

    fn read_at(&self, _buf: &mut [u8], _offset: u64) -> Result<usize> {
        Ok(0)
    }

    fn local_file(&self) -> Option<&File> {
        None
    }
}

/// One open handle on a cached content; releases it on drop.
pub struct LazyContent {
    cache: Arc<ContentCache>,
    id: [u8; 32],
    lf: BlockingLazyFile,
    source: Arc<FlistSource>,
    file: Arc<File>,
    counters: Arc<Counters>,
}

impl LazyContent {
    pub(super) fn new(
        cache: Arc<ContentCache>,
        id: [u8; 32],
        lf: LazyFile,
        source: Arc<FlistSource>,
        counters: Arc<Counters>,
    ) -> LazyContent {
        let file = lf.backing_file();
        LazyContent { cache, id, lf: lf.blocking(), source, file, counters }
    }

    /// Count every chunk of the range as a hit (local) or a miss.
    fn count(&self, off: u64, len: u64) {
        let lf = self.lf.lazy_file();
        let (mut hits, mut misses) = (0, 0);
        for i in lf.layout().chunks_in(off, len) {
            match lf.state(i) {
                ChunkState::Absent => misses += 1,
                _ => hits += 1,
            }
        }
        Counters::add(&self.counters.cache_hits, hits);
        Counters::add(&self.counters.cache_misses, misses);
    }
}

impl Content for LazyContent {
    fn size(&self) -> u64 {
        self.lf.lazy_file().size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let size = self.size();
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let len = (buf.len() as u64).min(size - offset);
        self.count(offset, len);
        // Fetches this read (and its read-ahead) starts count for our mount.
        self.source.attribution.set(&self.counters);
        // Whatever failed, the entry exists and its data did not arrive.
        // The caller names the inode and offset.
        let data =
            self.lf.read(offset, len as usize).map_err(|e| Error::wrap(ErrorKind::Fetch, e))?;
        buf[..data.len()].copy_from_slice(&data);
        Ok(data.len())
    }

    fn local_file(&self) -> Option<&File> {
        // Once complete, always complete (the content is not evicted while open).
        self.lf.lazy_file().is_fully_present().then_some(&*self.file)
    }
}

impl Drop for LazyContent {
    fn drop(&mut self) {
        self.cache.release(&self.id);
    }
}
