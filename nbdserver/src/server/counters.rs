//! Per-export counters, kept by the connections and rendered by
//! [`stats`](super::stats).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::proto::Command;

/// NBD-level counters of one export (all connections).
#[derive(Default)]
pub struct ExportCounters {
    pub connections: AtomicU64,
    pub connections_total: AtomicU64,
    pub reads: AtomicU64,
    pub read_bytes: AtomicU64,
    /// READs whose data went out by sendfile (no copy through user space).
    pub zero_copy_reads: AtomicU64,
    pub writes: AtomicU64,
    pub write_bytes: AtomicU64,
    pub flushes: AtomicU64,
    pub trims: AtomicU64,
    pub zeroes: AtomicU64,
    pub block_status: AtomicU64,
    pub caches: AtomicU64,
    pub errors: AtomicU64,
    /// Connections whose reader waits for the client to read replies (its
    /// reply budget is spent), and how often that happened.
    pub stalled: AtomicU64,
    pub stalls_total: AtomicU64,
}

/// A connection counted in [`ExportCounters::stalled`] while it lives.
pub struct Stalled<'a>(&'a AtomicU64);

impl Drop for Stalled<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl ExportCounters {
    /// Count one executed command.
    pub fn count(&self, cmd: &Command, ok: bool) {
        match *cmd {
            Command::Read { length, .. } => {
                add(&self.reads, 1);
                add(&self.read_bytes, length.into());
            }
            Command::Write { length, .. } => {
                add(&self.writes, 1);
                add(&self.write_bytes, length.into());
            }
            Command::Flush => add(&self.flushes, 1),
            Command::Trim { .. } => add(&self.trims, 1),
            Command::WriteZeroes { .. } => add(&self.zeroes, 1),
            Command::BlockStatus { .. } => add(&self.block_status, 1),
            Command::Cache { .. } => add(&self.caches, 1),
            Command::Disconnect => {}
        }
        if !ok {
            add(&self.errors, 1);
        }
    }

    /// Count a connection as stalled until the guard is dropped.
    pub fn stalled(&self) -> Stalled<'_> {
        add(&self.stalls_total, 1);
        add(&self.stalled, 1);
        Stalled(&self.stalled)
    }

    pub fn error(&self) {
        add(&self.errors, 1);
    }

    /// Count a READ answered by sendfile (also counted by `count`).
    pub fn zero_copy_read(&self) {
        add(&self.zero_copy_reads, 1);
    }
}
