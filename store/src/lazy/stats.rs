//! Counters of a LazyFile (shown by fsmount/nbdserver stats).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub fetched: Counter,
    pub fetched_bytes: Counter,
    pub fetch_errors: Counter,
    /// Fetches that waited out an unreachable store (see `outage_wait`).
    pub outage_waits: Counter,
    pub fetch_ns: Counter,
    pub fetch_ns_max: AtomicU64,
    pub in_flight: AtomicU64,
    pub max_in_flight: AtomicU64,
    pub joined: Counter,
    pub hits: Counter,
    pub misses: Counter,
    pub zero_reads: Counter,
    pub readahead: Counter,
    pub prefetched: Counter,
    pub written_bytes: Counter,
    pub data_syncs: Counter,
    pub state_syncs: Counter,
}

impl Counters {
    /// Count a fetch as in flight until the guard drops.
    pub fn fetch_started(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.max_in_flight.fetch_max(now, Ordering::AcqRel);
        InFlight(self)
    }

    pub fn fetch_done(&self, took: Duration, bytes: u64) {
        let ns = took.as_nanos().min(u64::MAX as u128) as u64;
        self.fetched.inc();
        self.fetched_bytes.add(bytes);
        self.fetch_ns.add(ns);
        self.fetch_ns_max.fetch_max(ns, Ordering::Relaxed);
    }
}

pub(crate) struct InFlight<'a>(&'a Counters);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A snapshot of a LazyFile's counters and chunk states.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LazyStats {
    pub chunks: u64,
    /// Not local and not known to be zero: a read fetches it.
    pub absent: u64,
    pub present: u64,
    pub dirty: u64,
    /// Reads give zeros without a fetch: trimmed or zeroed locally, or
    /// zero in the source (a blank disk, a hole of the image).
    pub zero: u64,
    /// Chunks fetched from the source, and their plaintext bytes.
    pub fetched: u64,
    pub fetched_bytes: u64,
    pub fetch_errors: u64,
    /// Fetches that waited for an unreachable store before they ended.
    pub outage_waits: u64,
    /// Sum and maximum of per-chunk fetch latency (source fetch + verify + decode).
    pub fetch_time: Duration,
    pub fetch_time_max: Duration,
    pub fetches_in_flight: u64,
    /// The most fetches that were ever in flight at once.
    pub max_fetches_in_flight: u64,
    /// Chunk reads that waited on a fill (or write) already in flight.
    pub joined: u64,
    /// Chunk reads served from the local file, or zeros, without a fetch.
    pub hits: u64,
    pub misses: u64,
    pub zero_reads: u64,
    /// Fetches started by read-ahead and by prefetch / fill-all.
    pub readahead: u64,
    pub prefetched: u64,
    pub written_bytes: u64,
    pub data_syncs: u64,
    pub state_syncs: u64,
}

impl LazyStats {
    /// Mean fetch latency.
    pub fn fetch_time_mean(&self) -> Duration {
        match self.fetched {
            0 => Duration::ZERO,
            n => Duration::from_nanos((self.fetch_time.as_nanos() / n as u128) as u64),
        }
    }
}

impl Counters {
    pub fn snapshot(&self) -> LazyStats {
        LazyStats {
            fetched: self.fetched.get(),
            fetched_bytes: self.fetched_bytes.get(),
            fetch_errors: self.fetch_errors.get(),
            outage_waits: self.outage_waits.get(),
            fetch_time: Duration::from_nanos(self.fetch_ns.get()),
            fetch_time_max: Duration::from_nanos(self.fetch_ns_max.load(Ordering::Relaxed)),
            fetches_in_flight: self.in_flight.load(Ordering::Relaxed),
            max_fetches_in_flight: self.max_in_flight.load(Ordering::Relaxed),
            joined: self.joined.get(),
            hits: self.hits.get(),
            misses: self.misses.get(),
            zero_reads: self.zero_reads.get(),
            readahead: self.readahead.get(),
            prefetched: self.prefetched.get(),
            written_bytes: self.written_bytes.get(),
            data_syncs: self.data_syncs.get(),
            state_syncs: self.state_syncs.get(),
            ..Default::default()
        }
    }
}
