//! Finishing replication: the background queue drainer, a one-shot drain
//! for `chunkstore repair`, and re-replication of given ids.
//!
//! The drainer retries each target with exponential backoff (per target,
//! `retry_min` doubling up to `retry_max`) and is woken early whenever a
//! new entry is queued. An entry is removed only after its target took the
//! blob, so a crash at any point at worst writes a blob twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::read::{Fault, Repair, repair_one};
use super::{Member, Shared};
use crate::backend::blocking;
use crate::chunk::{ChunkId, verify_blob};
use crate::error::Result;

/// What happened to one (id, store) pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The store took the blob.
    Written,
    /// The store already had a good copy.
    Present,
    /// The store had a corrupt copy; it was replaced.
    Repaired,
    /// The store could not take it now; it is in the queue.
    Queued(String),
    /// The store could not take it and there is no queue.
    Failed(String),
    /// No good copy of the chunk was found anywhere.
    Unreadable(String),
    /// A queue entry for a store this router does not have.
    UnknownTarget,
}

#[derive(Clone, Debug)]
pub struct Event {
    pub id: ChunkId,
    pub target: String,
    pub outcome: Outcome,
}

/// Result of [`Router::drain_queue`](super::Router::drain_queue).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DrainReport {
    pub written: usize,
    /// Entries whose store failed this time (still queued).
    pub failed: usize,
    /// Entries for stores not in this router (left alone).
    pub unknown: usize,
    /// Corrupt entries set aside (`<hex>.corrupt`) because no good copy exists.
    pub quarantined: usize,
    /// Entries left in the queue after the pass.
    pub remaining: usize,
}

/// Result of [`Router::replicate`](super::Router::replicate).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicateReport {
    pub ids: usize,
    pub present: usize,
    pub written: usize,
    pub repaired: usize,
    pub queued: usize,
    pub failed: usize,
    pub unreadable: usize,
}

/// How one queue entry went.
enum Entry {
    Written,
    Gone,
    Quarantined,
}

/// Push one queue entry to its store; an Err means the store failed.
async fn push_entry(sh: &Arc<Shared>, m: &Member, target: &str, id: &ChunkId) -> Result<Entry> {
    let q = sh.queue.clone().expect("draining needs a queue");
    let (q2, t, i) = (q.clone(), target.to_string(), *id);
    let Some(mut blob) = blocking(move || q2.read(&t, &i)).await? else {
        return Ok(Entry::Gone);
    };
    if let Err(e) = verify_blob(id, &blob) {
        // The queue file rotted: take a good copy from any store instead.
        match good_copy(sh, id, Some(target)).await {
            Some(good) => blob = good,
            None => {
                let (q2, t, i) = (q.clone(), target.to_string(), *id);
                let path = blocking(move || q2.quarantine(&t, &i)).await?;
                tracing::error!(
                    "replication queue: {e}; no store has a good copy; set aside as {}",
                    path.display()
                );
                return Ok(Entry::Quarantined);
            }
        }
    }
    m.store.put(id, blob).await?;
    let (t, i) = (target.to_string(), *id);
    blocking(move || q.remove(&t, &i)).await?;
    Ok(Entry::Written)
}

/// A verified copy from any matching store other than `except`.
async fn good_copy(sh: &Arc<Shared>, id: &ChunkId, except: Option<&str>) -> Option<Bytes> {
    for m in sh.read_order(id) {
        if Some(m.store.url()) == except {
            continue;
        }
        if let Ok(Some(b)) = m.store.get(id).await {
            if verify_blob(id, &b).is_ok() {
                return Some(b);
            }
        }
    }
    None
}

/// The background drainer: runs until the router is dropped (aborted).
pub(crate) async fn background(sh: Arc<Shared>) {
    let mut backoff: HashMap<String, (Instant, Duration)> = HashMap::new();
    let mut warned: Vec<String> = Vec::new();
    loop {
        let wait = pass(&sh, &mut backoff, &mut warned).await;
        match wait {
            Some(d) => {
                tokio::select! {
                    () = tokio::time::sleep(d) => {}
                    () = sh.queued.notified() => {}
                }
            }
            None => sh.queued.notified().await,
        }
    }
}

/// One pass over the queue honouring per-target backoff. Returns how long
/// until the next retry is due (None: nothing left to retry).
async fn pass(
    sh: &Arc<Shared>,
    backoff: &mut HashMap<String, (Instant, Duration)>,
    warned: &mut Vec<String>,
) -> Option<Duration> {
    let q = sh.queue.clone()?;
    let pending = match blocking(move || q.pending()).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("{}", e.chain());
            return Some(sh.retry_max);
        }
    };
    let mut earliest: Option<Instant> = None;
    for p in pending {
        let Some(m) = sh.member(&p.target) else {
            if !warned.contains(&p.target) {
                tracing::warn!(
                    "replication queue holds {} chunk(s) for {}, which is not one of this router's stores",
                    p.ids.len(),
                    p.target
                );
                warned.push(p.target.clone());
            }
            continue;
        };
        let now = Instant::now();
        if let Some((due, _)) = backoff.get(&p.target) {
            if *due > now {
                earliest = Some(earliest.map_or(*due, |e| e.min(*due)));
                continue;
            }
        }
        let mut failed = false;
        for id in &p.ids {
            if let Err(e) = push_entry(sh, m, &p.target, id).await {
                let delay = backoff
                    .get(&p.target)
                    .map(|(_, d)| (*d * 2).min(sh.retry_max))
                    .unwrap_or(sh.retry_min);
                tracing::info!(
                    "{}: queued replication still failing ({}); retry in {delay:?}",
                    p.target,
                    e.chain()
                );
                let due = Instant::now() + delay;
                backoff.insert(p.target.clone(), (due, delay));
                earliest = Some(earliest.map_or(due, |x| x.min(due)));
                failed = true;
                break;
            }
        }
        if !failed && backoff.remove(&p.target).is_some() {
            tracing::info!("{}: queued replication caught up", p.target);
        }
    }
    earliest.map(|e| e.saturating_duration_since(Instant::now()))
}

/// Try every entry now; a store that fails is skipped for the rest of the
/// pass (its entries stay queued).
pub(crate) async fn drain_all(
    sh: &Arc<Shared>,
    progress: &mut dyn FnMut(&Event),
) -> Result<DrainReport> {
    let mut rep = DrainReport::default();
    let Some(q) = sh.queue.clone() else {
        return Ok(rep);
    };
    let q2 = q.clone();
    for p in blocking(move || q2.pending()).await? {
        let Some(m) = sh.member(&p.target) else {
            rep.unknown += p.ids.len();
            for id in &p.ids {
                progress(&Event {
                    id: *id,
                    target: p.target.clone(),
                    outcome: Outcome::UnknownTarget,
                });
            }
            continue;
        };
        let mut down: Option<String> = None;
        for id in &p.ids {
            if let Some(why) = &down {
                rep.failed += 1;
                progress(&Event {
                    id: *id,
                    target: p.target.clone(),
                    outcome: Outcome::Queued(why.clone()),
                });
                continue;
            }
            let outcome = match push_entry(sh, m, &p.target, id).await {
                Ok(Entry::Written) => {
                    rep.written += 1;
                    Outcome::Written
                }
                Ok(Entry::Gone) => continue,
                Ok(Entry::Quarantined) => {
                    rep.quarantined += 1;
                    Outcome::Unreadable("corrupt queue entry, no good copy anywhere".into())
                }
                Err(e) => {
                    rep.failed += 1;
                    let why = e.chain();
                    down = Some(why.clone());
                    Outcome::Queued(why)
                }
            };
            progress(&Event { id: *id, target: p.target.clone(), outcome });
        }
    }
    rep.remaining = blocking(move || q.len()).await?;
    Ok(rep)
}

/// Ids per has_many round in [`replicate`].
const BATCH: usize = 1024;

pub(crate) async fn replicate(
    sh: &Arc<Shared>,
    ids: &[ChunkId],
    verify: bool,
    progress: &mut dyn FnMut(&Event),
) -> Result<ReplicateReport> {
    let mut rep = ReplicateReport { ids: ids.len(), ..Default::default() };
    for batch in ids.chunks(BATCH) {
        // For each id: which stores lack it (or, verifying, hold it bad).
        let mut faults: Vec<Vec<(usize, Fault)>> = vec![Vec::new(); batch.len()];
        if verify {
            for (k, id) in batch.iter().enumerate() {
                for (mi, m) in sh.members.iter().enumerate() {
                    if !m.route.contains(id.prefix()) {
                        continue;
                    }
                    match m.store.get(id).await {
                        Ok(Some(b)) if verify_blob(id, &b).is_ok() => {}
                        Ok(Some(_)) => faults[k].push((mi, Fault::Corrupt)),
                        Ok(None) => faults[k].push((mi, Fault::Missing)),
                        // A store that fails the read is treated as missing
                        // the chunk: writing (or queueing) it is always safe.
                        Err(e) => {
                            tracing::warn!("{}", e.chain());
                            faults[k].push((mi, Fault::Missing));
                        }
                    }
                }
            }
        } else {
            for (mi, m) in sh.members.iter().enumerate() {
                let idx: Vec<usize> =
                    (0..batch.len()).filter(|&k| m.route.contains(batch[k].prefix())).collect();
                if idx.is_empty() {
                    continue;
                }
                let ask: Vec<ChunkId> = idx.iter().map(|&k| batch[k]).collect();
                match m.store.has_many(&ask).await {
                    Ok(v) => {
                        for (&k, present) in idx.iter().zip(v) {
                            if !present {
                                faults[k].push((mi, Fault::Missing));
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!("{}", e.chain());
                        for &k in &idx {
                            faults[k].push((mi, Fault::Missing));
                        }
                    }
                }
            }
        }
        for (k, id) in batch.iter().enumerate() {
            fix_one(sh, id, &faults[k], &mut rep, progress).await;
        }
    }
    Ok(rep)
}

async fn fix_one(
    sh: &Arc<Shared>,
    id: &ChunkId,
    faults: &[(usize, Fault)],
    rep: &mut ReplicateReport,
    progress: &mut dyn FnMut(&Event),
) {
    let targets: Vec<&Member> = sh.matching(id).collect();
    let bad: Vec<usize> = faults.iter().map(|(mi, _)| *mi).collect();
    // Stores with no fault had a (verified, when verifying) copy.
    for (mi, m) in sh.members.iter().enumerate() {
        if m.route.contains(id.prefix()) && !bad.contains(&mi) {
            rep.present += 1;
            progress(&Event {
                id: *id,
                target: m.store.url().to_string(),
                outcome: Outcome::Present,
            });
        }
    }
    if faults.is_empty() {
        return;
    }
    let Some(blob) = good_copy(sh, id, None).await else {
        rep.unreadable += 1;
        let why = if targets.len() == faults.len() {
            "no store holds a good copy"
        } else {
            "no good copy could be read"
        };
        for (mi, _) in faults {
            progress(&Event {
                id: *id,
                target: sh.members[*mi].store.url().to_string(),
                outcome: Outcome::Unreadable(why.into()),
            });
        }
        return;
    };
    for (mi, fault) in faults {
        let url = sh.members[*mi].store.url().to_string();
        let outcome = match repair_one(sh, &url, *fault, id, &blob).await {
            Repair::Done if *fault == Fault::Corrupt => {
                rep.repaired += 1;
                Outcome::Repaired
            }
            Repair::Done => {
                rep.written += 1;
                Outcome::Written
            }
            Repair::Queued(why) => {
                rep.queued += 1;
                Outcome::Queued(why)
            }
            Repair::Failed(why) => {
                rep.failed += 1;
                Outcome::Failed(why)
            }
        };
        progress(&Event { id: *id, target: url, outcome });
    }
}
