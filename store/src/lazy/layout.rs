//! Where the chunks of a `LazyFile` lie: fixed-size chunks over a total size
//! (nbd devices, fixed-chunk images) or explicit boundaries (content-defined
//! chunking, where every chunk has its own length).

use std::ops::Range;
use std::sync::Arc;

use crate::chunk::CHUNK_SIZE_MAX;
use crate::error::{Result, invalid};

/// Smallest chunk a fixed layout accepts (one sector).
pub const MIN_FIXED_CHUNK: u32 = 512;

/// Chunk boundaries of a lazily filled file.
///
/// Invariants: every chunk is 1..=`CHUNK_SIZE_MAX` bytes long, chunks tile
/// `[0, size)` without gaps, and there is at least one chunk unless the
/// size is 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Chunks of `chunk_size` bytes; the last one may be shorter.
    Fixed { chunk_size: u32, size: u64 },
    /// `starts[i]` is the offset of chunk i; the last entry is the total size.
    Explicit { starts: Arc<[u64]> },
}

impl Layout {
    /// Fixed-size chunks (`MIN_FIXED_CHUNK..=CHUNK_SIZE_MAX` bytes).
    pub fn fixed(chunk_size: u32, size: u64) -> Result<Layout> {
        if !(MIN_FIXED_CHUNK as usize..=CHUNK_SIZE_MAX).contains(&(chunk_size as usize)) {
            return Err(invalid(format!(
                "chunk size {chunk_size} is outside {MIN_FIXED_CHUNK}..={CHUNK_SIZE_MAX} bytes"
            )));
        }
        Ok(Layout::Fixed { chunk_size, size })
    }

    /// Explicit boundaries from the length of every chunk, in file order.
    pub fn from_lens(lens: impl IntoIterator<Item = u64>) -> Result<Layout> {
        let mut starts = vec![0u64];
        let mut end = 0u64;
        for (i, len) in lens.into_iter().enumerate() {
            if len == 0 || len > CHUNK_SIZE_MAX as u64 {
                return Err(invalid(format!(
                    "chunk {i} is {len} bytes long (want 1..={CHUNK_SIZE_MAX})"
                )));
            }
            end = end
                .checked_add(len)
                .ok_or_else(|| invalid(format!("chunk {i}: file size overflows u64")))?;
            starts.push(end);
        }
        Ok(Layout::Explicit { starts: starts.into() })
    }

    /// Total size in bytes.
    pub fn size(&self) -> u64 {
        match self {
            Layout::Fixed { size, .. } => *size,
            Layout::Explicit { starts } => *starts.last().expect("starts is never empty"),
        }
    }

    /// Number of chunks.
    pub fn count(&self) -> u64 {
        match self {
            Layout::Fixed { chunk_size, size } => size.div_ceil(*chunk_size as u64),
            Layout::Explicit { starts } => starts.len() as u64 - 1,
        }
    }

    /// Byte range of chunk `i` (`i < count()`).
    pub fn span(&self, i: u64) -> Range<u64> {
        debug_assert!(i < self.count(), "chunk {i} out of {}", self.count());
        match self {
            Layout::Fixed { chunk_size, size } => {
                let start = i * *chunk_size as u64;
                start..(start + *chunk_size as u64).min(*size)
            }
            Layout::Explicit { starts } => starts[i as usize]..starts[i as usize + 1],
        }
    }

    /// Length of chunk `i`.
    pub fn len_of(&self, i: u64) -> usize {
        let s = self.span(i);
        (s.end - s.start) as usize
    }

    /// The chunk holding byte `off` (`off < size()`).
    pub fn index_of(&self, off: u64) -> u64 {
        debug_assert!(off < self.size());
        match self {
            Layout::Fixed { chunk_size, .. } => off / *chunk_size as u64,
            // The last start <= off.
            Layout::Explicit { starts } => (starts.partition_point(|&s| s <= off) - 1) as u64,
        }
    }

    /// Chunks overlapping `[off, off+len)` (clamped to the file).
    pub fn chunks_in(&self, off: u64, len: u64) -> Range<u64> {
        let end = off.saturating_add(len).min(self.size());
        if off >= end {
            return 0..0;
        }
        self.index_of(off)..self.index_of(end - 1) + 1
    }

    /// A digest of the boundaries, recorded in the state file header.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        match self {
            Layout::Fixed { chunk_size, size } => {
                h.update(b"fixed");
                h.update(&chunk_size.to_le_bytes());
                h.update(&size.to_le_bytes());
            }
            Layout::Explicit { starts } => {
                h.update(b"explicit");
                for s in starts.iter() {
                    h.update(&s.to_le_bytes());
                }
            }
        }
        *h.finalize().as_bytes()
    }

    /// Fixed chunk size, if the layout is fixed.
    pub fn fixed_chunk_size(&self) -> Option<u32> {
        match self {
            Layout::Fixed { chunk_size, .. } => Some(*chunk_size),
            Layout::Explicit { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed() {
        let l = Layout::fixed(4096, 10_000).unwrap();
        assert_eq!(l.count(), 3);
        assert_eq!(l.span(2), 8192..10_000);
        assert_eq!(l.index_of(4095), 0);
        assert_eq!(l.index_of(4096), 1);
        assert_eq!(l.chunks_in(4000, 200), 0..2);
        assert_eq!(l.chunks_in(9999, 100), 2..3);
        assert_eq!(l.chunks_in(10_000, 1), 0..0);
        assert!(Layout::fixed(100, 1).is_err());
        assert!(Layout::fixed(8 << 20, 1).is_err());
        assert_eq!(Layout::fixed(4096, 0).unwrap().count(), 0);
    }

    #[test]
    fn explicit() {
        let l = Layout::from_lens([10, 5, 100]).unwrap();
        assert_eq!(l.size(), 115);
        assert_eq!(l.count(), 3);
        assert_eq!(l.span(1), 10..15);
        assert_eq!(l.index_of(9), 0);
        assert_eq!(l.index_of(10), 1);
        assert_eq!(l.index_of(15), 2);
        assert_eq!(l.index_of(114), 2);
        assert_eq!(l.chunks_in(12, 4), 1..3);
        assert!(Layout::from_lens([10, 0]).is_err());
        assert!(Layout::from_lens([(CHUNK_SIZE_MAX + 1) as u64]).is_err());
        assert_eq!(Layout::from_lens([]).unwrap().count(), 0);
        assert_ne!(l.digest(), Layout::from_lens([10, 6, 99]).unwrap().digest());
    }
}
