//! Transmission-phase replies: simple replies and structured reply chunks.
//! Encoders only; the server decides which to send.

use super::consts::*;
use super::wire::Put;

/// Simple reply header (any data follows it for a successful READ).
pub fn simple(cookie: u64, error: Option<ErrorCode>) -> Vec<u8> {
    let mut v = Vec::with_capacity(SIMPLE_REPLY_LEN);
    v.put_u32(SIMPLE_REPLY_MAGIC);
    v.put_u32(error.map_or(0, |e| e as u32));
    v.put_u64(cookie);
    v
}

fn chunk_header(v: &mut Vec<u8>, done: bool, kind: u16, cookie: u64, len: u32) {
    v.put_u32(STRUCTURED_REPLY_MAGIC);
    v.put_u16(if done { REPLY_FLAG_DONE } else { 0 });
    v.put_u16(kind);
    v.put_u64(cookie);
    v.put_u32(len);
}

/// `NBD_REPLY_TYPE_NONE` with DONE: a successful end of a structured reply.
pub fn none(cookie: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(STRUCTURED_HEADER_LEN);
    chunk_header(&mut v, true, REPLY_TYPE_NONE, cookie, 0);
    v
}

/// Header of an `NBD_REPLY_TYPE_OFFSET_DATA` chunk; `data_len` bytes of
/// data follow it. `data_len` must be ≥ 1 and ≤ 2^32 - 9.
pub fn offset_data_header(cookie: u64, offset: u64, data_len: u32, done: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(STRUCTURED_HEADER_LEN + 8);
    chunk_header(&mut v, done, REPLY_TYPE_OFFSET_DATA, cookie, data_len.saturating_add(8));
    v.put_u64(offset);
    v
}

/// `NBD_REPLY_TYPE_OFFSET_HOLE`: `len` (≥ 1) bytes at `offset` read as zeros.
pub fn offset_hole(cookie: u64, offset: u64, len: u32, done: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(STRUCTURED_HEADER_LEN + 12);
    chunk_header(&mut v, done, REPLY_TYPE_OFFSET_HOLE, cookie, 12);
    v.put_u64(offset);
    v.put_u32(len);
    v
}

/// `NBD_REPLY_TYPE_ERROR` with DONE; the message is cut to the string limit.
pub fn error(cookie: u64, code: ErrorCode, message: &str) -> Vec<u8> {
    let mut end = message.len().min(MAX_STRING);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let msg = &message.as_bytes()[..end];
    let mut v = Vec::with_capacity(STRUCTURED_HEADER_LEN + 6 + msg.len());
    chunk_header(&mut v, true, REPLY_TYPE_ERROR, cookie, 6 + msg.len() as u32);
    v.put_u32(code as u32);
    v.put_u16(msg.len() as u16);
    v.extend_from_slice(msg);
    v
}

/// One `NBD_REPLY_TYPE_BLOCK_STATUS` chunk: `(length, flags)` descriptors
/// for context `id`. `extents` must not be empty and lengths are nonzero.
pub fn block_status(cookie: u64, id: u32, extents: &[(u32, u32)], done: bool) -> Vec<u8> {
    let len = 4 + 8 * extents.len();
    let mut v = Vec::with_capacity(STRUCTURED_HEADER_LEN + len);
    chunk_header(&mut v, done, REPLY_TYPE_BLOCK_STATUS, cookie, len as u32);
    v.put_u32(id);
    for &(l, f) in extents {
        v.put_u32(l);
        v.put_u32(f);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        let s = simple(0x1122, Some(ErrorCode::Invalid));
        assert_eq!(s.len(), 16);
        assert_eq!(&s[4..8], &22u32.to_be_bytes());
        let n = none(5);
        assert_eq!(n.len(), 20);
        assert_eq!(&n[4..6], &1u16.to_be_bytes());
        let d = offset_data_header(5, 4096, 512, false);
        assert_eq!(d.len(), 28);
        assert_eq!(&d[16..20], &520u32.to_be_bytes());
        let h = offset_hole(5, 0, 4096, true);
        assert_eq!(h.len(), 32);
        let e = error(5, ErrorCode::Io, "boom");
        assert_eq!(e.len(), 20 + 6 + 4);
        let b = block_status(5, 1, &[(4096, 3), (512, 0)], true);
        assert_eq!(b.len(), 20 + 4 + 16);
        assert_eq!(&b[16..20], &20u32.to_be_bytes());
        // Messages are cut at a char boundary within 4096 bytes.
        let long = error(5, ErrorCode::Io, &"é".repeat(4000));
        assert!(long.len() <= 20 + 6 + MAX_STRING);
    }
}
