//! Wire format of the node store socket, version 1 (documented in
//! docs/formats/node-store-socket.md; golden bytes in
//! store/tests/golden/node-store-socket/). Pure encoding and parsing: no
//! I/O, every parser bounds-checked through [`Reader`], fuzzed.
//!
//! ```text
//! hello (both ways, first)   magic "ZOSFS-NS" | version u16 | flags u16 | pid u32
//! frame                      length u32 | body (length bytes)
//! request body               op u8 | arguments
//! reply body                 status u8 (0 ok, 1 error) | result or (kind u8 | message)
//! ```
//!
//! All integers are little-endian. A connection carries one request at a
//! time: the reply to a request comes before the next request is read.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::chunk::{ChunkId, MAX_BLOB};
use crate::cursor::Reader;
use crate::error::{Error, ErrorKind};
use crate::local::{FsckReport, GcReport, LocalStats, Located, OpenReport};

pub const MAGIC: [u8; 8] = *b"ZOSFS-NS";
/// The protocol this build speaks. A peer with another version is told so
/// in the hello and the connection closes: no request is ever sent to a
/// server of another version.
pub const VERSION: u16 = 1;
pub const HELLO_LEN: usize = 16;

/// Ids per HAS request and per LIST page.
pub const MAX_IDS: usize = 32 * 1024;
/// Largest request body: a PUT of the largest blob.
pub const MAX_REQUEST: usize = 1 + 32 + 1 + MAX_BLOB;
/// Largest reply body: a GET of the largest blob, or a report.
pub const MAX_REPLY: usize = 2 + MAX_BLOB;
/// Lines of problems / quarantined paths a report carries over the socket.
pub const MAX_REPORT_LINES: usize = 1000;

/// The first 16 bytes each side sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    pub pid: u32,
}

impl Hello {
    pub fn ours() -> Hello {
        Hello { version: VERSION, pid: std::process::id() }
    }

    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.pid.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Hello, String> {
        let mut r = Reader::new(b);
        if r.take(8) != Some(&MAGIC[..]) {
            return Err("the peer is not a zosfs node store (bad magic)".into());
        }
        let short = || "short hello".to_string();
        let version = r.u16().ok_or_else(short)?;
        let _flags = r.u16().ok_or_else(short)?;
        let pid = r.u32().ok_or_else(short)?;
        Ok(Hello { version, pid })
    }
}

const OP_GET: u8 = 1;
const OP_PUT: u8 = 2;
const OP_HAS: u8 = 3;
const OP_DELETE: u8 = 4;
const OP_STATS: u8 = 5;
const OP_LIST: u8 = 6;
const OP_SYNC: u8 = 7;
const OP_FSCK: u8 = 8;
const OP_GC: u8 = 9;
const OP_LOCATE: u8 = 10;

/// One request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Get(ChunkId),
    /// `durable`: acknowledge only once on disk, whatever the owner's sync
    /// policy (a client opened with `SyncPolicy::EveryPut`).
    Put {
        id: ChunkId,
        durable: bool,
        blob: Bytes,
    },
    Has(Vec<ChunkId>),
    Delete(ChunkId),
    Stats,
    /// Ids in ascending order, after `after`; one page of at most MAX_IDS.
    List {
        after: Option<ChunkId>,
    },
    Sync,
    Fsck {
        verify_ids: bool,
    },
    Gc,
    /// Where the record of an id is, so the client reads it from the
    /// segment itself; the owner attaches a read-only fd of the segment
    /// the first time it names that segment on a connection.
    Locate(ChunkId),
}

impl Op {
    fn code(&self) -> u8 {
        match self {
            Op::Get(_) => OP_GET,
            Op::Put { .. } => OP_PUT,
            Op::Has(_) => OP_HAS,
            Op::Delete(_) => OP_DELETE,
            Op::Stats => OP_STATS,
            Op::List { .. } => OP_LIST,
            Op::Sync => OP_SYNC,
            Op::Fsck { .. } => OP_FSCK,
            Op::Gc => OP_GC,
            Op::Locate(_) => OP_LOCATE,
        }
    }

    /// The request body (without the length prefix). PUT's blob is not
    /// copied: it is the second part.
    pub fn encode(&self) -> (Vec<u8>, Option<Bytes>) {
        let mut b = vec![self.code()];
        let mut tail = None;
        match self {
            Op::Get(id) | Op::Delete(id) | Op::Locate(id) => b.extend_from_slice(id.as_bytes()),
            Op::Put { id, durable, blob } => {
                b.extend_from_slice(id.as_bytes());
                b.push(u8::from(*durable));
                tail = Some(blob.clone());
            }
            Op::Has(ids) => ids.iter().for_each(|id| b.extend_from_slice(id.as_bytes())),
            Op::List { after } => {
                if let Some(id) = after {
                    b.extend_from_slice(id.as_bytes());
                }
            }
            Op::Fsck { verify_ids } => b.push(u8::from(*verify_ids)),
            Op::Stats | Op::Sync | Op::Gc => {}
        }
        (b, tail)
    }

    /// Parse a request body. `body` is a whole frame, already bounded by
    /// MAX_REQUEST.
    pub fn decode(body: Bytes) -> Result<Op, String> {
        let mut r = Reader::new(&body);
        let op = r.u8().ok_or("empty request")?;
        let id = |r: &mut Reader<'_>| {
            r.take(32).and_then(ChunkId::from_slice).ok_or_else(|| "short chunk id".to_string())
        };
        let out = match op {
            OP_GET => Op::Get(id(&mut r)?),
            OP_DELETE => Op::Delete(id(&mut r)?),
            OP_LOCATE => Op::Locate(id(&mut r)?),
            OP_PUT => {
                let id = id(&mut r)?;
                let durable = flag(&mut r)?;
                let blob = body.slice(body.len() - r.remaining()..);
                r.rest();
                if blob.len() > MAX_BLOB {
                    return Err(format!("blob of {} bytes over {MAX_BLOB}", blob.len()));
                }
                Op::Put { id, durable, blob }
            }
            OP_HAS => {
                let rest = r.rest();
                if rest.len() % 32 != 0 || rest.len() / 32 > MAX_IDS {
                    return Err(format!("HAS of {} bytes is not 1..{MAX_IDS} ids", rest.len()));
                }
                Op::Has(rest.chunks_exact(32).filter_map(ChunkId::from_slice).collect())
            }
            OP_LIST => match r.remaining() {
                0 => Op::List { after: None },
                _ => Op::List { after: Some(id(&mut r)?) },
            },
            OP_FSCK => Op::Fsck { verify_ids: flag(&mut r)? },
            OP_STATS => Op::Stats,
            OP_SYNC => Op::Sync,
            OP_GC => Op::Gc,
            other => return Err(format!("unknown request {other}")),
        };
        if !r.is_empty() {
            return Err(format!("{} stray bytes after request {op}", r.remaining()));
        }
        Ok(out)
    }
}

fn flag(r: &mut Reader<'_>) -> Result<bool, String> {
    match r.u8() {
        Some(0) => Ok(false),
        Some(1) => Ok(true),
        Some(v) => Err(format!("flag {v} is neither 0 nor 1")),
        None => Err("missing flag".into()),
    }
}

/// `fsck` through the owner: what opening the store found, and the check.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FsckAnswer {
    pub open: OpenReport,
    pub report: FsckReport,
}

/// A successful answer; which variant follows from the request.
#[derive(Clone, Debug)]
pub enum Reply {
    Blob(Option<Bytes>),
    Done,
    Bools(Vec<bool>),
    Bool(bool),
    Stats(Box<LocalStats>),
    Ids {
        ids: Vec<ChunkId>,
        more: bool,
    },
    Fsck(Box<FsckAnswer>),
    Gc(GcReport),
    /// The record's place, and whether an fd of its segment came along.
    Located(Option<(Located, bool)>),
}

/// Error kinds on the wire (stable numbers, not the enum's order).
fn kind_code(k: ErrorKind) -> u8 {
    match k {
        ErrorKind::NotFound => 1,
        ErrorKind::Corrupt => 2,
        ErrorKind::InvalidInput => 3,
        ErrorKind::Unavailable => 4,
        ErrorKind::PermissionDenied => 5,
        ErrorKind::NoSpace => 6,
        ErrorKind::Protocol => 7,
        ErrorKind::Quorum => 8,
        ErrorKind::Io => 9,
    }
}

fn kind_of(c: u8) -> ErrorKind {
    match c {
        1 => ErrorKind::NotFound,
        2 => ErrorKind::Corrupt,
        3 => ErrorKind::InvalidInput,
        4 => ErrorKind::Unavailable,
        5 => ErrorKind::PermissionDenied,
        6 => ErrorKind::NoSpace,
        7 => ErrorKind::Protocol,
        8 => ErrorKind::Quorum,
        _ => ErrorKind::Io,
    }
}

/// A reply body, or an error from the owner. The blob of a GET is the
/// second part (sent without a copy).
pub fn encode_reply(res: &Result<Reply, Error>) -> (Vec<u8>, Option<Bytes>) {
    let reply = match res {
        Ok(r) => r,
        Err(e) => {
            // The context and the sources; the kind travels as its code
            // (the client's error prints it once).
            let mut b = vec![1, kind_code(e.kind())];
            b.extend_from_slice(e.context().as_bytes());
            let mut src = std::error::Error::source(e);
            while let Some(s) = src {
                b.extend_from_slice(format!(": {s}").as_bytes());
                src = s.source();
            }
            b.truncate(64 * 1024);
            return (b, None);
        }
    };
    let mut b = vec![0u8];
    let mut tail = None;
    let json = |b: &mut Vec<u8>, v: &dyn erased::Json| b.extend_from_slice(&v.to_json());
    match reply {
        Reply::Blob(None) => b.push(0),
        Reply::Blob(Some(blob)) => {
            b.push(1);
            tail = Some(blob.clone());
        }
        Reply::Done => {}
        Reply::Bools(v) => b.extend(v.iter().map(|x| u8::from(*x))),
        Reply::Bool(x) => b.push(u8::from(*x)),
        Reply::Stats(s) => json(&mut b, &**s),
        Reply::Fsck(f) => json(&mut b, &**f),
        Reply::Gc(g) => json(&mut b, g),
        Reply::Ids { ids, more } => {
            b.push(u8::from(*more));
            ids.iter().for_each(|id| b.extend_from_slice(id.as_bytes()));
        }
        Reply::Located(None) => b.push(0),
        Reply::Located(Some((at, fd))) => {
            b.push(1);
            for v in [at.seg, at.off, at.len] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.push(u8::from(*fd));
        }
    }
    (b, tail)
}

/// Parse the reply to `op`. The outer error is a malformed reply (the
/// peer is broken); the inner one is the owner's answer.
pub fn decode_reply(op: &Op, body: Bytes) -> Result<Result<Reply, Error>, String> {
    let mut r = Reader::new(&body);
    match r.u8() {
        Some(0) => {}
        Some(1) => {
            let kind = kind_of(r.u8().ok_or("error reply without a kind")?);
            let msg = String::from_utf8_lossy(r.rest()).into_owned();
            return Ok(Err(Error::new(kind, msg)));
        }
        _ => return Err("reply without a status".into()),
    }
    let bad = |what: &str| format!("malformed reply to request {}: {what}", op.code());
    let json_err = |e: serde_json::Error| bad(&e.to_string());
    let reply = match op {
        Op::Get(_) => match r.u8() {
            Some(0) if r.is_empty() => Reply::Blob(None),
            Some(1) => Reply::Blob(Some(body.slice(2..))),
            _ => return Err(bad("no presence byte")),
        },
        Op::Put { .. } | Op::Sync if r.is_empty() => Reply::Done,
        Op::Has(ids) => {
            let v = r.rest();
            if v.len() != ids.len() || v.iter().any(|b| *b > 1) {
                return Err(bad("not one 0/1 byte per id"));
            }
            Reply::Bools(v.iter().map(|b| *b == 1).collect())
        }
        Op::Delete(_) => match r.u8() {
            Some(x @ 0..=1) if r.is_empty() => Reply::Bool(x == 1),
            _ => return Err(bad("not one 0/1 byte")),
        },
        Op::Stats => Reply::Stats(Box::new(serde_json::from_slice(r.rest()).map_err(json_err)?)),
        Op::Fsck { .. } => {
            Reply::Fsck(Box::new(serde_json::from_slice(r.rest()).map_err(json_err)?))
        }
        Op::Gc => Reply::Gc(serde_json::from_slice(r.rest()).map_err(json_err)?),
        Op::List { .. } => {
            let more = match r.u8() {
                Some(x @ 0..=1) => x == 1,
                _ => return Err(bad("no continuation byte")),
            };
            let rest = r.rest();
            if rest.len() % 32 != 0 {
                return Err(bad("ids not a multiple of 32 bytes"));
            }
            Reply::Ids {
                ids: rest.chunks_exact(32).filter_map(ChunkId::from_slice).collect(),
                more,
            }
        }
        Op::Locate(_) => match r.u8() {
            Some(0) if r.is_empty() => Reply::Located(None),
            Some(1) => {
                let mut u32s = || r.u32().ok_or_else(|| bad("short location"));
                let at = Located { seg: u32s()?, off: u32s()?, len: u32s()? };
                let fd = flag(&mut r).map_err(|w| bad(&w))?;
                if !r.is_empty() || at.len as usize > MAX_BLOB {
                    return Err(bad("bad location"));
                }
                Reply::Located(Some((at, fd)))
            }
            _ => return Err(bad("no presence byte")),
        },
        Op::Put { .. } | Op::Sync => return Err(bad("stray bytes")),
    };
    Ok(Ok(reply))
}

/// JSON for the report replies, through one object-safe trait.
mod erased {
    pub trait Json {
        fn to_json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Vec<u8> {
            serde_json::to_vec(self).expect("reports serialise")
        }
    }
}

/// Cut a report's line lists so its reply stays under MAX_REPLY.
pub fn bound_report(a: &mut FsckAnswer) {
    fn cut<T: From<String>>(v: &mut Vec<T>) {
        if v.len() > MAX_REPORT_LINES {
            let more = v.len() - MAX_REPORT_LINES;
            v.truncate(MAX_REPORT_LINES);
            v.push(T::from(format!("... and {more} more")));
        }
    }
    cut(&mut a.report.problems);
    cut(&mut a.report.quarantined);
    cut(&mut a.open.quarantined);
}
