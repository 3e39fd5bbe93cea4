//! Per-mount counters: chunks and bytes fetched, cache hits, fetch latency
//! histogram, files opened. Lock-free atomics updated on the read path;
//! a [`Snapshot`] is what `fsmount stats`, `fsmount list` and the
//! Prometheus endpoint show.

/// The `--metrics` responder, shared with `chunkstore serve`.
pub use zosfs_store::process::http;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zosfs_store::process::http::escape_label;

/// Upper bounds of the fetch latency buckets, in microseconds.
pub const LATENCY_BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// A cumulative-on-read latency histogram (one extra bucket for +Inf).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        let i = LATENCY_BOUNDS_US.iter().position(|b| us <= *b).unwrap_or(LATENCY_BOUNDS_US.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// Per-bucket (not cumulative) counts and the sum.
    fn snapshot(&self) -> (Vec<u64>, u64) {
        (self.buckets.iter().map(|b| b.load(Relaxed)).collect(), self.sum_us.load(Relaxed))
    }
}

/// Live counters of one mount.
#[derive(Debug, Default)]
pub struct Counters {
    /// Chunks fetched from a store (cache misses that completed).
    pub chunks_fetched: AtomicU64,
    /// Plaintext bytes of the fetched chunks.
    pub bytes_fetched: AtomicU64,
    /// Fetches that failed (every replica missing, wrong or unreachable).
    pub fetch_errors: AtomicU64,
    /// Chunk reads served from the local cache.
    pub cache_hits: AtomicU64,
    /// Chunk reads that needed a fetch.
    pub cache_misses: AtomicU64,
    pub files_opened: AtomicU64,
    /// Opens answered with FUSE passthrough.
    pub passthrough_opens: AtomicU64,
    /// FUSE read requests and their bytes.
    pub reads: AtomicU64,
    pub bytes_read: AtomicU64,
    pub fetch_latency: Histogram,
    /// `--prefetch all`: [`PREFETCH_RUNNING`] or [`PREFETCH_DONE`] (0: none).
    pub prefetch: std::sync::atomic::AtomicU8,
    /// Bytes `--prefetch all` left out because they exceed the cache budget.
    pub prefetch_skipped_bytes: AtomicU64,
}

pub const PREFETCH_RUNNING: u8 = 1;
pub const PREFETCH_DONE: u8 = 2;

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let (latency_buckets, latency_sum_us) = self.fetch_latency.snapshot();
        Snapshot {
            chunks_fetched: self.chunks_fetched.load(Relaxed),
            bytes_fetched: self.bytes_fetched.load(Relaxed),
            fetch_errors: self.fetch_errors.load(Relaxed),
            cache_hits: self.cache_hits.load(Relaxed),
            cache_misses: self.cache_misses.load(Relaxed),
            files_opened: self.files_opened.load(Relaxed),
            passthrough_opens: self.passthrough_opens.load(Relaxed),
            reads: self.reads.load(Relaxed),
            bytes_read: self.bytes_read.load(Relaxed),
            latency_buckets,
            latency_sum_us,
            prefetch: match self.prefetch.load(Relaxed) {
                PREFETCH_RUNNING => "running".into(),
                PREFETCH_DONE => "done".into(),
                _ => String::new(),
            },
            prefetch_skipped_bytes: self.prefetch_skipped_bytes.load(Relaxed),
            ..Snapshot::default()
        }
    }
}

/// Counters at one instant, plus facts about the mount.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub mountpoint: String,
    pub chunks_fetched: u64,
    pub bytes_fetched: u64,
    pub fetch_errors: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub files_opened: u64,
    pub passthrough_opens: u64,
    pub reads: u64,
    pub bytes_read: u64,
    /// Per-bucket counts for [`LATENCY_BOUNDS_US`] and +Inf.
    pub latency_buckets: Vec<u64>,
    pub latency_sum_us: u64,
    /// Whether the kernel accepted FUSE passthrough for this session.
    pub passthrough: bool,
    /// `--prefetch all`: "running", "done", or empty (none). Absent in the
    /// stats of older servers, hence the defaults.
    #[serde(default)]
    pub prefetch: String,
    #[serde(default)]
    pub prefetch_skipped_bytes: u64,
}

impl Snapshot {
    /// Share of chunk reads served locally (None before any chunk read).
    pub fn hit_ratio(&self) -> Option<f64> {
        let total = self.cache_hits + self.cache_misses;
        (total > 0).then(|| self.cache_hits as f64 / total as f64)
    }

    pub fn fetches(&self) -> u64 {
        self.latency_buckets.iter().sum()
    }

    /// Prometheus text of this mount alone.
    pub fn prometheus(&self) -> String {
        prometheus(std::slice::from_ref(self))
    }

    /// Human-readable form for `fsmount stats`.
    pub fn human(&self) -> String {
        use crate::size::format_size;
        let ratio = self.hit_ratio().map(|r| format!("{:.1} %", r * 100.0)).unwrap_or("-".into());
        let mut s = format!(
            "mountpoint        {}\nchunks fetched    {}\nbytes fetched     {} ({})\nfetch errors      {}\ncache hits        {}\ncache misses      {}\nhit ratio         {}\nfiles opened      {}\npassthrough opens {} (passthrough {})\nreads             {} ({})\n",
            self.mountpoint,
            self.chunks_fetched,
            self.bytes_fetched,
            format_size(self.bytes_fetched),
            self.fetch_errors,
            self.cache_hits,
            self.cache_misses,
            ratio,
            self.files_opened,
            self.passthrough_opens,
            if self.passthrough { "on" } else { "off" },
            self.reads,
            format_size(self.bytes_read),
        );
        s.push_str("fetch latency    ");
        for (i, n) in self.latency_buckets.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            match LATENCY_BOUNDS_US.get(i) {
                Some(b) => s.push_str(&format!(" ≤{}: {n}", fmt_us(*b))),
                None => s.push_str(&format!(" >10s: {n}")),
            }
        }
        if self.fetches() == 0 {
            s.push_str(" (no fetches)");
        }
        s.push('\n');
        if !self.prefetch.is_empty() {
            s.push_str(&format!("prefetch          {}", self.prefetch));
            if self.prefetch_skipped_bytes > 0 {
                s.push_str(&format!(
                    ", {} not prefetched (over --cache-size)",
                    format_size(self.prefetch_skipped_bytes)
                ));
            }
            s.push('\n');
        }
        s
    }
}

/// Prometheus text exposition format (version 0.0.4): every metric family
/// once, one sample per mount (label `mountpoint`).
pub fn prometheus(snaps: &[Snapshot]) -> String {
    type Field = fn(&Snapshot) -> u64;
    let counters: [(&str, &str, Field); 9] = [
        ("chunks_fetched", "Chunks fetched from a store", |s| s.chunks_fetched),
        ("fetched_bytes", "Plaintext bytes fetched from a store", |s| s.bytes_fetched),
        ("fetch_errors", "Chunk fetches that failed", |s| s.fetch_errors),
        ("cache_hits", "Chunk reads served from the local cache", |s| s.cache_hits),
        ("cache_misses", "Chunk reads that needed a fetch", |s| s.cache_misses),
        ("files_opened", "Files opened", |s| s.files_opened),
        ("passthrough_opens", "Opens served by FUSE passthrough", |s| s.passthrough_opens),
        ("reads", "FUSE read requests", |s| s.reads),
        ("read_bytes", "Bytes returned by FUSE reads", |s| s.bytes_read),
    ];
    let label = |s: &Snapshot| format!("mountpoint=\"{}\"", escape_label(&s.mountpoint));
    let mut out = String::new();
    for (name, help, get) in counters {
        let n = format!("zosfs_fsmount_{name}_total");
        out.push_str(&format!("# HELP {n} {help}.\n# TYPE {n} counter\n"));
        for s in snaps {
            out.push_str(&format!("{n}{{{}}} {}\n", label(s), get(s)));
        }
    }
    let h = "zosfs_fsmount_fetch_latency_seconds";
    out.push_str(&format!(
        "# HELP {h} Latency of reads that fetched chunks.\n# TYPE {h} histogram\n"
    ));
    for s in snaps {
        let l = label(s);
        let mut cum = 0;
        for (i, n) in s.latency_buckets.iter().enumerate() {
            cum += n;
            let le = match LATENCY_BOUNDS_US.get(i) {
                Some(b) => format!("{}", *b as f64 / 1e6),
                None => "+Inf".to_string(),
            };
            out.push_str(&format!("{h}_bucket{{{l},le=\"{le}\"}} {cum}\n"));
        }
        out.push_str(&format!("{h}_sum{{{l}}} {}\n", s.latency_sum_us as f64 / 1e6));
        out.push_str(&format!("{h}_count{{{l}}} {cum}\n"));
    }
    out
}

fn fmt_us(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{}s", us as f64 / 1e6)
    } else if us >= 1000 {
        format!("{}ms", us as f64 / 1e3)
    } else {
        format!("{us}µs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_and_prometheus() {
        let c = Counters::default();
        c.fetch_latency.observe(Duration::from_micros(50));
        c.fetch_latency.observe(Duration::from_millis(20));
        c.fetch_latency.observe(Duration::from_secs(60));
        Counters::add(&c.cache_hits, 3);
        Counters::add(&c.cache_misses, 1);
        let mut s = c.snapshot();
        s.mountpoint = "/mnt/\"x\"".into();
        assert_eq!(s.fetches(), 3);
        assert_eq!(s.hit_ratio(), Some(0.75));
        let text = s.prometheus();
        assert!(text.contains("zosfs_fsmount_cache_hits_total{mountpoint=\"/mnt/\\\"x\\\"\"} 3"));
        assert!(text.contains("le=\"0.0001\"} 1\n"));
        assert!(text.contains("le=\"0.025\"} 2\n"));
        assert!(text.contains("le=\"+Inf\"} 3\n"));
        assert!(text.contains("_count{mountpoint=\"/mnt/\\\"x\\\"\"} 3"));
        // Two mounts: each family once, a sample per mount.
        let mut other = s.clone();
        other.mountpoint = "/b".into();
        let both = prometheus(&[s.clone(), other]);
        assert_eq!(both.matches("# TYPE zosfs_fsmount_cache_hits_total counter").count(), 1);
        assert!(both.contains("zosfs_fsmount_cache_hits_total{mountpoint=\"/b\"} 3"));
        // Round trip through the control socket's encoding.
        let back: Snapshot = toml::from_str(&toml::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
