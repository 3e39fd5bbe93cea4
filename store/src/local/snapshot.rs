//! Wire format of the index snapshot file (`index`), no I/O here.
//!
//! ```text
//! offset size  field
//! 0      8     magic "ZLIDX001"
//! 8      4     entry size (48)
//! 12     4     reserved, zero
//! 16     8     entry count n
//! 24     4     replay-from segment
//! 28     4     replay-from offset
//! 32     4     store clock
//! 36     12    reserved, zero
//! 48     4     CRC32 of bytes 0..48
//! 52     12    reserved, zero
//! 64     48·n  entries sorted by id: id 32, segment u32, offset u32,
//!              blob length u32, access time u32 (all LE)
//! end    4     CRC32 of the entry bytes
//! ```
//!
//! Invariant: every record before the replay-from position is reflected in
//! the entries; records from that position on are replayed at open.

use super::index::{Index, Loc, Slot};
use super::record::Pos;
use crate::chunk::ChunkId;

const MAGIC: &[u8; 8] = b"ZLIDX001";
pub const HEADER_LEN: usize = 64;
pub const ENTRY_LEN: usize = 48;

pub struct Snapshot {
    pub index: Index,
    pub replay_from: Pos,
    pub clock: u32,
}

/// Serialize the whole index.
pub fn encode(index: &Index, replay_from: Pos, clock: u32) -> Vec<u8> {
    let n = index.len();
    let mut out = Vec::with_capacity(HEADER_LEN + n * ENTRY_LEN + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(ENTRY_LEN as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(n as u64).to_le_bytes());
    out.extend_from_slice(&replay_from.seg.to_le_bytes());
    out.extend_from_slice(&replay_from.off.to_le_bytes());
    out.extend_from_slice(&clock.to_le_bytes());
    out.extend_from_slice(&[0; 12]);
    let crc = crc32fast::hash(&out[..48]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&[0; 12]);
    index.for_each_sorted(|id, loc, atime| {
        out.extend_from_slice(&id.0);
        out.extend_from_slice(&loc.pos.seg.to_le_bytes());
        out.extend_from_slice(&loc.pos.off.to_le_bytes());
        out.extend_from_slice(&loc.len.to_le_bytes());
        out.extend_from_slice(&atime.to_le_bytes());
    });
    let crc = crc32fast::hash(&out[HEADER_LEN..]);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Parse a snapshot; any inconsistency is an error naming it (the caller
/// then falls back to replaying every segment).
pub fn decode(b: &[u8]) -> Result<Snapshot, String> {
    if b.len() < HEADER_LEN + 4 || &b[..8] != MAGIC {
        return Err("not an index snapshot".into());
    }
    if crc32fast::hash(&b[..48]) != u32_at(b, 48) {
        return Err("snapshot header CRC mismatch".into());
    }
    if u32_at(b, 8) as usize != ENTRY_LEN {
        return Err(format!("snapshot entry size {} (want {ENTRY_LEN})", u32_at(b, 8)));
    }
    let n = u64::from_le_bytes(b[16..24].try_into().expect("8 bytes")) as usize;
    let body_len = n.checked_mul(ENTRY_LEN).ok_or("snapshot entry count overflows")?;
    if b.len() != HEADER_LEN + body_len + 4 {
        return Err(format!("snapshot is {} bytes, {n} entries need {}", b.len(), body_len + 68));
    }
    let body = &b[HEADER_LEN..HEADER_LEN + body_len];
    if crc32fast::hash(body) != u32_at(b, HEADER_LEN + body_len) {
        return Err("snapshot entries CRC mismatch".into());
    }
    let mut slots = Vec::with_capacity(n);
    for e in body.chunks_exact(ENTRY_LEN) {
        let id = ChunkId(e[..32].try_into().expect("32 bytes"));
        let loc = Loc { pos: Pos { seg: u32_at(e, 32), off: u32_at(e, 36) }, len: u32_at(e, 40) };
        slots.push(Slot::new(id, loc, u32_at(e, 44)));
    }
    let index = Index::from_sorted(slots).ok_or("snapshot entries are not sorted")?;
    Ok(Snapshot {
        index,
        replay_from: Pos { seg: u32_at(b, 24), off: u32_at(b, 28) },
        clock: u32_at(b, 32),
    })
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_is_refused() {
        let mut ix = Index::new();
        for i in 0..5000u32 {
            let id = ChunkId(*blake3::hash(&i.to_le_bytes()).as_bytes());
            ix.insert(id, Loc { pos: Pos { seg: 1 + i % 3, off: i * 100 }, len: i }, i);
        }
        let b = encode(&ix, Pos { seg: 3, off: 77 }, 4242);
        let s = decode(&b).unwrap();
        assert_eq!(s.replay_from, Pos { seg: 3, off: 77 });
        assert_eq!(s.clock, 4242);
        assert_eq!(s.index.len(), 5000);
        ix.for_each(|id, loc, _| assert_eq!(s.index.get(id).map(|x| x.0), Some(loc)));
        for at in [0, 20, 49, 100, b.len() - 1] {
            let mut bad = b.clone();
            bad[at] ^= 4;
            assert!(decode(&bad).is_err(), "flip at {at} not caught");
        }
        assert!(decode(&b[..b.len() - 1]).is_err());
    }
}
