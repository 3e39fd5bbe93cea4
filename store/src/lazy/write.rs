//! The write path (nbdserver): writes, trims, zeroing, rebasing.
//!
//! Transitions and what makes each crash-safe (see the module doc of
//! `lazy` for the rule):
//! * `Dirty` → `Dirty`: the write goes straight to the file;
//! * `Present` → `Dirty`: `Dirty` is persisted first (write-ahead), so a
//!   present chunk never holds anything but the source's bytes;
//! * `Absent`/`Zero` → `Dirty`: the whole chunk is made right in the file
//!   (fetched + overlaid, or punched + written), then `Dirty` is queued;
//!   until it is persisted the chunk still reads as before the write;
//! * any → `Zero`: `Zero` is persisted first, then the range is punched
//!   (a zero chunk never reads the file, whatever a crash left there).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::jobs::Job;
use super::{ChunkSource, ChunkState, Inner};
use crate::error::{Error, Result};

/// Chunks zeroed per state batch by a large trim.
const TRIM_BATCH: usize = 1024;

pub(crate) async fn write(inner: &Arc<Inner>, off: u64, data: Bytes) -> Result<()> {
    inner.check_writable("write")?;
    inner.check_range("write", off, data.len() as u64)?;
    if data.is_empty() {
        return Ok(());
    }
    let end = off + data.len() as u64;
    let parts = inner.layout.chunks_in(off, data.len() as u64).map(|i| {
        let span = inner.layout.span(i);
        let (s, e) = (span.start.max(off), span.end.min(end));
        let bytes = data.slice((s - off) as usize..(e - off) as usize);
        write_chunk(inner, i, (s - span.start) as usize, bytes)
    });
    for r in futures::future::join_all(parts).await {
        r?;
    }
    inner.counters.written_bytes.add(data.len() as u64);
    Ok(())
}

async fn punch(inner: &Inner, off: u64, len: u64) -> Result<()> {
    inner
        .engine
        .punch_hole(inner.data.clone(), off, len)
        .await
        .map_err(|e| Error::io(format!("{}: punch {len} bytes at {off}", inner.name), e))
}

/// Write `data` at byte `at` of chunk `i`.
async fn write_chunk(inner: &Arc<Inner>, i: u64, at: usize, data: Bytes) -> Result<()> {
    let span = inner.layout.span(i);
    if inner.states.get(i) == ChunkState::Dirty && !inner.has_job(i) {
        return inner.write_data(span.start + at as u64, data).await;
    }
    let _job = inner.own(i).await;
    match inner.states.get(i) {
        ChunkState::Dirty => inner.write_data(span.start + at as u64, data).await,
        ChunkState::Present => {
            inner.journal.commit(vec![(i, ChunkState::Dirty)], false).await?;
            inner.set_state(i, ChunkState::Dirty);
            inner.write_data(span.start + at as u64, data).await
        }
        old @ (ChunkState::Absent | ChunkState::Zero) => {
            let len = (span.end - span.start) as usize;
            if at == 0 && data.len() == len {
                inner.write_data(span.start, data).await?;
            } else if old == ChunkState::Zero || inner.source().is_zero(i) {
                // Zeros around the write: a hole, so blank devices stay sparse.
                punch(inner, span.start, len as u64).await?;
                inner.write_data(span.start + at as u64, data).await?;
            } else {
                inner.counters.misses.inc();
                let mut buf = inner.fetch(i, None).await?.to_vec();
                buf[at..at + data.len()].copy_from_slice(&data);
                inner.write_data(span.start, buf.into()).await?;
            }
            inner.set_state(i, ChunkState::Dirty);
            inner.journal.queue(vec![(i, ChunkState::Dirty)], true);
            Ok(())
        }
    }
}

/// Chunks lying wholly inside `[off, off+len)`.
fn whole_chunks(inner: &Inner, off: u64, len: u64) -> Vec<u64> {
    let end = off + len;
    inner
        .layout
        .chunks_in(off, len)
        .filter(|&i| {
            let s = inner.layout.span(i);
            s.start >= off && s.end <= end
        })
        .collect()
}

pub(crate) async fn trim(inner: &Arc<Inner>, off: u64, len: u64) -> Result<()> {
    inner.check_writable("trim")?;
    inner.check_range("trim", off, len)?;
    zero_chunks(inner, &whole_chunks(inner, off, len)).await
}

pub(crate) async fn write_zeroes(inner: &Arc<Inner>, off: u64, len: u64) -> Result<()> {
    inner.check_writable("write_zeroes")?;
    inner.check_range("write_zeroes", off, len)?;
    let whole = whole_chunks(inner, off, len);
    zero_chunks(inner, &whole).await?;
    let end = off + len;
    let edges = inner.layout.chunks_in(off, len).filter(|i| !whole.contains(i));
    let src = inner.source();
    let mut parts = Vec::new();
    for i in edges {
        let state = inner.states.get(i);
        if state == ChunkState::Zero || (state == ChunkState::Absent && src.is_zero(i)) {
            continue; // reads as zeros already
        }
        let span = inner.layout.span(i);
        let (s, e) = (span.start.max(off), span.end.min(end));
        let zeros = Bytes::from(vec![0u8; (e - s) as usize]);
        parts.push(write_chunk(inner, i, (s - span.start) as usize, zeros));
    }
    for r in futures::future::join_all(parts).await {
        r?;
    }
    Ok(())
}

/// Make whole chunks `Zero`: persist the state, then punch their ranges.
async fn zero_chunks(inner: &Arc<Inner>, chunks: &[u64]) -> Result<()> {
    for batch in chunks.chunks(TRIM_BATCH) {
        // Owned in ascending order; nothing else owns two chunks, so no deadlock.
        let mut owned: Vec<Job> = Vec::new();
        let src = inner.source();
        for &i in batch {
            let job = inner.own(i).await;
            match inner.states.get(i) {
                ChunkState::Zero => {}
                ChunkState::Absent if src.is_zero(i) => {}
                _ => owned.push(job),
            }
        }
        if owned.is_empty() {
            continue;
        }
        let entries = owned.iter().map(|j| (j.index, ChunkState::Zero)).collect();
        inner.journal.commit(entries, false).await?;
        for j in &owned {
            inner.set_state(j.index, ChunkState::Zero);
        }
        let mut runs: Vec<std::ops::Range<u64>> = Vec::new();
        for j in &owned {
            let s = inner.layout.span(j.index);
            match runs.last_mut() {
                Some(r) if r.end == s.start => r.end = s.end,
                _ => runs.push(s),
            }
        }
        for r in runs {
            punch(inner, r.start, r.end - r.start).await?;
        }
    }
    Ok(())
}

pub(crate) async fn rebase(inner: &Arc<Inner>, source: Arc<dyn ChunkSource>) -> Result<()> {
    inner.check_writable("rebase")?;
    // The new identity is durable before any chunk is called present under it;
    // until then dirty chunks stay dirty, which is true under either identity.
    let mut header = inner.header.lock().clone();
    header.identity = source.identity();
    header.seq += 1;
    inner.journal.write_header(header.clone()).await?;
    *inner.header.lock() = header;
    *inner.source.write() = source.clone();

    let dirty: Vec<u64> =
        (0..inner.states.len()).filter(|&i| inner.states.get(i) == ChunkState::Dirty).collect();
    let entries = dirty.iter().map(|&i| (i, ChunkState::Present)).collect();
    inner.journal.commit(entries, true).await?;
    for &i in &dirty {
        inner.set_state(i, ChunkState::Present);
    }
    let missing = (0..inner.states.len())
        .filter(|&i| inner.states.get(i) == ChunkState::Absent && !source.is_zero(i))
        .count() as u64;
    inner.missing.store(missing, Ordering::Release);
    Ok(())
}
