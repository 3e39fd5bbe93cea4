//! Wire format of a segment record (no I/O here).
//!
//! ```text
//! offset size  field
//! 0      4     magic "ZLR1"
//! 4      1     kind: 1 blob, 2 tombstone
//! 5      3     reserved, zero
//! 8      4     payload length, u32 LE (blob length; 8 for a tombstone)
//! 12     32    chunk id
//! 44     4     CRC32 of the payload
//! 48     4     CRC32 of bytes 0..48
//! 52     ..    payload
//! ```
//!
//! The header has its own CRC so a scan can trust the length of a record
//! whose payload rotted, skip just that record and go on. A tombstone's
//! payload names the location of the blob record it kills (segment u32 LE,
//! offset u32 LE): replay removes the index entry only if it still points
//! there, so a tombstone moved forward by compaction never kills a later
//! re-put of the same id.

use crate::chunk::{ChunkId, MAX_BLOB};

pub const MAGIC: [u8; 4] = *b"ZLR1";
pub const HEADER_LEN: usize = 52;
pub const TOMBSTONE_PAYLOAD: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Blob = 1,
    Tombstone = 2,
}

/// Where a record lives: segment number and byte offset of its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pos {
    pub seg: u32,
    pub off: u32,
}

/// A decoded, header-CRC-checked record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub len: u32,
    pub id: ChunkId,
    pub payload_crc: u32,
}

impl Header {
    pub fn blob(id: &ChunkId, blob: &[u8]) -> Header {
        Header {
            kind: Kind::Blob,
            len: blob.len() as u32,
            id: *id,
            payload_crc: crc32fast::hash(blob),
        }
    }

    pub fn tombstone(id: &ChunkId, target: Pos) -> (Header, [u8; TOMBSTONE_PAYLOAD]) {
        let payload = encode_target(target);
        let h = Header {
            kind: Kind::Tombstone,
            len: TOMBSTONE_PAYLOAD as u32,
            id: *id,
            payload_crc: crc32fast::hash(&payload),
        };
        (h, payload)
    }

    /// Bytes of the whole record (header + payload).
    pub fn record_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.len)
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4] = self.kind as u8;
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..44].copy_from_slice(&self.id.0);
        b[44..48].copy_from_slice(&self.payload_crc.to_le_bytes());
        let crc = crc32fast::hash(&b[0..48]);
        b[48..52].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parse and validate a header: magic, header CRC, kind, length bounds.
    pub fn decode(b: &[u8]) -> Result<Header, &'static str> {
        if b.len() < HEADER_LEN {
            return Err("short header");
        }
        if b[0..4] != MAGIC {
            return Err("bad record magic");
        }
        if crc32fast::hash(&b[0..48]) != u32_at(b, 48) {
            return Err("record header CRC mismatch");
        }
        let kind = match b[4] {
            1 => Kind::Blob,
            2 => Kind::Tombstone,
            _ => return Err("unknown record kind"),
        };
        if b[5..8] != [0, 0, 0] {
            return Err("reserved header bytes are not zero");
        }
        let len = u32_at(b, 8);
        let ok_len = match kind {
            Kind::Blob => len as usize <= MAX_BLOB,
            Kind::Tombstone => len as usize == TOMBSTONE_PAYLOAD,
        };
        if !ok_len {
            return Err("record length out of bounds");
        }
        let id = ChunkId(b[12..44].try_into().expect("32 bytes"));
        Ok(Header { kind, len, id, payload_crc: u32_at(b, 44) })
    }

    pub fn check_payload(&self, payload: &[u8]) -> Result<(), &'static str> {
        if payload.len() != self.len as usize {
            return Err("payload length differs from header");
        }
        if crc32fast::hash(payload) != self.payload_crc {
            return Err("payload CRC mismatch");
        }
        Ok(())
    }
}

pub fn encode_target(p: Pos) -> [u8; TOMBSTONE_PAYLOAD] {
    let mut b = [0u8; TOMBSTONE_PAYLOAD];
    b[0..4].copy_from_slice(&p.seg.to_le_bytes());
    b[4..8].copy_from_slice(&p.off.to_le_bytes());
    b
}

pub fn decode_target(b: &[u8]) -> Pos {
    Pos { seg: u32_at(b, 0), off: u32_at(b, 4) }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_header_flip_is_caught() {
        let id = ChunkId([7; 32]);
        let h = Header::blob(&id, b"payload");
        let b = h.encode();
        assert_eq!(Header::decode(&b).unwrap(), h);
        h.check_payload(b"payload").unwrap();
        assert!(h.check_payload(b"paYload").is_err());
        assert!(h.check_payload(b"payload!").is_err());
        for i in 0..HEADER_LEN {
            for bit in 0..8 {
                let mut bad = b;
                bad[i] ^= 1 << bit;
                assert!(Header::decode(&bad).is_err(), "flip of bit {bit} in byte {i} not caught");
            }
        }
    }

    #[test]
    fn tombstone_carries_its_target() {
        let (h, p) = Header::tombstone(&ChunkId([1; 32]), Pos { seg: 9, off: 1234 });
        let d = Header::decode(&h.encode()).unwrap();
        assert_eq!(d.kind, Kind::Tombstone);
        d.check_payload(&p).unwrap();
        assert_eq!(decode_target(&p), Pos { seg: 9, off: 1234 });
    }

    #[test]
    fn oversize_length_is_refused() {
        let mut h = Header::blob(&ChunkId([1; 32]), b"x");
        h.len = MAX_BLOB as u32 + 1;
        assert!(Header::decode(&h.encode()).is_err());
    }
}
