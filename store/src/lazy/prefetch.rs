//! Background fill of a range (or the whole file) under a bandwidth cap.
//!
//! A prefetch walks the range in order, starts a fill for every absent
//! chunk, paced to the cap, and uses at most `prefetch_depth` of the fetch
//! slots, so foreground reads keep the rest. Readers who need a chunk being
//! prefetched join its fill.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::jobs::{Outcome, wait_closed, wait_content};
use super::{ChunkState, Inner};
use crate::error::{Error, ErrorKind, Result};

/// What a prefetch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrefetchReport {
    /// Fills this prefetch started, and their plaintext bytes.
    pub started: u64,
    pub bytes: u64,
    /// Chunks of the range still not local at the end.
    pub failed: u64,
    pub first_error: Option<String>,
}

/// A running prefetch. Dropping it lets it run on; `cancel` stops it
/// (fills already started complete).
pub struct Prefetch {
    handle: JoinHandle<PrefetchReport>,
}

impl Prefetch {
    pub async fn wait(self) -> Result<PrefetchReport> {
        self.handle
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("prefetch task ended: {e}")))
    }

    pub fn cancel(&self) {
        self.handle.abort();
    }

    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Stops the prefetch like [`cancel`](Self::cancel), for a caller that
    /// gives the prefetch itself to [`wait`](Self::wait).
    pub fn abort_handle(&self) -> tokio::task::AbortHandle {
        self.handle.abort_handle()
    }
}

pub(crate) fn start(inner: &Arc<Inner>, off: u64, len: u64, bandwidth: Option<u64>) -> Prefetch {
    let task = run(inner.clone(), off, len, bandwidth.filter(|&b| b > 0));
    Prefetch { handle: inner.rt.spawn(task) }
}

async fn run(inner: Arc<Inner>, off: u64, len: u64, bandwidth: Option<u64>) -> PrefetchReport {
    let mut report = PrefetchReport::default();
    let mut started: Vec<watch::Receiver<Outcome>> = Vec::new();
    let mut next = Instant::now();
    for i in inner.layout.chunks_in(off, len) {
        if inner.states.get(i) != ChunkState::Absent || inner.source().is_zero(i) {
            continue;
        }
        let bytes = inner.layout.len_of(i) as u64;
        if let Some(bw) = bandwidth {
            tokio::time::sleep_until(next).await;
            next = next.max(Instant::now()) + Duration::from_secs_f64(bytes as f64 / bw as f64);
        }
        let permit = inner
            .prefetch_permits
            .clone()
            .acquire_owned()
            .await
            .expect("prefetch semaphore never closes");
        if let Some(rx) = inner.start_fill(i, Some(permit)) {
            report.started += 1;
            report.bytes += bytes;
            inner.counters.prefetched.inc();
            started.push(rx);
        }
    }
    for rx in started {
        if let Err(e) = wait_content(rx.clone()).await {
            report.first_error.get_or_insert_with(|| e.chain());
        }
        wait_closed(rx).await;
    }
    // Fills started by readers meanwhile: wait for them too before counting.
    for i in inner.layout.chunks_in(off, len) {
        let rx = inner.jobs.lock().get(&i).cloned();
        if let Some(rx) = rx {
            wait_closed(rx).await;
        }
    }
    let src = inner.source();
    report.failed = inner
        .layout
        .chunks_in(off, len)
        .filter(|&i| inner.states.get(i) == ChunkState::Absent && !src.is_zero(i))
        .count() as u64;
    report
}
