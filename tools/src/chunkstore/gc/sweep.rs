//! Sweep: decide and apply, one run of the three-phase rule.
//!
//! A chunk the kept flists do not reference goes through three phases, each
//! at least `grace` long, before its bytes are gone:
//!
//! 1. **suspect**: a run finds it unreferenced and records when. It stays
//!    in the store. A pack that uploaded it and is still running has
//!    `grace` to finish and get its flist into the keep set.
//! 2. **hidden**: a run at least `grace` later finds it still unreferenced.
//!    The blob is copied to the trash (durably), then deleted from the
//!    store. From now on a pack asking the store sees it missing and
//!    uploads it again, so no new flist can come to depend on the trash
//!    copy. A pack that found it present *before* it was hidden (and so
//!    skipped the upload) has `grace` to get its flist kept: the next run
//!    then puts the blob back (restore).
//! 3. **deleted**: a run at least `grace` after hiding finds it still
//!    unreferenced and removes the trash copy.
//!
//! Plain mark-and-sweep, or a rule counting only runs, would delete a chunk
//! that a running pack has just decided not to upload. The gc cannot see
//! packs, so it makes the decision visible to them instead (hiding), and
//! keeps a way back for the ones that decided earlier (the trash). The
//! assumption, stated in --help: every pack finishes and its flist is in
//! the keep set within `grace` of its start. `--grace 0` runs all three
//! phases at once: an immediate delete, unsafe while packs run.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context, Result};
use zosfs_store::{ChunkId, DynStore};

use super::state::{State, StateDir, Trashed};

/// What a run did (or, dry, would do).
#[derive(Default, Debug)]
pub struct Report {
    pub stored: usize,
    pub unreferenced: usize,
    pub new_suspects: usize,
    pub suspects: usize,
    pub restored: usize,
    pub hidden: usize,
    pub hidden_bytes: u64,
    pub deleted: usize,
    pub deleted_bytes: u64,
    pub trash_left: usize,
    pub trash_left_bytes: u64,
}

pub struct Sweep<'a> {
    pub store: &'a DynStore,
    pub state: &'a StateDir,
    pub referenced: &'a HashSet<ChunkId>,
    pub grace: Duration,
    pub dry: bool,
    pub now: u64,
}

impl Sweep<'_> {
    fn due(&self, since: u64) -> bool {
        self.now.saturating_sub(since) >= self.grace.as_secs()
    }

    /// One run. The state is saved (unless dry) even when a step fails, so
    /// the work done so far is remembered.
    pub async fn run(&self) -> Result<Report> {
        let mut st = self.state.load(self.now)?;
        let mut r = Report::default();
        let outcome = self.steps(&mut st, &mut r).await;
        if !self.dry {
            self.state.save(&st)?;
        }
        outcome?;
        r.suspects = st.suspects.len();
        r.trash_left = st.trash.len();
        r.trash_left_bytes = st.trash.values().map(|t| t.len).sum();
        Ok(r)
    }

    async fn steps(&self, st: &mut State, r: &mut Report) -> Result<()> {
        self.restore(st, r).await?;
        let listed = self.store.list_ids().await?;
        r.stored = listed.len();
        let unreferenced: Vec<ChunkId> =
            listed.into_iter().filter(|id| !self.referenced.contains(id)).collect();
        r.unreferenced = unreferenced.len();
        // A suspect that is referenced again, or gone, starts over.
        let mut suspects = std::mem::take(&mut st.suspects);
        let mut due = Vec::new();
        for id in unreferenced {
            let since = suspects.remove(&id).unwrap_or_else(|| {
                r.new_suspects += 1;
                self.now
            });
            if self.due(since) {
                due.push(id);
            } else {
                st.suspects.insert(id, since);
            }
        }
        for id in due {
            self.hide(st, r, id).await?;
        }
        self.purge(st, r)
    }

    /// Put back every trashed chunk a kept flist references.
    async fn restore(&self, st: &mut State, r: &mut Report) -> Result<()> {
        let back: Vec<ChunkId> =
            st.trash.keys().filter(|id| self.referenced.contains(id)).copied().collect();
        for id in back {
            if !self.dry {
                if !self.store.has(&id).await? {
                    let blob = self.state.read_trash(&id)?;
                    self.store.put(&id, blob).await.with_context(|| format!("restore {id}"))?;
                }
                self.state.remove_trash(&id)?;
            }
            st.trash.remove(&id);
            r.restored += 1;
        }
        Ok(())
    }

    /// Trash copy first (durable), then delete from the store.
    async fn hide(&self, st: &mut State, r: &mut Report, id: ChunkId) -> Result<()> {
        let Some(blob) = self.store.get(&id).await? else { return Ok(()) };
        let len = blob.len() as u64;
        if !self.dry {
            self.state.put_trash(&id, &blob)?;
        }
        st.trash.insert(id, Trashed { since: self.now, len });
        if !self.dry {
            self.store.delete(&id).await?;
        }
        r.hidden += 1;
        r.hidden_bytes += len;
        Ok(())
    }

    /// Remove trash copies whose grace has passed.
    fn purge(&self, st: &mut State, r: &mut Report) -> Result<()> {
        let done: Vec<(ChunkId, Trashed)> =
            st.trash.iter().filter(|(_, t)| self.due(t.since)).map(|(i, t)| (*i, *t)).collect();
        for (id, t) in done {
            if !self.dry {
                self.state.remove_trash(&id)?;
            }
            st.trash.remove(&id);
            r.deleted += 1;
            r.deleted_bytes += t.len;
        }
        Ok(())
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
