//! Transmission-phase requests: the 28-byte header, and its validation
//! against what was negotiated for the session.
//!
//! [`parse_request`] is the one entry point the server (and the fuzz
//! target) uses: bytes in, and either a [`FrameError`] (the stream cannot
//! be trusted any more: close the connection) or the header with exactly
//! one [`Verdict`]: a [`Command`] to run, or a [`Rejection`] to answer with
//! an error after skipping any payload so the stream stays in sync.
//! [`RequestHeader::parse`] checks the magic, [`validate`] the rest against
//! the negotiated [`Session`]. All are pure functions on bytes and plain
//! data.

use super::consts::*;
use super::meta::MetaContext;

/// A request header as sent by the client (magic already checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    pub flags: u16,
    pub kind: u16,
    pub cookie: u64,
    pub offset: u64,
    pub length: u32,
}

/// A frame after which the stream cannot be trusted: close the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("request magic {0:#010x} is not {REQUEST_MAGIC:#010x}")]
    BadMagic(u32),
    #[error("write of {length} bytes exceeds the maximum payload of {max} bytes")]
    PayloadTooLarge { length: u32, max: u32 },
    #[error("request of {0} bytes is shorter than the {REQUEST_HEADER_LEN}-byte header")]
    Truncated(usize),
}

fn be<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

impl RequestHeader {
    pub fn parse(buf: &[u8; REQUEST_HEADER_LEN]) -> Result<Self, FrameError> {
        // Offsets are constants within the fixed 28-byte array.
        let magic = u32::from_be_bytes(be(buf, 0));
        if magic != REQUEST_MAGIC {
            return Err(FrameError::BadMagic(magic));
        }
        Ok(RequestHeader {
            flags: u16::from_be_bytes(be(buf, 4)),
            kind: u16::from_be_bytes(be(buf, 6)),
            cookie: u64::from_be_bytes(be(buf, 8)),
            offset: u64::from_be_bytes(be(buf, 16)),
            length: u32::from_be_bytes(be(buf, 24)),
        })
    }

    pub fn encode(&self) -> [u8; REQUEST_HEADER_LEN] {
        let mut b = [0u8; REQUEST_HEADER_LEN];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.kind.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.length.to_be_bytes());
        b
    }
}

/// What the handshake settled for one connection; every request is
/// validated against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Export size in bytes.
    pub size: u64,
    /// Transmission flags sent to the client.
    pub flags: u16,
    /// Structured replies negotiated.
    pub structured: bool,
    /// Metadata contexts selected for this export (empty: no BLOCK_STATUS).
    pub contexts: Vec<MetaContext>,
    /// Largest READ or WRITE length accepted (the advertised maximum block size).
    pub max_payload: u32,
}

impl Session {
    pub fn read_only(&self) -> bool {
        self.flags & FLAG_READ_ONLY != 0
    }
}

/// A validated command; offsets and lengths are inside the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Read {
        offset: u64,
        length: u32,
        df: bool,
    },
    /// The `length` payload bytes follow the header.
    Write {
        offset: u64,
        length: u32,
        fua: bool,
    },
    Disconnect,
    Flush,
    Trim {
        offset: u64,
        length: u32,
        fua: bool,
    },
    Cache {
        offset: u64,
        length: u32,
    },
    WriteZeroes {
        offset: u64,
        length: u32,
        fua: bool,
        no_hole: bool,
        fast: bool,
    },
    BlockStatus {
        offset: u64,
        length: u32,
        req_one: bool,
    },
}

/// A request refused with an error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub error: ErrorCode,
    pub message: String,
    /// Payload bytes that follow the header and must be skipped.
    pub discard: u32,
}

/// The outcome of validating one header whose stream is still in sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Run(Command),
    Reject(Rejection),
}

/// Parse and validate the request at the start of `bytes` against the
/// session. Only the 28-byte header is read: a WRITE's payload (the
/// header's `length` bytes) follows it and is the caller's to read or
/// skip ([`Rejection::discard`]). Never panics, whatever the input.
pub fn parse_request(bytes: &[u8], s: &Session) -> Result<(RequestHeader, Verdict), FrameError> {
    let head: &[u8; REQUEST_HEADER_LEN] = bytes
        .get(..REQUEST_HEADER_LEN)
        .and_then(|b| b.try_into().ok())
        .ok_or(FrameError::Truncated(bytes.len()))?;
    let header = RequestHeader::parse(head)?;
    Ok((header, validate(&header, s)?))
}

fn reject(
    error: ErrorCode,
    discard: u32,
    message: impl Into<String>,
) -> Result<Verdict, FrameError> {
    Ok(Verdict::Reject(Rejection { error, message: message.into(), discard }))
}

fn command_name(kind: u16) -> &'static str {
    match kind {
        CMD_READ => "READ",
        CMD_WRITE => "WRITE",
        CMD_DISC => "DISC",
        CMD_FLUSH => "FLUSH",
        CMD_TRIM => "TRIM",
        CMD_CACHE => "CACHE",
        CMD_WRITE_ZEROES => "WRITE_ZEROES",
        CMD_BLOCK_STATUS => "BLOCK_STATUS",
        _ => "unknown",
    }
}

/// Flags a command may carry in this session. FUA is accepted on every
/// command once SEND_FUA is advertised (the spec requires it).
fn allowed_flags(kind: u16, s: &Session) -> u16 {
    let fua = if s.flags & FLAG_SEND_FUA != 0 { CMD_FLAG_FUA } else { 0 };
    fua | match kind {
        CMD_READ if s.flags & FLAG_SEND_DF != 0 => CMD_FLAG_DF,
        CMD_WRITE_ZEROES => {
            let fast = if s.flags & FLAG_SEND_FAST_ZERO != 0 { CMD_FLAG_FAST_ZERO } else { 0 };
            CMD_FLAG_NO_HOLE | fast
        }
        CMD_BLOCK_STATUS => CMD_FLAG_REQ_ONE,
        _ => 0,
    }
}

/// Validate a header against the session: an error only when the stream
/// cannot be resynchronised (a WRITE payload too large to skip safely).
/// Never panics, whatever the input.
pub fn validate(h: &RequestHeader, s: &Session) -> Result<Verdict, FrameError> {
    let (off, len) = (h.offset, h.length);
    let is_write = h.kind == CMD_WRITE;
    // Payload bytes to skip when refusing (only WRITE carries a payload).
    let payload = if is_write { len } else { 0 };
    if is_write && len > s.max_payload {
        return Err(FrameError::PayloadTooLarge { length: len, max: s.max_payload });
    }
    if h.kind > CMD_BLOCK_STATUS {
        return reject(ErrorCode::Invalid, 0, format!("unknown command {}", h.kind));
    }
    let name = command_name(h.kind);
    let bad = h.flags & !allowed_flags(h.kind, s);
    if bad != 0 {
        return reject(ErrorCode::Invalid, payload, format!("flags {bad:#x} not valid for {name}"));
    }
    if h.kind == CMD_DISC {
        return Ok(Verdict::Run(Command::Disconnect));
    }
    if h.kind == CMD_FLUSH {
        if off != 0 || len != 0 {
            return reject(ErrorCode::Invalid, 0, "FLUSH needs offset and length 0");
        }
        return Ok(Verdict::Run(Command::Flush));
    }
    let writes = matches!(h.kind, CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES);
    if writes && s.read_only() {
        return reject(ErrorCode::Perm, payload, format!("{name} on a read-only export"));
    }
    if h.kind == CMD_BLOCK_STATUS && s.contexts.is_empty() {
        return reject(ErrorCode::Invalid, 0, "BLOCK_STATUS without a negotiated meta context");
    }
    if h.kind == CMD_READ && len > s.max_payload {
        return reject(
            ErrorCode::Invalid,
            0,
            format!("READ of {len} bytes exceeds the maximum of {}", s.max_payload),
        );
    }
    let end = off.checked_add(u64::from(len));
    if end.is_none_or(|e| e > s.size) {
        // The spec: ENOSPC for writes past the end, EINVAL for the rest.
        let code = if matches!(h.kind, CMD_WRITE | CMD_WRITE_ZEROES) {
            ErrorCode::NoSpace
        } else {
            ErrorCode::Invalid
        };
        return reject(
            code,
            payload,
            format!("{name} of {len} bytes at {off} is past the end ({} bytes)", s.size),
        );
    }
    let fua = h.flags & CMD_FLAG_FUA != 0;
    Ok(Verdict::Run(match h.kind {
        CMD_READ => Command::Read { offset: off, length: len, df: h.flags & CMD_FLAG_DF != 0 },
        CMD_WRITE => Command::Write { offset: off, length: len, fua },
        CMD_TRIM => Command::Trim { offset: off, length: len, fua },
        CMD_CACHE => Command::Cache { offset: off, length: len },
        CMD_WRITE_ZEROES => Command::WriteZeroes {
            offset: off,
            length: len,
            fua,
            no_hole: h.flags & CMD_FLAG_NO_HOLE != 0,
            fast: h.flags & CMD_FLAG_FAST_ZERO != 0,
        },
        _ => Command::BlockStatus {
            offset: off,
            length: len,
            req_one: h.flags & CMD_FLAG_REQ_ONE != 0,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(ro: bool) -> Session {
        let mut flags = FLAG_HAS_FLAGS | FLAG_SEND_FLUSH | FLAG_SEND_FUA | FLAG_SEND_DF;
        if ro {
            flags |= FLAG_READ_ONLY;
        } else {
            flags |= FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES | FLAG_SEND_FAST_ZERO;
        }
        Session {
            size: 1 << 20,
            flags,
            structured: true,
            contexts: vec![MetaContext::Allocation],
            max_payload: 64 * 1024,
        }
    }

    fn hdr(kind: u16, flags: u16, offset: u64, length: u32) -> RequestHeader {
        RequestHeader { flags, kind, cookie: 7, offset, length }
    }

    /// A verdict for a frame that keeps the stream in sync.
    fn v(h: &RequestHeader, s: &Session) -> Verdict {
        validate(h, s).expect("stream stays in sync")
    }

    fn rejected(v: Verdict) -> (ErrorCode, u32) {
        match v {
            Verdict::Reject(r) => (r.error, r.discard),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn header_roundtrip_and_magic() {
        let h = hdr(CMD_WRITE, CMD_FLAG_FUA, 4096, 512);
        assert_eq!(RequestHeader::parse(&h.encode()).unwrap(), h);
        let mut b = h.encode();
        b[3] ^= 0xff;
        assert!(matches!(RequestHeader::parse(&b), Err(FrameError::BadMagic(_))));
    }

    #[test]
    fn valid_commands() {
        let s = session(false);
        assert_eq!(
            v(&hdr(CMD_READ, CMD_FLAG_DF, 0, 4096), &s),
            Verdict::Run(Command::Read { offset: 0, length: 4096, df: true })
        );
        assert_eq!(
            v(&hdr(CMD_WRITE_ZEROES, CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO, 0, 1 << 20), &s),
            Verdict::Run(Command::WriteZeroes {
                offset: 0,
                length: 1 << 20,
                fua: false,
                no_hole: true,
                fast: true
            })
        );
        // FUA is accepted on any command once advertised.
        assert_eq!(
            v(&hdr(CMD_BLOCK_STATUS, CMD_FLAG_FUA | CMD_FLAG_REQ_ONE, 0, 10), &s),
            Verdict::Run(Command::BlockStatus { offset: 0, length: 10, req_one: true })
        );
        assert_eq!(v(&hdr(CMD_DISC, 0, 5, 5), &s), Verdict::Run(Command::Disconnect));
        assert_eq!(v(&hdr(CMD_FLUSH, 0, 0, 0), &s), Verdict::Run(Command::Flush));
        // A zero-length request at the very end is inside the export.
        assert!(matches!(v(&hdr(CMD_TRIM, 0, 1 << 20, 0), &s), Verdict::Run(_)));
    }

    #[test]
    fn malformed_requests() {
        let s = session(false);
        assert_eq!(rejected(v(&hdr(99, 0, 0, 0), &s)), (ErrorCode::Invalid, 0));
        assert_eq!(rejected(v(&hdr(CMD_WRITE, 1 << 9, 0, 8), &s)), (ErrorCode::Invalid, 8));
        assert_eq!(
            rejected(v(&hdr(CMD_READ, CMD_FLAG_NO_HOLE, 0, 8), &s)),
            (ErrorCode::Invalid, 0)
        );
        assert_eq!(rejected(v(&hdr(CMD_READ, 0, 1 << 20, 1), &s)).0, ErrorCode::Invalid);
        assert_eq!(rejected(v(&hdr(CMD_WRITE, 0, 1 << 20, 1), &s)), (ErrorCode::NoSpace, 1));
        assert_eq!(rejected(v(&hdr(CMD_WRITE_ZEROES, 0, u64::MAX, 2), &s)).0, ErrorCode::NoSpace);
        assert_eq!(rejected(v(&hdr(CMD_FLUSH, 0, 1, 0), &s)).0, ErrorCode::Invalid);
        assert_eq!(rejected(v(&hdr(CMD_READ, 0, 0, 64 * 1024 + 1), &s)).0, ErrorCode::Invalid);
        assert!(matches!(
            validate(&hdr(CMD_WRITE, 0, 0, 64 * 1024 + 1), &s),
            Err(FrameError::PayloadTooLarge { .. })
        ));
        let mut none = session(false);
        none.contexts.clear();
        assert_eq!(rejected(v(&hdr(CMD_BLOCK_STATUS, 0, 0, 1), &none)).0, ErrorCode::Invalid);
    }

    #[test]
    fn read_only_exports() {
        let s = session(true);
        assert_eq!(rejected(v(&hdr(CMD_WRITE, 0, 0, 16), &s)), (ErrorCode::Perm, 16));
        assert_eq!(rejected(v(&hdr(CMD_TRIM, 0, 0, 16), &s)).0, ErrorCode::Perm);
        assert_eq!(rejected(v(&hdr(CMD_WRITE_ZEROES, 0, 0, 16), &s)).0, ErrorCode::Perm);
        // FAST_ZERO is not advertised on a read-only export.
        assert_eq!(
            rejected(v(&hdr(CMD_WRITE_ZEROES, CMD_FLAG_FAST_ZERO, 0, 16), &s)).0,
            ErrorCode::Invalid
        );
        assert!(matches!(v(&hdr(CMD_READ, 0, 0, 16), &s), Verdict::Run(_)));
    }

    #[test]
    fn parse_request_from_bytes() {
        let s = session(false);
        let h = hdr(CMD_WRITE, CMD_FLAG_FUA, 4096, 512);
        // Payload bytes after the header are the caller's: ignored here.
        let mut frame = h.encode().to_vec();
        frame.extend_from_slice(&[0xee; 512]);
        let (got, verdict) = parse_request(&frame, &s).unwrap();
        assert_eq!(got, h);
        assert_eq!(verdict, Verdict::Run(Command::Write { offset: 4096, length: 512, fua: true }));
        assert_eq!(parse_request(&frame[..27], &s), Err(FrameError::Truncated(27)));
        assert_eq!(parse_request(&[], &s), Err(FrameError::Truncated(0)));
        let mut bad = h.encode();
        bad[0] = 0;
        assert!(matches!(parse_request(&bad, &s), Err(FrameError::BadMagic(_))));
        let big = hdr(CMD_WRITE, 0, 0, u32::MAX).encode();
        assert!(matches!(parse_request(&big, &s), Err(FrameError::PayloadTooLarge { .. })));
        let (_, r) = parse_request(&hdr(CMD_READ, 0, 1 << 20, 1).encode(), &s).unwrap();
        assert!(matches!(r, Verdict::Reject(_)));
    }
}
