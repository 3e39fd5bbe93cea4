//! Persisting chunk states: one task per LazyFile that batches state
//! changes into few syncs (group commit).
//!
//! Invariant kept here: a batch first makes the data file durable
//! (fdatasync) when any of its requests needs it, then writes the changed
//! state bytes and fdatasyncs the state file. A request is sent only after
//! the data it describes was written, so a persisted entry never describes
//! data that is not durable. Requests that nobody waits for (lazy ones,
//! from writes not asking for durability) wait at most `interval` for a
//! batch; any waited-for request commits the whole batch at once.
//!
//! After an I/O error the journal is poisoned: every later request fails.
//! (After a failed fdatasync Linux may have dropped the dirty pages, so
//! retrying and reporting success would be a lie.)

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::format::{self, Header, SLOT_LEN, STATES_OFF};
use super::state::ChunkState;
use super::stats::Counters;
use super::{FailHook, Step};
use crate::engine::IoEngine;
use crate::error::{Error, ErrorKind, Result};

/// Gaps up to this many unchanged state bytes are rewritten rather than
/// split into another write.
const RUN_GAP: usize = 4096;

pub(crate) enum Msg {
    /// Persist these states (in order; a later entry for a chunk wins).
    Entries {
        entries: Vec<(u64, ChunkState)>,
        /// The data file must be durable before the entries are.
        data_sync: bool,
        reply: Option<oneshot::Sender<Result<()>>>,
    },
    /// Replace the header (new source identity) in the other slot.
    Header { header: Header, reply: oneshot::Sender<Result<()>> },
}

/// Handle used by the LazyFile to talk to its journal task.
#[derive(Clone)]
pub(crate) struct Journal {
    tx: mpsc::UnboundedSender<Msg>,
    poisoned: Arc<AtomicBool>,
}

impl Journal {
    /// Start the journal task on the current runtime.
    pub fn start(writer: Writer) -> Journal {
        let (tx, rx) = mpsc::unbounded_channel();
        let poisoned = writer.poisoned.clone();
        tokio::spawn(writer.run(rx));
        Journal { tx, poisoned }
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Queue entries without waiting: they become durable by the next
    /// flush or within the journal interval.
    pub fn queue(&self, entries: Vec<(u64, ChunkState)>, data_sync: bool) {
        let _ = self.tx.send(Msg::Entries { entries, data_sync, reply: None });
    }

    /// Persist entries (after syncing data when `data_sync`) and wait.
    pub async fn commit(&self, entries: Vec<(u64, ChunkState)>, data_sync: bool) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Entries { entries, data_sync, reply: Some(reply) })?;
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Make the data file and every queued entry durable.
    pub async fn flush(&self) -> Result<()> {
        self.commit(Vec::new(), true).await
    }

    pub async fn write_header(&self, header: Header) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Header { header, reply })?;
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }

    fn send(&self, m: Msg) -> Result<()> {
        self.tx.send(m).map_err(|_| stopped())
    }
}

fn stopped() -> Error {
    Error::new(ErrorKind::Io, "LazyFile state journal stopped (runtime shutting down?)")
}

/// The task side: owns the persisted copy of the states.
pub(crate) struct Writer {
    pub engine: Arc<dyn IoEngine>,
    pub data: Arc<File>,
    pub state: Arc<File>,
    /// Packed states as they are on disk (after the last successful batch).
    pub persisted: Vec<u8>,
    /// Header currently in force and its slot.
    pub header: Header,
    pub slot: usize,
    pub interval: Duration,
    pub poisoned: Arc<AtomicBool>,
    pub counters: Arc<Counters>,
    pub failpoint: Option<FailHook>,
    pub name: String,
    /// Dropped last, when the task ends: tells `close` the files are released.
    pub _done: Option<oneshot::Sender<()>>,
}

#[derive(Default)]
struct Batch {
    entries: Vec<(u64, ChunkState)>,
    data_sync: bool,
    header: Option<Header>,
    waiters: Vec<oneshot::Sender<Result<()>>>,
    /// Non-empty batches commit by this time at the latest.
    deadline: Option<Instant>,
}

impl Batch {
    fn add(&mut self, m: Msg, interval: Duration) {
        if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + interval);
        }
        match m {
            Msg::Entries { entries, data_sync, reply } => {
                self.entries.extend(entries);
                self.data_sync |= data_sync;
                self.waiters.extend(reply);
            }
            Msg::Header { header, reply } => {
                self.header = Some(header);
                self.waiters.push(reply);
            }
        }
    }
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut batch = Batch::default();
        loop {
            let msg = match batch.deadline {
                None => rx.recv().await,
                Some(d) => match tokio::time::timeout_at(d, rx.recv()).await {
                    Ok(m) => m,
                    Err(_) => {
                        self.commit(std::mem::take(&mut batch)).await;
                        continue;
                    }
                },
            };
            let Some(msg) = msg else {
                // Every handle is gone: persist what is queued, then stop.
                if batch.deadline.is_some() {
                    self.commit(batch).await;
                }
                return;
            };
            batch.add(msg, self.interval);
            while let Ok(m) = rx.try_recv() {
                batch.add(m, self.interval);
            }
            if !batch.waiters.is_empty() {
                self.commit(std::mem::take(&mut batch)).await;
            }
        }
    }

    async fn commit(&mut self, batch: Batch) {
        let res = if self.poisoned.load(Ordering::Acquire) {
            Err(Error::new(
                ErrorKind::Io,
                format!(
                    "{}: an earlier sync failed; the cache is read-only until reopened",
                    self.name
                ),
            ))
        } else {
            let r = self.persist(&batch).await;
            if r.is_err() {
                self.poisoned.store(true, Ordering::Release);
            }
            r
        };
        if let Err(e) = &res {
            tracing::error!("{}", e.chain());
        }
        for w in batch.waiters {
            let _ = w.send(res.as_ref().map(|_| ()).map_err(Error::duplicate));
        }
    }

    async fn persist(&mut self, batch: &Batch) -> Result<()> {
        let io = |what: &'static str| {
            let name = self.name.clone();
            move |e| Error::io(format!("{name}: {what}"), e)
        };
        if batch.data_sync {
            self.engine.fdatasync(self.data.clone()).await.map_err(io("fdatasync data"))?;
            self.counters.data_syncs.inc();
        }
        self.hit(Step::DataSynced);
        let mut changed = Vec::with_capacity(batch.entries.len());
        for &(i, s) in &batch.entries {
            format::set_code(&mut self.persisted, i, s.code());
            changed.push((i / 4) as usize);
        }
        changed.sort_unstable();
        changed.dedup();
        for run in runs(&changed) {
            let bytes = Bytes::copy_from_slice(&self.persisted[run.clone()]);
            let off = STATES_OFF + run.start as u64;
            self.engine
                .write_at(self.state.clone(), off, bytes)
                .await
                .map_err(io("write states"))?;
        }
        if let Some(h) = &batch.header {
            let slot = 1 - self.slot;
            let off = (slot * SLOT_LEN) as u64;
            let bytes = Bytes::copy_from_slice(&h.encode());
            self.engine
                .write_at(self.state.clone(), off, bytes)
                .await
                .map_err(io("write header"))?;
        }
        self.hit(Step::StateWritten);
        if !changed.is_empty() || batch.header.is_some() {
            self.engine.fdatasync(self.state.clone()).await.map_err(io("fdatasync states"))?;
            self.counters.state_syncs.inc();
        }
        if let Some(h) = &batch.header {
            self.slot = 1 - self.slot;
            self.header = h.clone();
        }
        Ok(())
    }

    fn hit(&self, step: Step) {
        if let Some(f) = &self.failpoint {
            f(step);
        }
    }
}

/// Group sorted byte indices into write ranges, merging small gaps.
fn runs(sorted: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    for &b in sorted {
        match out.last_mut() {
            Some(r) if b <= r.end + RUN_GAP => r.end = b + 1,
            _ => out.push(b..b + 1),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::runs;

    #[test]
    fn runs_merge_small_gaps() {
        assert_eq!(runs(&[]), vec![]);
        assert_eq!(runs(&[1, 2, 3]), vec![1..4]);
        assert_eq!(runs(&[0, 5000]), vec![0..1, 5000..5001]);
        assert_eq!(runs(&[0, 4000, 9000]), vec![0..4001, 9000..9001]);
    }
}
