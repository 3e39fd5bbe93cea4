//! Per-export counters and their two renderings: the text of
//! `nbdserver stats` (over the control socket) and Prometheus exposition
//! text (on `--metrics ADDR`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::export::{Export, ExportTable};
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

    pub fn error(&self) {
        add(&self.errors, 1);
    }

    /// Count a READ answered by sendfile (also counted by `count`).
    pub fn zero_copy_read(&self) {
        add(&self.zero_copy_reads, 1);
    }
}

/// One export's figures, gathered once for both renderings.
struct Figures {
    name: String,
    values: Vec<(&'static str, &'static str, u64)>,
}

fn figures(e: &Export) -> Figures {
    let c = &e.counters;
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let s = e.device.stats();
    let size = e.device.lazy().size();
    let local = e.device.local_bytes();
    let values = vec![
        ("size_bytes", "gauge", size),
        ("local_bytes", "gauge", local),
        ("fill_permille", "gauge", permille(local, size)),
        ("chunks", "gauge", s.chunks),
        ("chunks_present", "gauge", s.present),
        ("chunks_dirty", "gauge", s.dirty),
        ("chunks_zero", "gauge", s.zero),
        ("chunks_absent", "gauge", s.absent),
        ("fetched_chunks_total", "counter", s.fetched),
        ("fetched_bytes_total", "counter", s.fetched_bytes),
        ("fetch_errors_total", "counter", s.fetch_errors),
        ("fetch_seconds_total_ms", "counter", s.fetch_time.as_millis() as u64),
        ("hits_total", "counter", s.hits),
        ("misses_total", "counter", s.misses),
        ("readahead_total", "counter", s.readahead),
        ("prefetched_total", "counter", s.prefetched),
        ("connections", "gauge", g(&c.connections)),
        ("connections_total", "counter", g(&c.connections_total)),
        ("reads_total", "counter", g(&c.reads)),
        ("read_bytes_total", "counter", g(&c.read_bytes)),
        ("zero_copy_reads_total", "counter", g(&c.zero_copy_reads)),
        ("writes_total", "counter", g(&c.writes)),
        ("write_bytes_total", "counter", g(&c.write_bytes)),
        ("flushes_total", "counter", g(&c.flushes)),
        ("trims_total", "counter", g(&c.trims)),
        ("zeroes_total", "counter", g(&c.zeroes)),
        ("block_status_total", "counter", g(&c.block_status)),
        ("caches_total", "counter", g(&c.caches)),
        ("errors_total", "counter", g(&c.errors)),
    ];
    Figures { name: e.name.clone(), values }
}

/// `nbdserver stats`: one block per export, `key value` lines.
pub fn render_text(table: &ExportTable) -> String {
    let mut out = String::new();
    for e in table.all() {
        let f = figures(&e);
        let _ = writeln!(out, "export {}", f.name);
        let _ = writeln!(out, "  device {}", e.description());
        for (k, _, v) in f.values {
            let _ = writeln!(out, "  {k} {v}");
        }
    }
    out
}

/// Prometheus text exposition (version 0.0.4).
pub fn render_prometheus(table: &ExportTable) -> String {
    let all: Vec<Figures> = table.all().iter().map(|e| figures(e)).collect();
    let mut out = String::new();
    let Some(first) = all.first() else { return out };
    for (idx, (key, kind, _)) in first.values.iter().enumerate() {
        let metric = format!("zosfs_nbd_{key}");
        let _ = writeln!(out, "# TYPE {metric} {kind}");
        for f in &all {
            let _ = writeln!(out, "{metric}{{export=\"{}\"}} {}", f.name, f.values[idx].2);
        }
    }
    out
}

/// `part / whole` in thousandths (1000 for an empty whole), without overflow.
fn permille(part: u64, whole: u64) -> u64 {
    (u128::from(part) * 1000).checked_div(u128::from(whole)).map_or(1000, |v| v as u64)
}
