//! Per-chunk jobs: at most one task changes a chunk's state at a time.
//!
//! A job is an entry in `Inner::jobs` holding a watch channel. Its owner
//! (a fill, a write into a non-dirty chunk, a trim) is the only one who may
//! change the chunk's state, and sets the new state *before* the job is
//! removed, so anyone who finds no job sees the final state. A fill
//! publishes the chunk's plaintext on the channel as soon as it is fetched:
//! readers who joined it are served from memory without waiting for the
//! write and the syncs. Once the plaintext is written to the data file, the
//! fill publishes `Written` instead and lets go of the buffer, so fills
//! waiting for their sync (a disk slower than the network) hold no memory;
//! readers then read the file. The channel closes when the job ends.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;

use super::Inner;
use crate::error::{Error, Result};

#[derive(Clone)]
pub(crate) enum Outcome {
    Pending,
    /// The chunk's full plaintext (fills only).
    Content(Bytes),
    /// The plaintext is in the data file (not yet durable nor marked).
    Written,
    Failed(Arc<Error>),
}

/// Where a reader finds a filled chunk.
pub(crate) enum Ready {
    Bytes(Bytes),
    InFile,
}

/// Ownership of one chunk; removes itself from the job table when dropped.
pub(crate) struct Job {
    inner: Arc<Inner>,
    pub index: u64,
    tx: watch::Sender<Outcome>,
}

impl Job {
    pub fn publish(&self, o: Outcome) {
        self.tx.send_replace(o);
    }

    pub fn subscribe(&self) -> watch::Receiver<Outcome> {
        self.tx.subscribe()
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        // The state is final here; waiters wake when `tx` drops right after.
        self.inner.jobs.lock().remove(&self.index);
    }
}

pub(crate) enum Claim {
    Mine(Job),
    Busy(watch::Receiver<Outcome>),
}

impl Inner {
    /// Take chunk `i` if nobody works on it, else a handle on who does.
    pub(crate) fn claim(self: &Arc<Self>, i: u64) -> Claim {
        let mut jobs = self.jobs.lock();
        if let Some(rx) = jobs.get(&i) {
            return Claim::Busy(rx.clone());
        }
        let (tx, rx) = watch::channel(Outcome::Pending);
        jobs.insert(i, rx);
        Claim::Mine(Job { inner: self.clone(), index: i, tx })
    }

    /// Take chunk `i`, waiting for the current job on it to end.
    pub(crate) async fn own(self: &Arc<Self>, i: u64) -> Job {
        loop {
            match self.claim(i) {
                Claim::Mine(job) => return job,
                Claim::Busy(rx) => wait_closed(rx).await,
            }
        }
    }

    pub(crate) fn has_job(&self, i: u64) -> bool {
        self.jobs.lock().contains_key(&i)
    }
}

/// Wait until a job ends.
pub(crate) async fn wait_closed(mut rx: watch::Receiver<Outcome>) {
    while rx.changed().await.is_ok() {}
}

/// Wait for a job's content: `Some` when it published the plaintext (in
/// memory or in the file), `None` when it ended without (the caller looks
/// at the state again).
pub(crate) async fn wait_content(mut rx: watch::Receiver<Outcome>) -> Result<Option<Ready>> {
    loop {
        if let Some(r) = ready(&rx.borrow_and_update()) {
            return r.map(Some);
        }
        if rx.changed().await.is_err() {
            // Closed: the last value may still have been published meanwhile.
            return ready(&rx.borrow()).transpose();
        }
    }
}

fn ready(o: &Outcome) -> Option<Result<Ready>> {
    match o {
        Outcome::Pending => None,
        Outcome::Content(b) => Some(Ok(Ready::Bytes(b.clone()))),
        Outcome::Written => Some(Ok(Ready::InFile)),
        Outcome::Failed(e) => Some(Err(e.duplicate())),
    }
}
