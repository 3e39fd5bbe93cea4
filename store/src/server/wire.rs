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

/// Most payload bytes one request may announce in all its arguments: one
/// value of [`MAX_ARG`] plus 512 KiB for keys and the rest (MGET of 1024
/// keys of 255 bytes is 255 KiB). A request is buffered whole before it
/// runs, so this bounds what one connection's request holds in memory;
/// 0-db's own limit is per argument only.
pub const MAX_REQUEST: usize = MAX_ARG + 512 * 1024;

/// Replies queued beyond this many bytes are written out before more is
/// produced (between requests, and between the values of one MGET).
pub const FLUSH_AT: usize = 1 << 20;

/// A header line (`*N` or `$N`) longer than this without a newline is not
/// RESP; 0-db's 8 KiB read buffer would overflow and drop the client.
pub const MAX_HEADER_LINE: usize = 8192;

/// Bulk values at least this large are written straight from their own
/// buffer instead of being copied into the reply buffer; smaller request
/// arguments are copied out of the read buffer, so a request of many small
/// arguments never pins one read-buffer allocation per argument.
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
    /// The arguments of one request announce more than [`MAX_REQUEST`]
    /// bytes in all (not a 0-db error: it has no such limit).
    RequestTooBig,
}

/// The error line of [`WireError::RequestTooBig`]; names the limit.
const REQUEST_TOO_BIG: &str = "Request too big (more than 8912896 bytes of arguments)";

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
            WireError::RequestTooBig => REQUEST_TOO_BIG,
        }
    }

    /// Whether the server closes the connection after the error line.
    /// Otherwise the connection is stuck on this error.
    pub fn closes(self) -> bool {
        matches!(
            self,
            WireError::NotArray
                | WireError::PayloadTooBig
                | WireError::HeaderTooLong
                | WireError::RequestTooBig
        )
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
    /// Payload bytes announced so far by the request being parsed.
    announced: usize,
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
        Parser { state: State::Empty, argc: 0, args: Vec::new(), announced: 0 }
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
                    self.announced = 0;
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
                    if self.announced + len > MAX_REQUEST {
                        return Err(WireError::RequestTooBig);
                    }
                    self.announced += len;
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
                    let arg = if len >= ZERO_COPY_MIN {
                        // Zero-copy: the payload becomes its own Bytes.
                        buf.split_to(len).freeze()
                    } else {
                        let small = Bytes::copy_from_slice(&buf[..len]);
                        buf.advance(len);
                        small
                    };
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

/// Where a command with a long reply (MGET) hands over what it queued so
/// far once [`ReplyBuf::is_full`], so a reply is never whole in memory: the
/// connection writes it out, waiting while the client does not read.
#[async_trait::async_trait]
pub trait Drain: Send {
    /// Write out everything `out` holds. An error ends the connection.
    async fn drain(&mut self, out: &mut ReplyBuf) -> std::io::Result<()>;
}

/// Replies queued for one connection: small replies are appended to one
/// buffer, big bulk payloads are kept as their own segment.
#[derive(Debug, Default)]
pub struct ReplyBuf {
    head: BytesMut,
    segments: VecDeque<Bytes>,
    len: usize,
    /// Error replies queued so far (for the server's counters).
    errors: u64,
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

    /// Over [`FLUSH_AT`]: write out before producing more.
    pub fn is_full(&self) -> bool {
        self.len >= FLUSH_AT
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
        self.errors += 1;
        self.put_line(b'-', text.as_bytes());
    }

    /// Error replies queued since this buffer was made.
    pub fn errors(&self) -> u64 {
        self.errors
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
        assert!(WireError::RequestTooBig.closes());
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
    fn arguments_of_one_request_are_bounded_in_all() {
        assert!(REQUEST_TOO_BIG.contains(&MAX_REQUEST.to_string()));
        // A full value plus a 255-byte key and a timestamp fits.
        let mut p = Parser::new();
        let mut buf = BytesMut::from(&b"*4\r\n$3\r\nSET\r\n$255\r\n"[..]);
        buf.extend_from_slice(&[b'k'; 255]);
        buf.extend_from_slice(b"\r\n$8388608\r\n");
        assert_eq!(p.parse(&mut buf), Ok(None));
        buf.extend_from_slice(&vec![0; MAX_ARG]);
        buf.extend_from_slice(b"\r\n$10\r\n1600000000\r\n");
        assert_eq!(p.parse(&mut buf).unwrap().unwrap().len(), 4);
        // 1024 arguments of 8 MiB are refused at the second header, before
        // any payload is buffered.
        let mut p = Parser::new();
        let mut buf = BytesMut::from(&b"*1024\r\n$8388608\r\n"[..]);
        assert_eq!(p.parse(&mut buf), Ok(None));
        buf.extend_from_slice(&vec![0; MAX_ARG]);
        buf.extend_from_slice(b"\r\n$8388608\r\n");
        assert_eq!(p.parse(&mut buf), Err(WireError::RequestTooBig));
        // The count starts again with the next request.
        let mut p = Parser::new();
        for _ in 0..3 {
            let mut buf = BytesMut::from(&b"*1\r\n$8388608\r\n"[..]);
            buf.extend_from_slice(&vec![0; MAX_ARG]);
            buf.extend_from_slice(b"\r\n");
            assert_eq!(p.parse(&mut buf).unwrap().unwrap()[0].len(), MAX_ARG);
        }
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

    /// The seeds of the `resp_request` fuzz target (`fuzz/seeds/`): the
    /// first byte is how the fuzzer cuts the rest into reads. Rewrite with
    /// `ZOSFS_WRITE_FUZZ_SEEDS=1 cargo test --release -p zosfs-store --lib fuzz_seeds`.
    #[test]
    fn fuzz_seeds_are_valid_inputs() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/resp_request");
        let mut pipelined = vec![3u8];
        pipelined.extend_from_slice(
            b"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nv\r\n\0\n\r\n",
        );
        pipelined.extend_from_slice(b"*4\r\n$4\r\nMGET\r\n$1\r\nk\r\n$1\r\nk\r\n$1\r\nx\r\n");
        let mut too_big = vec![0u8];
        too_big.extend_from_slice(b"*1024\r\n$8388608\r\n");
        let mut bad = vec![1u8];
        bad.extend_from_slice(b"*2\r\n$3\r\nGET\r\n:5\r\n");
        let seeds: [(&str, Vec<u8>, usize, Option<WireError>); 3] = [
            ("pipelined", pipelined, 3, None),
            ("announced_too_big", too_big, 0, None),
            ("not_bulk", bad, 0, Some(WireError::NotBulk)),
        ];
        for (name, bytes, requests, err) in seeds {
            let path = dir.join(name);
            if std::env::var_os("ZOSFS_WRITE_FUZZ_SEEDS").is_some() {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            }
            let seed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(seed, bytes, "{name}: stale seed (see the doc comment)");
            let mut p = Parser::new();
            let mut buf = BytesMut::from(&seed[1..]);
            let mut got = 0;
            let end = loop {
                match p.parse(&mut buf) {
                    Ok(Some(_)) => got += 1,
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                }
            };
            assert_eq!((got, end), (requests, err), "{name}");
        }
    }
}
