//! Replicated writes with a quorum and the durable queue.

use std::sync::Arc;

use bytes::Bytes;

use super::{Member, Shared};
use crate::backend::blocking;
use crate::chunk::{ChunkId, MAX_BLOB};
use crate::error::{Error, ErrorKind, Result, invalid};

pub(crate) async fn put(sh: &Arc<Shared>, id: &ChunkId, blob: Bytes) -> Result<()> {
    if blob.len() > MAX_BLOB {
        return Err(invalid(format!(
            "chunk {id}: blob of {} bytes is over the 8 MiB (8388608 bytes) limit",
            blob.len()
        )));
    }
    let targets: Vec<&Member> = sh.matching(id).collect();
    if targets.is_empty() {
        return Err(invalid(format!("no store route covers chunk {id}")));
    }
    let results =
        futures::future::join_all(targets.iter().map(|m| m.store.put(id, blob.clone()))).await;
    let mut failed: Vec<(&Member, Error)> = Vec::new();
    for (m, r) in targets.iter().zip(results) {
        if let Err(e) = r {
            failed.push((m, e));
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    let ok = targets.len() - failed.len();
    // Without a quorum a write needs one store now and the rest queued
    // durably; `--quorum N` needs N stores now, queue or not.
    let need = sh.quorum.unwrap_or(1).min(targets.len());
    // A store refusing the blob itself (size) will refuse it forever.
    let hopeless = failed.iter().any(|(_, e)| e.kind() == ErrorKind::InvalidInput);
    if ok >= need && ok >= 1 && !hopeless && enqueue(sh, id, &blob, &failed).await {
        sh.writes_queued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for (m, e) in &failed {
            if !m.queue_warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    "{}: writes are queued for it (`chunkstore repair` pushes them): {}",
                    m.store.url(),
                    e.chain()
                );
            }
        }
        return Ok(());
    }
    if ok >= need && sh.quorum.is_some() {
        tracing::warn!(
            "chunk {id}: stores missed the write and it is not queued: {}",
            why(&failed)
        );
        return Ok(());
    }
    let need = sh.quorum.unwrap_or(targets.len()).min(targets.len());
    let queue_note = if sh.queue.is_none() { " (no replication queue configured)" } else { "" };
    Err(Error::new(
        ErrorKind::Quorum,
        format!(
            "chunk {id}: {ok} of {need} required stores took the write{queue_note}: {}",
            why(&failed)
        ),
    ))
}

fn why(failed: &[(&Member, Error)]) -> String {
    failed.iter().map(|(_, e)| e.chain()).collect::<Vec<_>>().join("; ")
}

/// Queue the blob for every store that missed it. True if all are queued
/// durably (false without a queue or when the queue itself failed).
async fn enqueue(
    sh: &Arc<Shared>,
    id: &ChunkId,
    blob: &Bytes,
    failed: &[(&Member, Error)],
) -> bool {
    let Some(q) = sh.queue.clone() else { return false };
    let targets: Vec<String> = failed.iter().map(|(m, _)| m.store.url().to_string()).collect();
    let (id, blob) = (*id, blob.clone());
    let res = blocking(move || {
        for t in &targets {
            q.push(t, &id, &blob)?;
        }
        Ok::<_, Error>(())
    })
    .await;
    match res {
        Ok(()) => {
            sh.queued.notify_one();
            true
        }
        Err(e) => {
            tracing::error!("chunk {id}: cannot queue the replication: {}", e.chain());
            false
        }
    }
}

/// Queue one target's missed write (repairs that failed). Logs on failure.
pub(crate) async fn enqueue_one(
    sh: &Arc<Shared>,
    target: &str,
    id: &ChunkId,
    blob: &Bytes,
) -> bool {
    let Some(q) = sh.queue.clone() else { return false };
    let (t, id, blob) = (target.to_string(), *id, blob.clone());
    match blocking(move || q.push(&t, &id, &blob)).await {
        Ok(()) => {
            sh.queued.notify_one();
            true
        }
        Err(e) => {
            tracing::error!("chunk {id}: cannot queue the repair of {target}: {}", e.chain());
            false
        }
    }
}
