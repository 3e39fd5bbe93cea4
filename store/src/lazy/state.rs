//! Chunk states and the in-memory state table.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// What the local sparse file holds for one chunk.
///
/// Which states read the data file: only `Present` and `Dirty`. `Absent`
/// and `Zero` never look at it, so a crash that leaves bytes in an absent
/// or zeroed chunk's region can never be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChunkState {
    /// Not local: reads fetch it from the source (or give zeros when the
    /// source says the chunk is zero).
    Absent = 0,
    /// The file holds the source's plaintext, durably.
    Present = 1,
    /// The file holds locally written content that may differ from the source.
    Dirty = 2,
    /// Trimmed or zeroed locally: reads give zeros without fetching.
    Zero = 3,
}

impl ChunkState {
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(c: u8) -> ChunkState {
        match c & 3 {
            0 => ChunkState::Absent,
            1 => ChunkState::Present,
            2 => ChunkState::Dirty,
            _ => ChunkState::Zero,
        }
    }

    /// Differs (or may differ) from the source: what a commit must upload.
    pub fn is_changed(self) -> bool {
        matches!(self, ChunkState::Dirty | ChunkState::Zero)
    }
}

/// Current (in-memory) state of every chunk, with per-state counts.
///
/// Updated only by the holder of the chunk's job (see `fill`), or by
/// writes to chunks already `Dirty`, which do not change state.
pub(crate) struct StateTable {
    states: Vec<AtomicU8>,
    counts: [AtomicU64; 4],
}

impl StateTable {
    pub fn new(codes: impl Iterator<Item = u8>) -> StateTable {
        let counts: [AtomicU64; 4] = Default::default();
        let states: Vec<AtomicU8> = codes
            .map(|c| {
                counts[c as usize & 3].fetch_add(1, Ordering::Relaxed);
                AtomicU8::new(c & 3)
            })
            .collect();
        StateTable { states, counts }
    }

    pub fn len(&self) -> u64 {
        self.states.len() as u64
    }

    pub fn get(&self, i: u64) -> ChunkState {
        ChunkState::from_code(self.states[i as usize].load(Ordering::Acquire))
    }

    /// Set and return the previous state.
    pub fn set(&self, i: u64, s: ChunkState) -> ChunkState {
        let old = ChunkState::from_code(self.states[i as usize].swap(s.code(), Ordering::AcqRel));
        if old != s {
            self.counts[old.code() as usize].fetch_sub(1, Ordering::Relaxed);
            self.counts[s.code() as usize].fetch_add(1, Ordering::Relaxed);
        }
        old
    }

    pub fn count(&self, s: ChunkState) -> u64 {
        self.counts[s.code() as usize].load(Ordering::Relaxed)
    }
}
