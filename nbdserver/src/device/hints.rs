//! CACHE hints of one device. A hinted chunk that is not local is queued
//! once, however often clients hint it, and one worker task per device
//! fetches the queue in batches of neighbouring chunks (each batch a
//! `LazyFile` prefetch). So a flood of CACHE requests costs at most
//! [`MAX_QUEUED`] queued chunk numbers and one task, never a task per
//! request, and every chunk is looked at by one prefetch.

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::task::AbortHandle;
use zosfs_store::lazy::LazyFile;

/// Most chunks waiting for a fill per device; hints beyond are dropped
/// (CACHE is advisory: the client still gets its success reply).
pub const MAX_QUEUED: usize = 1 << 16;

/// Most chunks one prefetch of the worker covers.
const BATCH: u64 = 64;

#[derive(Default)]
struct Queue {
    /// Hinted chunks not handed to a prefetch yet.
    queued: BTreeSet<u64>,
    /// Chunks of the prefetch running now.
    running: Range<u64>,
    /// The worker task, while the queue is being worked off.
    worker: Option<AbortHandle>,
    /// Its current prefetch.
    prefetch: Option<AbortHandle>,
}

impl Queue {
    fn has(&self, chunk: u64) -> bool {
        self.running.contains(&chunk) || self.queued.contains(&chunk)
    }

    /// The next run of consecutive queued chunks, at most [`BATCH`] long.
    fn next_batch(&mut self) -> Option<Range<u64>> {
        let first = self.queued.pop_first()?;
        let mut end = first + 1;
        while end - first < BATCH && self.queued.remove(&end) {
            end += 1;
        }
        Some(first..end)
    }
}

#[derive(Default)]
pub struct CacheHints {
    queue: Arc<Mutex<Queue>>,
    dropped: AtomicU64,
}

impl CacheHints {
    /// Queue the chunks of `[off, off+len)` that are neither local nor
    /// queued already, and start the worker if it is idle.
    pub fn hint(&self, lazy: &LazyFile, off: u64, len: u64) {
        let layout = lazy.layout();
        let chunks = layout.chunks_in(off, len);
        let mut q = self.queue.lock();
        let mut added = false;
        for i in chunks.clone() {
            if q.has(i) {
                continue;
            }
            let span = layout.span(i);
            if lazy.is_local(span.start, span.end - span.start) {
                continue;
            }
            if q.queued.len() >= MAX_QUEUED {
                self.dropped.fetch_add(chunks.end - i, Ordering::Relaxed);
                break;
            }
            q.queued.insert(i);
            added = true;
        }
        if added && q.worker.is_none() {
            let task = tokio::spawn(work(lazy.clone(), self.queue.clone()));
            q.worker = Some(task.abort_handle());
        }
    }

    /// Forget every queued hint and stop the worker and its prefetch
    /// (fetches already started complete).
    pub fn cancel(&self) {
        let mut q = self.queue.lock();
        q.queued.clear();
        q.running = 0..0;
        if let Some(w) = q.worker.take() {
            w.abort();
        }
        if let Some(p) = q.prefetch.take() {
            p.abort();
        }
    }

    /// Chunks queued now (including the batch being fetched).
    pub fn pending(&self) -> u64 {
        let q = self.queue.lock();
        q.queued.len() as u64 + (q.running.end - q.running.start)
    }

    /// Hinted chunks dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Fetch the queue batch by batch until it is empty. The worker clears
/// its own slot under the lock that [`CacheHints::hint`] checks it under,
/// so a hint never lands in a queue nobody works off.
async fn work(lazy: LazyFile, queue: Arc<Mutex<Queue>>) {
    let layout = lazy.layout().clone();
    loop {
        let prefetch = {
            let mut q = queue.lock();
            let Some(batch) = q.next_batch() else {
                q.running = 0..0;
                q.worker = None;
                q.prefetch = None;
                return;
            };
            let start = layout.span(batch.start).start;
            let end = layout.span(batch.end - 1).end;
            let p = lazy.prefetch(start, end - start, None);
            q.prefetch = Some(p.abort_handle());
            q.running = batch;
            p
        };
        // A failed fetch leaves its chunk absent: the read that needs it
        // fetches it again and reports the error to that client.
        let _ = prefetch.wait().await;
    }
}
