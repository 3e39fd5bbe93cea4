//! A blocking façade for threads that are not tokio workers (FUSE worker
//! threads): they wait on a LazyFile without ever blocking a runtime thread.
//!
//! Reads run on the calling thread: the data file is read through the
//! engine (whose futures need no runtime), and missing chunks are fetched
//! by fill tasks on the LazyFile's runtime while this thread waits. Every
//! other operation runs as a task on that runtime and this thread waits
//! for its result. Never call these from async code: they block.

use std::future::Future;

use bytes::Bytes;

use super::{LazyFile, PrefetchReport};
use crate::error::{Error, ErrorKind, Result};

/// See the module doc.
#[derive(Clone)]
pub struct BlockingLazyFile {
    lf: LazyFile,
}

impl BlockingLazyFile {
    pub(crate) fn new(lf: LazyFile) -> Self {
        BlockingLazyFile { lf }
    }

    /// The async handle.
    pub fn lazy_file(&self) -> &LazyFile {
        &self.lf
    }

    /// Run `f` as a task on the LazyFile's runtime and wait for it.
    fn on_runtime<T, F>(&self, f: impl FnOnce(LazyFile) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let task = self.lf.inner().rt.spawn(f(self.lf.clone()));
        futures::executor::block_on(task).map_err(|e| {
            Error::new(ErrorKind::Io, format!("{}: task failed: {e}", self.lf.path().display()))
        })?
    }

    pub fn read(&self, off: u64, len: usize) -> Result<Vec<u8>> {
        futures::executor::block_on(self.lf.read(off, len))
    }

    pub fn write(&self, off: u64, data: &[u8]) -> Result<()> {
        let data = Bytes::copy_from_slice(data);
        self.on_runtime(move |lf| async move { lf.write(off, data).await })
    }

    pub fn write_sync(&self, off: u64, data: &[u8]) -> Result<()> {
        let data = Bytes::copy_from_slice(data);
        self.on_runtime(move |lf| async move { lf.write_sync(off, data).await })
    }

    pub fn flush(&self) -> Result<()> {
        self.on_runtime(|lf| async move { lf.flush().await })
    }

    pub fn trim(&self, off: u64, len: u64) -> Result<()> {
        self.on_runtime(move |lf| async move { lf.trim(off, len).await })
    }

    pub fn write_zeroes(&self, off: u64, len: u64) -> Result<()> {
        self.on_runtime(move |lf| async move { lf.write_zeroes(off, len).await })
    }

    /// Fill the whole file and wait for it.
    pub fn fill_all(&self, bandwidth: Option<u64>) -> Result<PrefetchReport> {
        self.on_runtime(move |lf| async move { lf.fill_all(bandwidth).wait().await })
    }
}
