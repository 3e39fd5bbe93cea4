//! The in-memory index: chunk id → record location, at ≤ 64 bytes a chunk.
//!
//! A general hash map costs 100+ bytes per 48-byte entry right after it
//! grows. Instead the bulk of the index is one sorted vector of exact
//! capacity (48 bytes an entry, binary searched), plus a small hash map of
//! recent inserts that is merged into the vector whenever it reaches a
//! sixteenth of it. Removed vector entries are marked dead until the next
//! merge. Worst case ≈ 48 + 48/16 (dead) + 112/16 (delta) ≈ 58 bytes.
//!
//! The sorted vector is also the snapshot format's order, so a snapshot
//! loads without hashing a single key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::chunk::ChunkId;

use super::record::{HEADER_LEN, Pos};

/// Where a live blob is: its record position and blob length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    pub pos: Pos,
    pub len: u32,
}

impl Loc {
    /// Bytes of the whole record on disk.
    pub fn record_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.len)
    }
}

/// A sorted-vector entry (48 bytes). `atime` is the store clock at the
/// last put or get: the LRU order for eviction.
#[derive(Debug)]
pub struct Slot {
    pub id: [u8; 32],
    pub seg: u32,
    pub off: u32,
    pub len: u32,
    pub atime: AtomicU32,
}

const DEAD: u32 = u32::MAX;

impl Slot {
    pub fn new(id: ChunkId, loc: Loc, atime: u32) -> Slot {
        Slot {
            id: id.0,
            seg: loc.pos.seg,
            off: loc.pos.off,
            len: loc.len,
            atime: AtomicU32::new(atime),
        }
    }

    fn loc(&self) -> Loc {
        Loc { pos: Pos { seg: self.seg, off: self.off }, len: self.len }
    }

    fn is_dead(&self) -> bool {
        self.seg == DEAD
    }
}

#[derive(Debug)]
struct DeltaVal {
    loc: Loc,
    atime: AtomicU32,
}

/// Merge the delta once it holds more than this many entries, or a
/// sixteenth of the sorted vector, whichever is larger.
const MIN_DELTA: usize = 4096;

#[derive(Default)]
pub struct Index {
    main: Vec<Slot>,
    main_dead: usize,
    delta: HashMap<ChunkId, DeltaVal>,
    /// While loading, merge only once at the end.
    bulk: bool,
}

impl Index {
    pub fn new() -> Index {
        Index::default()
    }

    /// Build from slots sorted strictly by id (a snapshot). Returns None if
    /// they are not.
    pub fn from_sorted(main: Vec<Slot>) -> Option<Index> {
        if main.windows(2).any(|w| w[0].id >= w[1].id) || main.iter().any(Slot::is_dead) {
            return None;
        }
        Some(Index { main, ..Default::default() })
    }

    pub fn len(&self) -> usize {
        self.main.len() - self.main_dead + self.delta.len()
    }

    fn find_main(&self, id: &ChunkId) -> Option<usize> {
        self.main.binary_search_by(|s| s.id.cmp(&id.0)).ok()
    }

    /// The location of `id`, and its access-time cell.
    pub fn get(&self, id: &ChunkId) -> Option<(Loc, &AtomicU32)> {
        if let Some(i) = self.find_main(id) {
            let s = &self.main[i];
            if !s.is_dead() {
                return Some((s.loc(), &s.atime));
            }
        }
        self.delta.get(id).map(|v| (v.loc, &v.atime))
    }

    /// Insert or replace; returns the previous location.
    pub fn insert(&mut self, id: ChunkId, loc: Loc, atime: u32) -> Option<Loc> {
        if let Some(i) = self.find_main(&id) {
            let s = &mut self.main[i];
            let old = (!s.is_dead()).then(|| s.loc());
            if old.is_none() {
                self.main_dead -= 1;
            }
            s.seg = loc.pos.seg;
            s.off = loc.pos.off;
            s.len = loc.len;
            *s.atime.get_mut() = atime;
            return old;
        }
        let old = self.delta.insert(id, DeltaVal { loc, atime: AtomicU32::new(atime) });
        self.maybe_merge();
        old.map(|v| v.loc)
    }

    #[cfg(test)]
    pub fn remove(&mut self, id: &ChunkId) -> Option<Loc> {
        self.remove_if(id, |_| true)
    }

    /// Remove `id` only if its entry passes `pred` (e.g. still points at a
    /// given position).
    pub fn remove_if(&mut self, id: &ChunkId, pred: impl FnOnce(Loc) -> bool) -> Option<Loc> {
        if let Some(i) = self.find_main(id) {
            let s = &mut self.main[i];
            if !s.is_dead() {
                let loc = s.loc();
                if !pred(loc) {
                    return None;
                }
                s.seg = DEAD;
                self.main_dead += 1;
                self.maybe_merge();
                return Some(loc);
            }
        }
        match self.delta.get(id) {
            Some(v) if pred(v.loc) => self.delta.remove(id).map(|v| v.loc),
            _ => None,
        }
    }

    /// Every live entry, in no particular order.
    pub fn for_each(&self, mut f: impl FnMut(&ChunkId, Loc, u32)) {
        for s in self.main.iter().filter(|s| !s.is_dead()) {
            f(&ChunkId(s.id), s.loc(), s.atime.load(Ordering::Relaxed));
        }
        for (id, v) in &self.delta {
            f(id, v.loc, v.atime.load(Ordering::Relaxed));
        }
    }

    /// Every live entry in id order (snapshot writing).
    pub fn for_each_sorted(&self, mut f: impl FnMut(&ChunkId, Loc, u32)) {
        let mut delta: Vec<(&ChunkId, &DeltaVal)> = self.delta.iter().collect();
        delta.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut d = delta.into_iter().peekable();
        for s in self.main.iter().filter(|s| !s.is_dead()) {
            while let Some((id, v)) = d.next_if(|(id, _)| id.0 < s.id) {
                f(id, v.loc, v.atime.load(Ordering::Relaxed));
            }
            f(&ChunkId(s.id), s.loc(), s.atime.load(Ordering::Relaxed));
        }
        for (id, v) in d {
            f(id, v.loc, v.atime.load(Ordering::Relaxed));
        }
    }

    /// Keep only entries for which `keep` is true; returns how many went.
    pub fn retain(&mut self, mut keep: impl FnMut(&ChunkId, Loc) -> bool) -> usize {
        let before = self.len();
        for s in self.main.iter_mut().filter(|s| !s.is_dead()) {
            if !keep(&ChunkId(s.id), s.loc()) {
                s.seg = DEAD;
                self.main_dead += 1;
            }
        }
        self.delta.retain(|id, v| keep(id, v.loc));
        let gone = before - self.len();
        self.maybe_merge();
        gone
    }

    /// Subtract `by` from every access time (clock rebase), saturating.
    pub fn age_all(&self, by: u32) {
        let age = |a: &AtomicU32| {
            let v = a.load(Ordering::Relaxed);
            a.store(v.saturating_sub(by), Ordering::Relaxed);
        };
        self.main.iter().for_each(|s| age(&s.atime));
        self.delta.values().for_each(|v| age(&v.atime));
    }

    /// Load mode: no merges until [`finish_bulk`](Index::finish_bulk).
    pub fn set_bulk(&mut self, on: bool) {
        self.bulk = on;
        if !on {
            self.merge();
        }
    }

    fn maybe_merge(&mut self) {
        if self.bulk {
            return;
        }
        let limit = MIN_DELTA.max(self.main.len() / 16);
        if self.delta.len() > limit || self.main_dead > limit {
            self.merge();
        }
    }

    /// Fold the delta into the sorted vector and drop dead slots.
    pub fn merge(&mut self) {
        let mut delta: Vec<Slot> = std::mem::take(&mut self.delta)
            .into_iter()
            .map(|(id, v)| Slot::new(id, v.loc, v.atime.into_inner()))
            .collect();
        delta.sort_unstable_by_key(|s| s.id);
        let live = self.main.len() - self.main_dead;
        let mut out = Vec::with_capacity(live + delta.len());
        let mut d = delta.into_iter().peekable();
        for s in std::mem::take(&mut self.main).into_iter().filter(|s| !s.is_dead()) {
            while let Some(x) = d.next_if(|x| x.id < s.id) {
                out.push(x);
            }
            out.push(s);
        }
        out.extend(d);
        self.main = out;
        self.main_dead = 0;
    }

    /// Heap bytes the index holds (vector capacity plus hash-map buckets).
    pub fn memory_bytes(&self) -> usize {
        let main = self.main.capacity() * std::mem::size_of::<Slot>();
        let cap = self.delta.capacity();
        let buckets = if cap == 0 {
            0
        } else if cap < 8 {
            (cap + 1).next_power_of_two()
        } else {
            (cap * 8 / 7).next_power_of_two()
        };
        let delta = buckets * (std::mem::size_of::<(ChunkId, DeltaVal)>() + 1);
        main + delta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u32) -> ChunkId {
        ChunkId(*blake3::hash(&i.to_le_bytes()).as_bytes())
    }

    fn loc(i: u32) -> Loc {
        Loc { pos: Pos { seg: i % 7, off: i }, len: i % 1000 }
    }

    #[test]
    fn behaves_like_a_map_across_merges() {
        assert_eq!(std::mem::size_of::<Slot>(), 48);
        let mut ix = Index::new();
        let mut model = std::collections::HashMap::new();
        for i in 0..50_000u32 {
            ix.insert(id(i), loc(i), i);
            model.insert(id(i), loc(i));
            if i % 3 == 0 {
                let victim = id(i / 2);
                assert_eq!(ix.remove(&victim), model.remove(&victim));
            }
            if i % 1000 == 0 {
                // Replace an existing entry.
                let k = id(i / 3);
                if let Some(old) = model.get_mut(&k) {
                    assert_eq!(ix.insert(k, loc(i + 1), i), Some(*old));
                    *old = loc(i + 1);
                }
            }
        }
        assert_eq!(ix.len(), model.len());
        for i in 0..50_000u32 {
            assert_eq!(ix.get(&id(i)).map(|(l, _)| l), model.get(&id(i)).copied());
        }
        // remove_if honours its predicate.
        let (k, l) = model.iter().next().map(|(k, l)| (*k, *l)).unwrap();
        assert_eq!(ix.remove_if(&k, |x| x.pos.off != l.pos.off), None);
        assert_eq!(ix.remove_if(&k, |x| x == l), Some(l));
        model.remove(&k);
        // Sorted iteration is sorted and complete.
        let mut prev: Option<ChunkId> = None;
        let mut n = 0;
        ix.for_each_sorted(|id, l, _| {
            assert!(prev.is_none_or(|p| p < *id));
            assert_eq!(model.get(id), Some(&l));
            prev = Some(*id);
            n += 1;
        });
        assert_eq!(n, model.len());
    }

    #[test]
    fn memory_stays_under_64_bytes_per_entry() {
        let mut ix = Index::new();
        let mut worst = 0f64;
        for i in 0..300_000u32 {
            ix.insert(id(i), loc(i), i);
            if i > 20_000 && i % 997 == 0 {
                worst = worst.max(ix.memory_bytes() as f64 / ix.len() as f64);
            }
        }
        assert!(worst <= 64.0, "index used {worst:.1} bytes per entry");
    }
}
