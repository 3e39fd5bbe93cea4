//! Fetching chunks from the source and making them present.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;

use super::jobs::{Claim, Job, Outcome, Ready, wait_content};
use super::{ChunkState, Inner, Step};
use crate::error::{ErrorKind, Result, corrupt};

/// Backoff between fetch attempts during an outage.
const OUTAGE_FIRST_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);
const OUTAGE_MAX_PAUSE: std::time::Duration = std::time::Duration::from_secs(2);

impl Inner {
    /// Fetch chunk `i`'s plaintext within the fetch depth. `bg` is a
    /// background permit, given back as soon as the fetch ends.
    pub(crate) async fn fetch(&self, i: u64, bg: Option<OwnedSemaphorePermit>) -> Result<Bytes> {
        let _permit = self.fetch_permits.acquire().await.expect("fetch semaphore never closes");
        let len = self.layout.len_of(i);
        let started = Instant::now();
        let res = {
            let _in_flight = self.counters.fetch_started();
            self.fetch_through_outages(i, len, started).await
        };
        drop(bg);
        let res = res.and_then(|b| {
            if b.len() == len {
                Ok(b)
            } else {
                Err(corrupt(format!("source gave {} bytes for a {len} byte chunk", b.len())))
            }
        });
        match res {
            Ok(b) => {
                self.counters.fetch_done(started.elapsed(), len as u64);
                Ok(b)
            }
            Err(e) => {
                self.counters.fetch_errors.inc();
                Err(e.context_prefix(format!("{}: chunk {i}", self.name)))
            }
        }
    }

    /// Ask the source, again and again while it says no store is
    /// reachable, until `outage_wait` has passed since `started`. Backoff
    /// from 100 ms to 2 s; the router hedges to other replicas meanwhile.
    async fn fetch_through_outages(&self, i: u64, len: usize, started: Instant) -> Result<Bytes> {
        let deadline = started + self.opts.outage_wait;
        let mut pause = OUTAGE_FIRST_PAUSE;
        let mut waited = false;
        loop {
            let res = self.source().fetch(i, len).await;
            let now = Instant::now();
            match res {
                Err(e) if e.kind() == ErrorKind::Unavailable && now < deadline => {
                    if !waited {
                        waited = true;
                        self.counters.outage_waits.inc();
                        tracing::warn!(
                            "{}: chunk {i}: {}; retrying for up to {:?}",
                            self.name,
                            e.chain(),
                            self.opts.outage_wait
                        );
                    }
                    tokio::time::sleep(pause.min(deadline - now)).await;
                    pause = (pause * 2).min(OUTAGE_MAX_PAUSE);
                }
                Err(e) if waited => {
                    return Err(e.context_prefix(format!(
                        "still failing after waiting {:?} for a store",
                        started.elapsed()
                    )));
                }
                other => return other,
            }
        }
    }

    /// Fill the chunk owned by `job` (absent, not zero in the source):
    /// fetch, publish the plaintext to waiting readers, write it, and mark
    /// it present once data and state are durable.
    pub(crate) async fn fill(self: Arc<Self>, job: Job, bg: Option<OwnedSemaphorePermit>) {
        let i = job.index;
        let bytes = match self.fetch(i, bg).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("{}", e.chain());
                job.publish(Outcome::Failed(Arc::new(e)));
                return;
            }
        };
        job.publish(Outcome::Content(bytes.clone()));
        match self.store_fetched(&job, bytes).await {
            Ok(()) => self.set_state(i, ChunkState::Present),
            // Readers got their data; the chunk stays absent and is fetched again later.
            Err(e) => tracing::warn!("{}: keeping chunk {i} absent: {}", self.name, e.chain()),
        }
        drop(job);
    }

    async fn store_fetched(&self, job: &Job, bytes: Bytes) -> Result<()> {
        let i = job.index;
        self.hit(Step::Fetched(i));
        let off = self.layout.span(i).start;
        self.write_data(off, bytes).await?;
        job.publish(Outcome::Written);
        self.hit(Step::DataWritten(i));
        // Data durable, then state durable: the journal syncs data first.
        self.journal.commit(vec![(i, ChunkState::Present)], true).await
    }

    /// The plaintext of absent chunk `i`, fetched by this call or by the
    /// fill already in flight. `None`: the chunk changed state meanwhile.
    pub(crate) async fn absent_content(self: &Arc<Self>, i: u64) -> Result<Option<Ready>> {
        match self.claim(i) {
            Claim::Busy(rx) => {
                self.counters.joined.inc();
                wait_content(rx).await
            }
            Claim::Mine(job) => {
                if self.states.get(i) != ChunkState::Absent {
                    return Ok(None);
                }
                self.counters.misses.inc();
                let rx = job.subscribe();
                self.rt.spawn(self.clone().fill(job, None));
                wait_content(rx).await
            }
        }
    }

    /// Start a background fill of chunk `i` if it needs one and nobody
    /// works on it. Returns a receiver on the job when one was started.
    pub(crate) fn start_fill(
        self: &Arc<Self>,
        i: u64,
        bg: Option<OwnedSemaphorePermit>,
    ) -> Option<tokio::sync::watch::Receiver<Outcome>> {
        if self.states.get(i) != ChunkState::Absent || self.source().is_zero(i) {
            return None;
        }
        let Claim::Mine(job) = self.claim(i) else { return None };
        if self.states.get(i) != ChunkState::Absent {
            return None;
        }
        let rx = job.subscribe();
        self.rt.spawn(self.clone().fill(job, bg));
        Some(rx)
    }

    /// Fetch up to `readahead` chunks after `last` for a sequential reader.
    /// Start fills of the `n` chunks after chunk `last`.
    pub(crate) fn readahead(self: &Arc<Self>, last: u64, n: u64) {
        let end = (last + 1 + n).min(self.layout.count());
        for j in last + 1..end {
            if self.start_fill(j, None).is_some() {
                self.counters.readahead.inc();
            }
        }
    }
}
