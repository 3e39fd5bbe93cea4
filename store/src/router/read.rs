//! Verified, hedged reads and read repair.
//!
//! A read asks the first store in read order (local stores first). When no
//! answer came within the hedge delay, it also asks the next store, and so
//! on; an error, a miss or a blob whose BLAKE3 is not its id moves on to the
//! next store at once. The first verified blob wins. Stores that answered
//! "missing" or returned corrupt bytes get the good blob written back in
//! the background (a corrupt copy is deleted first: stores keep existing
//! keys on put).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};

use super::{Member, Shared, write};
use crate::backend::blocking;
use crate::chunk::{ChunkId, verify_blob};
use crate::error::{Error, ErrorKind, Result};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Fault {
    Missing,
    Corrupt,
}

type Ask<'a> =
    Pin<Box<dyn std::future::Future<Output = (usize, Result<Option<Bytes>>)> + Send + 'a>>;

/// A store on this node that is slow to answer is busy, not far: hedging
/// away from it would fetch over the network what the node holds (a chunk
/// must cross the network once per node). So a local store gets this long
/// before the next store is asked too; a miss or an error still moves on
/// at once.
const LOCAL_HEDGE: std::time::Duration = std::time::Duration::from_secs(2);

fn hedge_after(sh: &Shared, asked: Option<&&Member>) -> std::time::Duration {
    match asked {
        Some(m) if m.local => sh.hedge_delay.max(LOCAL_HEDGE),
        _ => sh.hedge_delay,
    }
}

pub(crate) async fn get(sh: &Arc<Shared>, id: &ChunkId) -> Result<Option<Bytes>> {
    let order = sh.read_order(id);
    let mut inflight: FuturesUnordered<Ask<'_>> = FuturesUnordered::new();
    let mut next = 0usize;
    let mut faults: Vec<(usize, Fault)> = Vec::new();
    let mut errors: Vec<Error> = Vec::new();
    let ask = |i: usize| -> Ask<'_> {
        let m: &Member = order[i];
        Box::pin(async move { (i, m.store.get(id).await) })
    };
    if !order.is_empty() {
        inflight.push(ask(0));
        next = 1;
    }
    let hedge = tokio::time::sleep(hedge_after(sh, order.first()));
    tokio::pin!(hedge);
    while !inflight.is_empty() {
        tokio::select! {
            Some((i, res)) = inflight.next() => {
                match res {
                    Ok(Some(blob)) => match verify_blob(id, &blob) {
                        Ok(()) => {
                            let bad: Vec<(&Member, Fault)> =
                                faults.iter().map(|(j, f)| (order[*j], *f)).collect();
                            spawn_repairs(sh, id, &blob, &bad);
                            return Ok(Some(blob));
                        }
                        Err(e) => {
                            tracing::warn!("{}: {}", order[i].store.url(), e);
                            faults.push((i, Fault::Corrupt));
                        }
                    },
                    Ok(None) => faults.push((i, Fault::Missing)),
                    Err(e) => errors.push(e),
                }
                // Move on at once.
                if next < order.len() {
                    inflight.push(ask(next));
                    next += 1;
                    hedge.as_mut().reset(tokio::time::Instant::now() + hedge_after(sh, order.get(next - 1)));
                }
            }
            () = &mut hedge, if next < order.len() => {
                tracing::debug!("chunk {id}: {} slow, hedging to {}", order[next - 1].store.url(), order[next].store.url());
                inflight.push(ask(next));
                next += 1;
                hedge.as_mut().reset(tokio::time::Instant::now() + hedge_after(sh, order.get(next - 1)));
            }
        }
    }
    // No store had a good copy. An acknowledged write may still be only in
    // the replication queue.
    if let Some(blob) = from_queue(sh, id).await {
        return Ok(Some(blob));
    }
    if !errors.is_empty() {
        let why = errors.iter().map(|e| e.chain()).collect::<Vec<_>>().join("; ");
        let kind = if errors.len() == 1 { errors[0].kind() } else { ErrorKind::Unavailable };
        return Err(Error::new(kind, format!("chunk {id}: no store could serve it: {why}")));
    }
    if faults.iter().any(|(_, f)| *f == Fault::Corrupt) {
        let urls = faults
            .iter()
            .filter(|(_, f)| *f == Fault::Corrupt)
            .map(|(i, _)| order[*i].store.url())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!("chunk {id}: every copy found is corrupt ({urls})"),
        ));
    }
    Ok(None)
}

async fn from_queue(sh: &Arc<Shared>, id: &ChunkId) -> Option<Bytes> {
    let q = sh.queue.clone()?;
    let i = *id;
    let blob = blocking(move || q.find(&i)).await?;
    verify_blob(id, &blob).ok().map(|()| blob)
}

/// Write the good blob back to stores that missed it or held it corrupt.
pub(crate) fn spawn_repairs(
    sh: &Arc<Shared>,
    id: &ChunkId,
    blob: &Bytes,
    bad: &[(&Member, Fault)],
) {
    if bad.is_empty() {
        return;
    }
    let urls: Vec<(String, Fault)> =
        bad.iter().map(|(m, f)| (m.store.url().to_string(), *f)).collect();
    let (sh2, id, blob) = (sh.clone(), *id, blob.clone());
    sh.repairs.fetch_add(1, Ordering::SeqCst);
    tokio::spawn(async move {
        for (url, fault) in urls {
            repair_one(&sh2, &url, fault, &id, &blob).await;
        }
        if sh2.repairs.fetch_sub(1, Ordering::SeqCst) == 1 {
            sh2.repairs_done.notify_waiters();
        }
    });
}

pub(crate) enum Repair {
    /// The store holds the good blob now.
    Done,
    /// It failed; the write is in the queue.
    Queued(String),
    /// It failed and could not be queued.
    Failed(String),
}

/// Repair one store; a failed repair goes to the queue.
pub(crate) async fn repair_one(
    sh: &Arc<Shared>,
    url: &str,
    fault: Fault,
    id: &ChunkId,
    blob: &Bytes,
) -> Repair {
    let Some(m) = sh.member(url) else {
        return Repair::Failed(format!("{url} is not one of this router's stores"));
    };
    let res = async {
        if fault == Fault::Corrupt {
            m.store.delete(id).await?;
        }
        m.store.put(id, blob.clone()).await
    }
    .await;
    match res {
        Ok(()) => {
            let what = if fault == Fault::Corrupt { "corrupt" } else { "missing" };
            tracing::info!("{url}: repaired {what} chunk {id}");
            Repair::Done
        }
        Err(e) => {
            let why = e.chain();
            tracing::warn!("{url}: repair of chunk {id} failed: {why}");
            if write::enqueue_one(sh, url, id, blob).await {
                Repair::Queued(why)
            } else {
                Repair::Failed(why)
            }
        }
    }
}

pub(crate) async fn has_many(sh: &Arc<Shared>, ids: &[ChunkId]) -> Result<Vec<bool>> {
    let mut found = vec![false; ids.len()];
    let mut errors: Vec<(usize, Error)> = Vec::new();
    // Local stores first; each store is asked only about ids it routes and
    // that no earlier store had.
    let mut members: Vec<&Member> = sh.members.iter().collect();
    members.sort_by_key(|m| !m.local);
    for m in members {
        let idx: Vec<usize> =
            (0..ids.len()).filter(|&i| !found[i] && m.route.contains(ids[i].prefix())).collect();
        if idx.is_empty() {
            continue;
        }
        let ask: Vec<ChunkId> = idx.iter().map(|&i| ids[i]).collect();
        match m.store.has_many(&ask).await {
            Ok(v) => {
                for (&i, present) in idx.iter().zip(v) {
                    found[i] |= present;
                }
            }
            Err(e) => {
                for &i in &idx {
                    errors.push((i, e.duplicate()));
                }
            }
        }
    }
    // Only ids no store had can be wrongly reported missing.
    if let Some((i, e)) = errors.into_iter().find(|(i, _)| !found[*i]) {
        return Err(e.context_prefix(format!("has chunk {}", ids[i])));
    }
    Ok(found)
}

/// Whether every replica routing an id has it. A replica that cannot answer
/// counts as missing the id: the writer then puts it, and the put's quorum
/// and queue decide what happens. Replicas are asked concurrently.
pub(crate) async fn has_many_everywhere(sh: &Arc<Shared>, ids: &[ChunkId]) -> Result<Vec<bool>> {
    let asks = sh.members.iter().map(|m| async move {
        let idx: Vec<usize> =
            (0..ids.len()).filter(|&i| m.route.contains(ids[i].prefix())).collect();
        let ask: Vec<ChunkId> = idx.iter().map(|&i| ids[i]).collect();
        let answer = if ask.is_empty() { Ok(Vec::new()) } else { m.store.has_many(&ask).await };
        (idx, answer)
    });
    let mut everywhere = vec![true; ids.len()];
    let mut routed = vec![false; ids.len()];
    for (idx, answer) in futures::future::join_all(asks).await {
        let present = answer.unwrap_or_else(|_| vec![false; idx.len()]);
        for (&i, p) in idx.iter().zip(present) {
            routed[i] = true;
            everywhere[i] &= p;
        }
    }
    // An id no route covers is on no replica.
    Ok(everywhere.into_iter().zip(routed).map(|(e, r)| e && r).collect())
}
