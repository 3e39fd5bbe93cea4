//! Helpers for tests and benchmarks of LazyFile users: a store wrapper that
//! delays and counts `get`s and can fail them on demand, and a way to store
//! a byte string as chunks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::source::Origin;
use crate::backend::{ChunkStore, DynStore, StoreStats};
use crate::chunk::{ChunkId, encode_with};
use crate::error::{Error, ErrorKind, Result};

/// Wraps a store: every `get` sleeps `delay` first (a remote store's round
/// trip) and is counted, with the most `get`s ever in flight at once.
/// While paused, `get`s wait (counted as in flight) until `resume`: tests
/// use it to observe concurrency as a condition, not as a timing.
pub struct DelayStore {
    inner: DynStore,
    delay: Duration,
    name: String,
    gets: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    fail_next: AtomicU64,
    paused: tokio::sync::watch::Sender<bool>,
}

impl DelayStore {
    pub fn new(inner: DynStore, delay: Duration) -> Arc<DelayStore> {
        let name = format!("delay({:?})+{}", delay, inner.url());
        Arc::new(DelayStore {
            inner,
            delay,
            name,
            gets: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            fail_next: AtomicU64::new(0),
            paused: tokio::sync::watch::channel(false).0,
        })
    }

    /// `get` calls so far.
    pub fn gets(&self) -> u64 {
        self.gets.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> u64 {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn reset_counts(&self) {
        self.gets.store(0, Ordering::SeqCst);
        self.max_in_flight.store(0, Ordering::SeqCst);
    }

    /// `get`s in flight now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Hold every `get` (before its delay) until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.paused.send_replace(false);
    }

    /// The next `n` gets fail (after their delay) with `Unavailable`.
    pub fn fail_next(&self, n: u64) {
        self.fail_next.store(n, Ordering::SeqCst);
    }
}

struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl ChunkStore for DelayStore {
    fn url(&self) -> &str {
        &self.name
    }

    async fn get(&self, id: &ChunkId) -> Result<Option<Bytes>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let _guard = InFlight(&self.in_flight);
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let mut paused = self.paused.subscribe();
        // The sender lives in `self`, so the channel cannot close here.
        let _ = paused.wait_for(|p| !*p).await;
        tokio::time::sleep(self.delay).await;
        let fail = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!("{}: injected failure for chunk {id}", self.name),
            ));
        }
        self.inner.get(id).await
    }

    async fn put(&self, id: &ChunkId, blob: Bytes) -> Result<()> {
        self.inner.put(id, blob).await
    }

    async fn has(&self, id: &ChunkId) -> Result<bool> {
        self.inner.has(id).await
    }

    async fn delete(&self, id: &ChunkId) -> Result<bool> {
        self.inner.delete(id).await
    }

    async fn stats(&self) -> Result<StoreStats> {
        self.inner.stats().await
    }
}

/// Encode `data` cut at `lens` (which must sum to its length), put every
/// chunk into `store`, and return the chunk list. All-zero chunks become
/// [`Origin::Zeros`] when `holes` is set, as a packer records holes.
pub async fn put_chunks(
    store: &DynStore,
    data: &[u8],
    lens: &[usize],
    holes: bool,
) -> Result<Vec<Origin>> {
    if lens.iter().sum::<usize>() != data.len() {
        return Err(crate::error::invalid("chunk lengths do not add up to the data length"));
    }
    let mut out = Vec::with_capacity(lens.len());
    let mut at = 0;
    for &len in lens {
        let plain = &data[at..at + len];
        at += len;
        if holes && plain.iter().all(|&b| b == 0) {
            out.push(Origin::Zeros(len as u64));
            continue;
        }
        let enc = encode_with(plain, 1)?;
        store.put(&enc.chunk.id, enc.blob).await?;
        out.push(Origin::Chunk(enc.chunk));
    }
    Ok(out)
}

/// `size` bytes that compress a little, like real files (not all zeros,
/// not random); deterministic for a seed.
pub fn sample_bytes(size: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        // xorshift64*; every 8th word repeats the previous to give zstd some matches.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let w = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let word = if out.len() % 64 == 56 {
            out[out.len() - 8..].to_vec()
        } else {
            w.to_le_bytes().to_vec()
        };
        out.extend_from_slice(&word[..(size - out.len()).min(8)]);
    }
    out
}
