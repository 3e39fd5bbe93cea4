//! fsck: read every record of every segment and check its framing and CRCs
//! (and optionally `BLAKE3(blob) == id`); check that every index entry
//! points at a sound record of its id. Live records that fail are moved
//! aside into `quarantine/` and dropped from the index, so the store then
//! reports them missing (a router can repair them) instead of corrupt.

use std::collections::HashSet;
use std::path::PathBuf;

use super::Inner;
use super::record::{Kind, Pos};
use super::segment::{Item, Scanner};
use crate::chunk::ChunkId;
use crate::error::{Error, Result};

#[derive(Clone, Debug, Default)]
pub struct FsckOptions {
    /// Also check `BLAKE3(blob) == id` for live blobs (content-addressed
    /// stores only: the 0-db server keeps values under other ids).
    pub verify_ids: bool,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct FsckReport {
    pub segments: u64,
    pub records: u64,
    pub live_blobs: u64,
    /// Sound blob records no longer in the index (garbage for compaction).
    pub dead_blobs: u64,
    pub tombstones: u64,
    /// Live records that failed a check: quarantined.
    pub bad_live: u64,
    /// Of those, blobs whose BLAKE3 is not their id (with `verify_ids`).
    pub id_mismatches: u64,
    /// Unsound records already out of the index (garbage for compaction).
    pub bad_dead: u64,
    /// Bytes that parse as no record (garbage for compaction).
    pub damaged_bytes: u64,
    /// Index entries that pointed at no sound record: quarantined.
    pub dangling: u64,
    /// Torn tail bytes cut when this store was opened.
    pub truncated_at_open: u64,
    pub quarantined: Vec<PathBuf>,
    /// One line per problem found.
    pub problems: Vec<String>,
}

impl FsckReport {
    /// No live data was found damaged.
    pub fn is_clean(&self) -> bool {
        self.bad_live == 0 && self.dangling == 0
    }
}

impl Inner {
    pub(crate) async fn fsck(&self, opts: &super::FsckOptions) -> Result<FsckReport> {
        let _maint = self.maint_lock.lock().await;
        let mut rep = FsckReport {
            truncated_at_open: self.open_report.lock().truncated_bytes,
            ..Default::default()
        };
        let segs: Vec<(u32, std::sync::Arc<std::fs::File>, u64)> = {
            let st = self.state.read();
            st.segs.iter().map(|(n, s)| (*n, s.file.clone(), s.size)).collect()
        };
        let mut sound: HashSet<Pos> = HashSet::new();
        let mut bad: Vec<(ChunkId, Pos, String)> = Vec::new();
        for (n, file, size) in &segs {
            rep.segments += 1;
            let mut sc = Scanner::new(self.engine.clone(), file.clone(), 0, *size);
            let ctx = |what: &str| format!("{}: fsck segment {n}: {what}", self.name);
            while let Some(item) = sc.next().await.map_err(|e| Error::io(ctx("read"), e))? {
                let at = Pos { seg: *n, off: item.pos() as u32 };
                match item {
                    Item::Record { header, payload, .. } => {
                        rep.records += 1;
                        if header.kind == Kind::Tombstone {
                            rep.tombstones += 1;
                            continue;
                        }
                        if !self.points_at(&header.id, at) {
                            rep.dead_blobs += 1;
                            continue;
                        }
                        if opts.verify_ids && ChunkId::of_blob(&payload) != header.id {
                            rep.id_mismatches += 1;
                            bad.push((header.id, at, "blob does not hash to its id".into()));
                            continue;
                        }
                        rep.live_blobs += 1;
                        sound.insert(at);
                    }
                    Item::BadPayload { header, why, .. } => {
                        rep.records += 1;
                        if self.points_at(&header.id, at) {
                            bad.push((header.id, at, why.to_string()));
                        } else {
                            rep.bad_dead += 1;
                        }
                    }
                    Item::Damaged { pos, len, why } => {
                        rep.damaged_bytes += len;
                        rep.problems.push(format!(
                            "segment {n}: {len} damaged bytes at {pos} ({why}): left for compaction"
                        ));
                    }
                    Item::Torn { pos, why } => {
                        rep.damaged_bytes += size - pos;
                        rep.problems.push(format!(
                            "segment {n}: nothing sound from {pos} to its end at {size} ({why})"
                        ));
                    }
                }
            }
        }
        // Entries in the checked range that no sound record backs.
        {
            let st = self.state.read();
            st.index.for_each(|id, loc, _| {
                let checked = segs
                    .iter()
                    .any(|(n, _, size)| *n == loc.pos.seg && u64::from(loc.pos.off) < *size);
                let known = sound.contains(&loc.pos) || bad.iter().any(|(_, p, _)| *p == loc.pos);
                if checked && !known {
                    bad.push((*id, loc.pos, "no sound record of this id there".into()));
                    rep.dangling += 1;
                }
            });
        }
        rep.bad_live = bad.len() as u64 - rep.dangling;
        for (id, pos, why) in bad {
            rep.problems.push(format!(
                "chunk {id} (segment {}, offset {}): {why}: quarantined",
                pos.seg, pos.off
            ));
            self.quarantine(&id, pos, &why).await?;
            let name = format!("{:08}-{:010}-{id}.bad", pos.seg, pos.off);
            let path = self.dir.join(super::open::QUARANTINE).join(name);
            if path.exists() {
                rep.quarantined.push(path);
            }
        }
        Ok(rep)
    }

    fn points_at(&self, id: &ChunkId, at: Pos) -> bool {
        self.state.read().index.get(id).is_some_and(|(l, _)| l.pos == at)
    }
}
