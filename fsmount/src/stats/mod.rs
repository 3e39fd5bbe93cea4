//! Per-mount counters: chunks and bytes fetched, cache hits, fetch latency
//! histogram, files opened. Lock-free atomics updated on the read path;
//! a [`Snapshot`] is what `fsmount stats`, `fsmount list` and the
//! Prometheus endpoint show.

pub mod control;
pub mod http;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
}

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

    /// Prometheus text exposition format (version 0.0.4).
    pub fn prometheus(&self) -> String {
        let label = format!("mountpoint=\"{}\"", escape_label(&self.mountpoint));
        let mut s = String::new();
        let counters: [(&str, &str, u64); 9] = [
            ("chunks_fetched", "Chunks fetched from a store", self.chunks_fetched),
            ("fetched_bytes", "Plaintext bytes fetched from a store", self.bytes_fetched),
            ("fetch_errors", "Chunk fetches that failed", self.fetch_errors),
            ("cache_hits", "Chunk reads served from the local cache", self.cache_hits),
            ("cache_misses", "Chunk reads that needed a fetch", self.cache_misses),
            ("files_opened", "Files opened", self.files_opened),
            ("passthrough_opens", "Opens served by FUSE passthrough", self.passthrough_opens),
            ("reads", "FUSE read requests", self.reads),
            ("read_bytes", "Bytes returned by FUSE reads", self.bytes_read),
        ];
        for (name, help, v) in counters {
            s.push_str(&format!(
                "# HELP zosfs_fsmount_{name}_total {help}.\n# TYPE zosfs_fsmount_{name}_total counter\nzosfs_fsmount_{name}_total{{{label}}} {v}\n"
            ));
        }
        let h = "zosfs_fsmount_fetch_latency_seconds";
        s.push_str(&format!("# HELP {h} Latency of chunk fetches.\n# TYPE {h} histogram\n"));
        let mut cum = 0;
        for (i, n) in self.latency_buckets.iter().enumerate() {
            cum += n;
            let le = match LATENCY_BOUNDS_US.get(i) {
                Some(b) => format!("{}", *b as f64 / 1e6),
                None => "+Inf".to_string(),
            };
            s.push_str(&format!("{h}_bucket{{{label},le=\"{le}\"}} {cum}\n"));
        }
        s.push_str(&format!("{h}_sum{{{label}}} {}\n", self.latency_sum_us as f64 / 1e6));
        s.push_str(&format!("{h}_count{{{label}}} {cum}\n"));
        s
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
        s
    }
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

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
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
        // Round trip through the control socket's encoding.
        let back: Snapshot = toml::from_str(&toml::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
