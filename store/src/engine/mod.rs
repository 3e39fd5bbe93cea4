//! Disk I/O engines: io_uring, and plain pread/pwrite as the fallback.
//!
//! Everything the store does to local files (segments, LazyFile sparse
//! files) goes through an [`IoEngine`]. The engine is picked once by a
//! probe: io_uring when the kernel and seccomp allow it (Docker's default
//! profile does not), else the sync engine. The choice is logged and shown
//! in stats.
//!
//! Futures returned by engines are runtime-independent for the uring engine
//! (a completion channel) and use tokio's blocking pool for the sync engine
//! when called inside a runtime, so FUSE worker threads can `block_on` them.

mod sync;
mod uring;

use std::fs::File;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

pub use sync::SyncEngine;
pub use uring::UringEngine;

pub type IoFuture<T> = Pin<Box<dyn Future<Output = io::Result<T>> + Send + 'static>>;

/// Positional file I/O. Files are passed as `Arc<File>` so they stay open
/// until the operation completes, whatever the caller does meanwhile.
pub trait IoEngine: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// Read up to `len` bytes at `off`; fewer only at end of file.
    fn read_at(&self, file: Arc<File>, off: u64, len: usize) -> IoFuture<Vec<u8>>;

    /// Write all of `data` at `off`.
    fn write_at(&self, file: Arc<File>, off: u64, data: Bytes) -> IoFuture<()>;

    fn fdatasync(&self, file: Arc<File>) -> IoFuture<()>;

    /// Deallocate `[off, off+len)`, keeping the file size; reads give zeros.
    fn punch_hole(&self, file: Arc<File>, off: u64, len: u64) -> IoFuture<()>;

    /// Write all `parts` back to back from `off`, as few vectored writes as
    /// the engine can (the local store's group commit writes a whole batch
    /// of records this way without copying blobs). The default joins the
    /// parts and calls [`write_at`](IoEngine::write_at).
    fn write_vectored_at(&self, file: Arc<File>, off: u64, parts: Vec<Bytes>) -> IoFuture<()> {
        let joined: Vec<u8> = parts.concat();
        self.write_at(file, off, Bytes::from(joined))
    }

    /// [`write_vectored_at`](IoEngine::write_vectored_at), then fdatasync
    /// once the write is complete, as one request (the group commit's unit:
    /// engines chain the two without a round trip to the caller).
    fn write_vectored_sync_at(
        self: Arc<Self>,
        file: Arc<File>,
        off: u64,
        parts: Vec<Bytes>,
    ) -> IoFuture<()> {
        Box::pin(async move {
            self.write_vectored_at(file.clone(), off, parts).await?;
            self.fdatasync(file).await
        })
    }
}

/// Most iovecs one vectored write may carry (Linux IOV_MAX).
pub(crate) const IOV_MAX: usize = 1024;

/// Which engine to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EngineChoice {
    /// io_uring if the probe succeeds, else sync.
    #[default]
    Auto,
    Uring,
    Sync,
}

impl std::str::FromStr for EngineChoice {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "auto" => Ok(EngineChoice::Auto),
            "uring" | "io_uring" => Ok(EngineChoice::Uring),
            "sync" | "psync" => Ok(EngineChoice::Sync),
            _ => Err(crate::error::invalid(format!("unknown engine {s:?} (auto, uring, sync)"))),
        }
    }
}

/// Open an engine of the given choice. `Uring` fails if io_uring is unusable.
pub fn open_engine(choice: EngineChoice) -> io::Result<Arc<dyn IoEngine>> {
    match choice {
        EngineChoice::Sync => Ok(Arc::new(SyncEngine)),
        EngineChoice::Uring => Ok(Arc::new(UringEngine::new()?)),
        EngineChoice::Auto => match UringEngine::new() {
            Ok(e) => Ok(Arc::new(e)),
            Err(err) => {
                tracing::warn!("io_uring unavailable ({err}); using the pread/pwrite engine");
                Ok(Arc::new(SyncEngine))
            }
        },
    }
}

/// The process-wide engine for `choice` (one ring shared by all stores).
pub fn shared_engine(choice: EngineChoice) -> io::Result<Arc<dyn IoEngine>> {
    static AUTO: OnceLock<Arc<dyn IoEngine>> = OnceLock::new();
    static URING: OnceLock<Arc<dyn IoEngine>> = OnceLock::new();
    let cell = match choice {
        EngineChoice::Sync => return Ok(Arc::new(SyncEngine)),
        EngineChoice::Auto => &AUTO,
        EngineChoice::Uring => &URING,
    };
    if let Some(e) = cell.get() {
        return Ok(e.clone());
    }
    let e = open_engine(choice)?;
    tracing::info!("I/O engine: {}", e.name());
    Ok(cell.get_or_init(|| e).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exercise(engine: Arc<dyn IoEngine>) {
        let f = Arc::new(tempfile::tempfile().unwrap());
        let data = Bytes::from((0..100_000u32).map(|i| i as u8).collect::<Vec<_>>());
        engine.write_at(f.clone(), 4096, data.clone()).await.unwrap();
        engine.fdatasync(f.clone()).await.unwrap();
        let got = engine.read_at(f.clone(), 4096, data.len()).await.unwrap();
        assert_eq!(got, data);
        // Short read at EOF.
        let tail = engine.read_at(f.clone(), 4096 + 99_000, 5000).await.unwrap();
        assert_eq!(tail.len(), 1000);
        // Hole punch reads back as zeros and keeps the size.
        engine.punch_hole(f.clone(), 8192, 8192).await.unwrap();
        let z = engine.read_at(f.clone(), 8192, 8192).await.unwrap();
        assert!(z.iter().all(|&b| b == 0));
        assert_eq!(f.metadata().unwrap().len(), 4096 + 100_000);
        // Many concurrent operations.
        let mut futs = Vec::new();
        for i in 0..64u64 {
            futs.push(engine.write_at(
                f.clone(),
                (1 << 20) + i * 512,
                Bytes::from(vec![i as u8; 512]),
            ));
        }
        for r in futures::future::join_all(futs).await {
            r.unwrap();
        }
        for i in 0..64u64 {
            let b = engine.read_at(f.clone(), (1 << 20) + i * 512, 512).await.unwrap();
            assert!(b.iter().all(|&x| x == i as u8));
        }
        // Vectored writes: more parts than one iovec array holds, odd sizes.
        let parts: Vec<Bytes> = (0..2500u32)
            .map(|i| Bytes::from(vec![(i % 251) as u8; 1 + (i as usize % 700)]))
            .collect();
        let want: Vec<u8> = parts.concat();
        engine.write_vectored_at(f.clone(), 3 << 20, parts.clone()).await.unwrap();
        let got = engine.read_at(f.clone(), 3 << 20, want.len()).await.unwrap();
        assert!(got == want, "vectored write read back differently");
        engine.clone().write_vectored_sync_at(f.clone(), 5 << 20, parts).await.unwrap();
        let got = engine.read_at(f.clone(), 5 << 20, want.len()).await.unwrap();
        assert!(got == want, "vectored write + sync read back differently");
    }

    #[tokio::test]
    async fn sync_engine_works() {
        exercise(Arc::new(SyncEngine)).await;
    }

    #[tokio::test]
    async fn uring_engine_works() {
        // The test machine has io_uring: failing to open it is a failure here.
        exercise(open_engine(EngineChoice::Uring).unwrap()).await;
    }

    #[test]
    fn uring_futures_complete_without_a_runtime() {
        let e = open_engine(EngineChoice::Uring).unwrap();
        let f = Arc::new(tempfile::tempfile().unwrap());
        futures::executor::block_on(e.write_at(f.clone(), 0, Bytes::from_static(b"abc"))).unwrap();
        assert_eq!(futures::executor::block_on(e.read_at(f, 0, 10)).unwrap(), b"abc");
    }
}
