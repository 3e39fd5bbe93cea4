//! RESP wire format as 0-db speaks it: requests are arrays of bulk strings,
//! parsed incrementally from a growing buffer; replies are encoded into a
//! [`ReplyBuf`] that keeps big bulk values as their own `Bytes` (no copy).
//!
//! The parser never looks at command names; what a request means is the
//! dialect's business (`super::dialect`).

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

/// Longest single argument 0-db accepts (8 MiB); one byte more is refused as
/// soon as its `$<len>` header is read.
pub const MAX_ARG: usize = 8 * 1024 * 1024;

/// Most elements a request may announce (1024 is accepted).
pub const MAX_ARGS: usize = 1024;

/// A header line (`*N` or `$N`) longer than this without a newline is not
/// RESP; 0-db's 8 KiB read buffer would overflow and drop the client.
pub const MAX_HEADER_LINE: usize = 8192;

/// Bulk values at least this large are written straight from their own
/// buffer instead of being copied into the reply buffer.
const ZERO_COPY_MIN: usize = 16 * 1024;

/// What was wrong with the bytes a client sent.
///
/// `stuck` errors leave the offending bytes unconsumed, exactly as 0-db
/// does: the connection stays open and every later read gets the same error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// The request does not start with `*` (inline command, bare CRLF).
    NotArray,
    /// `*0` (or a count that is not a positive number).
    MissingArguments,
    /// More than [`MAX_ARGS`] elements announced.
    TooManyArguments,
    /// An element is not a bulk string, or its length is not a number, or
    /// its payload is not followed by CRLF.
    NotBulk,
    /// A bulk string over [`MAX_ARG`] bytes announced.
    PayloadTooBig,
    /// A header line without newline longer than [`MAX_HEADER_LINE`].
    HeaderTooLong,
}

impl WireError {
    /// The exact error line 0-db sends (without `-` and CRLF), if any.
    pub fn message(self) -> &'static str {
        match self {
            WireError::NotArray => "Malformed request, array expected",
            WireError::MissingArguments => "Missing arguments",
            WireError::TooManyArguments => "Too many arguments",
            WireError::NotBulk => "Malformed query string",
            WireError::PayloadTooBig => "Payload too big",
            WireError::HeaderTooLong => "Malformed request, header line too long",
        }
    }

    /// Whether the server closes the connection after the error line.
    /// Otherwise the connection is stuck on this error.
    pub fn closes(self) -> bool {
        matches!(self, WireError::NotArray | WireError::PayloadTooBig | WireError::HeaderTooLong)
    }
}

#[derive(Debug)]
enum State {
    /// Waiting for `*N\r\n`.
    Empty,
    /// Waiting for the next `$len\r\n` (args holds the elements read so far).
    Header,
    /// Waiting for `len` payload bytes plus CRLF.
    Payload(usize),
}

/// Incremental request parser. Feed it the connection's read buffer after
/// every read; it consumes what it has parsed and keeps its place.
#[derive(Debug)]
pub struct Parser {
    state: State,
    argc: usize,
    args: Vec<Bytes>,
}

impl Default for Parser {
    fn default() -> Self {
        Parser::new()
    }
}

/// Parse a header number the way C's `atoi` would read it, but refuse
/// anything that is not `[+-]digits` followed by CR or the end of the line.
fn header_number(line: &[u8]) -> Option<i64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (neg, digits) = match line.first() {
        Some(b'-') => (true, &line[1..]),
        Some(b'+') => (false, &line[1..]),
        _ => (false, line),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v: i64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(if neg { -v } else { v })
}

/// The header line at the start of `buf` (without its `\n`), if complete.
fn header_line(buf: &[u8]) -> Result<Option<usize>, WireError> {
    match memchr_nl(buf) {
        Some(i) => Ok(Some(i)),
        None if buf.len() > MAX_HEADER_LINE => Err(WireError::HeaderTooLong),
        None => Ok(None),
    }
}

fn memchr_nl(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

impl Parser {
    pub fn new() -> Self {
        Parser { state: State::Empty, argc: 0, args: Vec::new() }
    }

    /// Bytes the parser needs in one piece next (the announced payload of a
    /// bulk string plus its CRLF), so the reader can reserve them at once and
    /// the payload lands contiguous, ready to be split off without a copy.
    pub fn wanted(&self) -> usize {
        match self.state {
            State::Payload(len) => len + 2,
            _ => 0,
        }
    }

    /// Whether a request is partly parsed (a disconnect now is mid-frame).
    pub fn in_frame(&self) -> bool {
        !matches!(self.state, State::Empty)
    }

    /// Parse one complete request from the front of `buf`.
    ///
    /// Ok(None): more bytes are needed. Err: the bytes are not a valid
    /// request; the offending bytes stay in `buf`, so calling again gives the
    /// same error (0-db's "stuck" connection).
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, WireError> {
        loop {
            match self.state {
                State::Empty => {
                    let Some(&first) = buf.first() else { return Ok(None) };
                    if first != b'*' {
                        return Err(WireError::NotArray);
                    }
                    let Some(nl) = header_line(buf)? else { return Ok(None) };
                    let n = header_number(&buf[1..nl]).unwrap_or(0);
                    if n <= 0 {
                        return Err(WireError::MissingArguments);
                    }
                    if n > MAX_ARGS as i64 {
                        return Err(WireError::TooManyArguments);
                    }
                    buf.advance(nl + 1);
                    self.argc = n as usize;
                    self.args = Vec::with_capacity(self.argc);
                    self.state = State::Header;
                }
                State::Header => {
                    let Some(&first) = buf.first() else { return Ok(None) };
                    let Some(nl) = header_line(buf)? else { return Ok(None) };
                    if first != b'$' {
                        return Err(WireError::NotBulk);
                    }
                    let len = match header_number(&buf[1..nl]) {
                        Some(n) if n > MAX_ARG as i64 => return Err(WireError::PayloadTooBig),
                        Some(n) if n >= 0 => n as usize,
                        _ => return Err(WireError::NotBulk),
                    };
                    buf.advance(nl + 1);
                    self.state = State::Payload(len);
                }
                State::Payload(len) => {
                    if buf.len() < len + 2 {
                        return Ok(None);
                    }
                    if &buf[len..len + 2] != b"\r\n" {
                        return Err(WireError::NotBulk);
                    }
                    // Zero-copy: the payload becomes its own Bytes.
                    let arg = buf.split_to(len).freeze();
                    buf.advance(2);
                    self.args.push(arg);
                    if self.args.len() == self.argc {
                        self.state = State::Empty;
                        return Ok(Some(std::mem::take(&mut self.args)));
                    }
                    self.state = State::Header;
                }
            }
        }
    }
}

/// Replies queued for one connection: small replies are appended to one
/// buffer, big bulk payloads are kept as their own segment.
#[derive(Debug, Default)]
pub struct ReplyBuf {
    head: BytesMut,
    segments: VecDeque<Bytes>,
    len: usize,
}

impl ReplyBuf {
    pub fn new() -> Self {
        ReplyBuf::default()
    }

    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn put(&mut self, b: &[u8]) {
        self.head.extend_from_slice(b);
        self.len += b.len();
    }

    fn put_line(&mut self, prefix: u8, text: &[u8]) {
        self.head.reserve(text.len() + 3);
        self.put(&[prefix]);
        self.put(text);
        self.put(b"\r\n");
    }

    /// `+text`
    pub fn status(&mut self, text: &str) {
        self.put_line(b'+', text.as_bytes());
    }

    /// `-text`
    pub fn error(&mut self, text: &str) {
        self.put_line(b'-', text.as_bytes());
    }

    /// `:n`
    pub fn int(&mut self, n: i64) {
        self.put_line(b':', n.to_string().as_bytes());
    }

    /// `$-1`
    pub fn nil(&mut self) {
        self.put(b"$-1\r\n");
    }

    /// `*n` (the caller then adds n replies).
    pub fn array(&mut self, n: usize) {
        self.put_line(b'*', n.to_string().as_bytes());
    }

    /// `$len\r\n<data>\r\n`; big payloads are queued without a copy.
    pub fn bulk(&mut self, data: Bytes) {
        self.put_line(b'$', data.len().to_string().as_bytes());
        if data.len() >= ZERO_COPY_MIN {
            self.cut();
            self.len += data.len();
            self.segments.push_back(data);
        } else {
            self.put(&data);
        }
        self.put(b"\r\n");
    }

    /// A bulk from a borrowed slice (always copied).
    pub fn bulk_slice(&mut self, data: &[u8]) {
        self.put_line(b'$', data.len().to_string().as_bytes());
        self.put(data);
        self.put(b"\r\n");
    }

    /// Close the current small-reply buffer into a segment.
    fn cut(&mut self) {
        if !self.head.is_empty() {
            self.segments.push_back(self.head.split().freeze());
        }
    }

    /// Everything queued, in order, leaving the buffer empty.
    pub fn take(&mut self) -> VecDeque<Bytes> {
        self.cut();
        self.len = 0;
        std::mem::take(&mut self.segments)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&[u8]]) -> Vec<Bytes> {
        v.iter().map(|a| Bytes::copy_from_slice(a)).collect()
    }

    fn flat(r: &mut ReplyBuf) -> Vec<u8> {
        r.take().into_iter().flat_map(|b| b.to_vec()).collect()
    }

    #[test]
    fn parses_split_and_pipelined_requests() {
        let wire = b"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n";
        // Feed one byte at a time: every split point must work.
        let mut p = Parser::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in wire.iter() {
            buf.extend_from_slice(&[b]);
            while let Some(req) = p.parse(&mut buf).unwrap() {
                got.push(req);
            }
        }
        assert_eq!(got, vec![args(&[b"PING"]), args(&[b"SET", b"k", b""])]);
        assert!(buf.is_empty());
        assert!(!p.in_frame());
    }

    #[test]
    fn binary_payloads_with_crlf_inside() {
        let mut p = Parser::new();
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$4\r\n\r\n\0\n\r\n"[..]);
        assert_eq!(p.parse(&mut buf).unwrap().unwrap(), args(&[b"GET", b"\r\n\0\n"]));
    }

    #[test]
    fn errors_are_sticky_and_classified() {
        for (wire, err) in [
            (&b"PING\r\n"[..], WireError::NotArray),
            (b"\r\n", WireError::NotArray),
            (b"*0\r\n", WireError::MissingArguments),
            (b"*x\r\n", WireError::MissingArguments),
            (b"*1025\r\n", WireError::TooManyArguments),
            (b"*1\r\n:5\r\n", WireError::NotBulk),
            (b"*1\r\n$-3\r\n", WireError::NotBulk),
            (b"*1\r\n$1\r\nabc\r\n", WireError::NotBulk),
            (b"*3\r\n$3\r\nSET\r\n$4\r\nbig1\r\n$8388609\r\n", WireError::PayloadTooBig),
        ] {
            let mut p = Parser::new();
            let mut buf = BytesMut::from(wire);
            assert_eq!(p.parse(&mut buf), Err(err), "{wire:?}");
            // Stuck: the same error again, even with more data behind it.
            buf.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
            assert_eq!(p.parse(&mut buf), Err(err), "{wire:?}");
        }
        assert!(WireError::NotArray.closes());
        assert!(WireError::PayloadTooBig.closes());
        assert!(!WireError::MissingArguments.closes());
    }

    #[test]
    fn limits_are_inclusive() {
        let mut wire = b"*1024\r\n$4\r\nPING\r\n".to_vec();
        for _ in 0..1023 {
            wire.extend_from_slice(b"$1\r\na\r\n");
        }
        let mut p = Parser::new();
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(p.parse(&mut buf).unwrap().unwrap().len(), 1024);

        let mut p = Parser::new();
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$8388608\r\n"[..]);
        assert_eq!(p.parse(&mut buf), Ok(None));
        assert_eq!(p.wanted(), MAX_ARG + 2);
        assert!(p.in_frame());
    }

    #[test]
    fn big_payload_is_not_copied() {
        let mut p = Parser::new();
        let mut buf = BytesMut::from(&b"*1\r\n$100000\r\n"[..]);
        assert_eq!(p.parse(&mut buf), Ok(None));
        buf.reserve(p.wanted());
        buf.extend_from_slice(&vec![7u8; 100_000]);
        buf.extend_from_slice(b"\r\n");
        let base = buf.as_ptr() as usize;
        let req = p.parse(&mut buf).unwrap().unwrap();
        assert_eq!(req[0].as_ptr() as usize, base, "payload must be the read buffer itself");
    }

    #[test]
    fn header_line_without_newline_is_bounded() {
        let mut p = Parser::new();
        let mut buf = BytesMut::from(&b"*1\r\n$"[..]);
        buf.extend_from_slice(&vec![b'9'; MAX_HEADER_LINE + 1]);
        assert_eq!(p.parse(&mut buf), Err(WireError::HeaderTooLong));
    }

    #[test]
    fn encodes_replies() {
        let mut r = ReplyBuf::new();
        r.status("OK");
        r.error("Key not found");
        r.int(42);
        r.nil();
        r.array(2);
        r.bulk(Bytes::from_static(b"k"));
        r.bulk_slice(b"");
        assert_eq!(
            flat(&mut r),
            b"+OK\r\n-Key not found\r\n:42\r\n$-1\r\n*2\r\n$1\r\nk\r\n$0\r\n\r\n"
        );
        assert!(r.is_empty());

        let big = Bytes::from(vec![b'x'; ZERO_COPY_MIN]);
        r.status("PONG");
        r.bulk(big.clone());
        r.nil();
        let segs = r.take();
        assert_eq!(segs.len(), 3);
        assert_eq!(segs[1].as_ptr(), big.as_ptr());
        let all: Vec<u8> = segs.into_iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(&all[..7], b"+PONG\r\n");
        assert!(all.ends_with(b"x\r\n$-1\r\n"));
    }
}
