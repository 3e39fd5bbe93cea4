//! On-disk format of the state file that sits next to a LazyFile's data
//! file (`<data>.state`).
//!
//! ```text
//! offset  size  content
//! 0       512   header slot 0
//! 512     512   header slot 1
//! 1024    n/4   chunk states, 2 bits each, chunk i in byte i/4 at bits 2*(i%4)
//! ```
//!
//! Header slot:
//!
//! ```text
//! 0   8  magic "ZOSLAZY1"
//! 8   4  version (1), u32 LE
//! 12  4  reserved, zero
//! 16  8  sequence, u64 LE: the valid slot with the higher sequence wins
//! 24  8  file size in bytes
//! 32  8  chunk count
//! 40  4  fixed chunk size (0: explicit boundaries)
//! 44  4  reserved, zero
//! 48  32 BLAKE3 digest of the layout
//! 80  32 source identity
//! 112 4  CRC32 of bytes 0..112
//! ```
//!
//! A header is rewritten only into the slot not in use, so a torn header
//! write leaves the other slot valid. Each state entry lives inside one
//! byte, so a torn state write leaves every entry either old or new.

use crate::error::{Result, corrupt};

pub const MAGIC: &[u8; 8] = b"ZOSLAZY1";
pub const VERSION: u32 = 1;
pub const SLOT_LEN: usize = 512;
pub const STATES_OFF: u64 = 2 * SLOT_LEN as u64;
const CRC_AT: usize = 112;

/// The identity of a state file: which layout and content it describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub seq: u64,
    pub size: u64,
    pub count: u64,
    pub fixed_chunk: u32,
    pub layout_digest: [u8; 32],
    pub identity: [u8; 32],
}

impl Header {
    /// Same layout and same content (the sequence does not matter).
    pub fn same_content(&self, other: &Header) -> bool {
        self.size == other.size
            && self.count == other.count
            && self.fixed_chunk == other.fixed_chunk
            && self.layout_digest == other.layout_digest
            && self.identity == other.identity
    }

    pub fn encode(&self) -> [u8; SLOT_LEN] {
        let mut b = [0u8; SLOT_LEN];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.size.to_le_bytes());
        b[32..40].copy_from_slice(&self.count.to_le_bytes());
        b[40..44].copy_from_slice(&self.fixed_chunk.to_le_bytes());
        b[48..80].copy_from_slice(&self.layout_digest);
        b[80..112].copy_from_slice(&self.identity);
        let crc = crc32fast::hash(&b[..CRC_AT]);
        b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// `Ok(None)` for a slot that is blank or torn (bad magic or CRC);
    /// an error for a valid slot of a version this code does not know.
    pub fn decode(b: &[u8]) -> Result<Option<Header>> {
        if b.len() < SLOT_LEN || &b[0..8] != MAGIC {
            return Ok(None);
        }
        let crc = u32::from_le_bytes(b[CRC_AT..CRC_AT + 4].try_into().expect("4 bytes"));
        if crc != crc32fast::hash(&b[..CRC_AT]) {
            return Ok(None);
        }
        let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(corrupt(format!(
                "state file version {version} is not supported (want {VERSION})"
            )));
        }
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        Ok(Some(Header {
            seq: u64_at(16),
            size: u64_at(24),
            count: u64_at(32),
            fixed_chunk: u32::from_le_bytes(b[40..44].try_into().expect("4 bytes")),
            layout_digest: b[48..80].try_into().expect("32 bytes"),
            identity: b[80..112].try_into().expect("32 bytes"),
        }))
    }
}

/// The current header of a state file from its first `STATES_OFF` bytes,
/// with the slot it came from; `Ok(None)` when neither slot is valid.
pub fn current_header(head: &[u8]) -> Result<Option<(Header, usize)>> {
    let a = Header::decode(head.get(..SLOT_LEN).unwrap_or(&[]))?;
    let b = Header::decode(head.get(SLOT_LEN..2 * SLOT_LEN).unwrap_or(&[]))?;
    Ok(match (a, b) {
        (Some(a), Some(b)) if b.seq > a.seq => Some((b, 1)),
        (Some(a), _) => Some((a, 0)),
        (None, Some(b)) => Some((b, 1)),
        (None, None) => None,
    })
}

/// Bytes of packed states for `count` chunks.
pub fn states_len(count: u64) -> usize {
    count.div_ceil(4) as usize
}

/// The 2-bit code of chunk `i`.
pub fn get_code(packed: &[u8], i: u64) -> u8 {
    (packed[(i / 4) as usize] >> (2 * (i % 4))) & 3
}

/// Set the 2-bit code of chunk `i`.
pub fn set_code(packed: &mut [u8], i: u64, code: u8) {
    let byte = &mut packed[(i / 4) as usize];
    let shift = 2 * (i % 4);
    *byte = (*byte & !(3 << shift)) | ((code & 3) << shift);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(seq: u64) -> Header {
        Header {
            seq,
            size: 123,
            count: 2,
            fixed_chunk: 64,
            layout_digest: [1; 32],
            identity: [2; 32],
        }
    }

    #[test]
    fn header_round_trip_and_slots() {
        let h = hdr(5);
        assert_eq!(Header::decode(&h.encode()).unwrap(), Some(h.clone()));
        let mut head = vec![0u8; STATES_OFF as usize];
        assert_eq!(current_header(&head).unwrap(), None);
        head[..SLOT_LEN].copy_from_slice(&hdr(5).encode());
        head[SLOT_LEN..].copy_from_slice(&hdr(6).encode());
        assert_eq!(current_header(&head).unwrap().unwrap().1, 1);
        // A torn newer slot falls back to the older one.
        head[SLOT_LEN + 30] ^= 1;
        assert_eq!(current_header(&head).unwrap().unwrap(), (hdr(5), 0));
        // Unknown version in a valid slot is an error, not "blank".
        let mut v2 = hdr(1).encode();
        v2[8] = 2;
        let crc = crc32fast::hash(&v2[..CRC_AT]);
        v2[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        assert!(Header::decode(&v2).is_err());
    }

    #[test]
    fn packing() {
        let mut p = vec![0u8; states_len(9)];
        assert_eq!(p.len(), 3);
        for i in 0..9 {
            set_code(&mut p, i, (i % 4) as u8);
        }
        for i in 0..9 {
            assert_eq!(get_code(&p, i), (i % 4) as u8);
        }
        set_code(&mut p, 5, 0);
        assert_eq!(get_code(&p, 5), 0);
        assert_eq!(get_code(&p, 4), 0);
        assert_eq!(get_code(&p, 6), 2);
    }
}
