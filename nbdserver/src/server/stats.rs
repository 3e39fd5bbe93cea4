//! The two renderings of the per-export counters
//! ([`ExportCounters`](super::counters::ExportCounters)): the text of
//! `nbdserver stats` (over the control socket) and Prometheus exposition
//! text (on `--metrics ADDR`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::export::{Export, ExportTable};

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
        ("outage_waits_total", "counter", s.outage_waits),
        ("fetch_seconds_total_ms", "counter", s.fetch_time.as_millis() as u64),
        ("hits_total", "counter", s.hits),
        ("misses_total", "counter", s.misses),
        ("readahead_total", "counter", s.readahead),
        ("prefetched_total", "counter", s.prefetched),
        ("cache_hints_pending", "gauge", e.device.hints().pending()),
        ("cache_hints_dropped_total", "counter", e.device.hints().dropped()),
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
        ("stalled_connections", "gauge", g(&c.stalled)),
        ("stalls_total", "counter", g(&c.stalls_total)),
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
