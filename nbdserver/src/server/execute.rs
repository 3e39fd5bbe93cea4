//! Running one validated command against the device and encoding its
//! reply (simple or structured, as negotiated). A reply is built whole
//! before it is queued, so a device error can never follow a success
//! header already on the wire.

use bytes::Bytes;

use super::export::Export;
use super::sink::Part;
use crate::device::{BlockDevice, Extent, MAX_EXTENTS, ReadPiece, ZeroMode};
use crate::error::Error;
use crate::proto::{Command, ErrorCode, Session, reply};

static ZEROS: [u8; 1 << 20] = [0u8; 1 << 20];

/// `n` zero bytes as static slices (no allocation).
fn zeros(mut n: u32, out: &mut Vec<Bytes>) {
    while n > 0 {
        let k = n.min(ZEROS.len() as u32);
        out.push(Bytes::from_static(&ZEROS[..k as usize]));
        n -= k;
    }
}

/// An error reply in the session's style.
pub fn error_reply(s: &Session, cookie: u64, code: ErrorCode, message: &str) -> Vec<Bytes> {
    let frame = if s.structured {
        reply::error(cookie, code, message)
    } else {
        reply::simple(cookie, Some(code))
    };
    vec![Bytes::from(frame)]
}

fn failed(s: &Session, cookie: u64, e: &Error) -> Vec<Bytes> {
    tracing::debug!("request {cookie:#x} failed: {}", e.chain());
    error_reply(s, cookie, e.kind().nbd_code(), &e.to_string())
}

/// Execute `cmd` on the export's device (`payload`: the data of a WRITE),
/// count it, and encode the reply.
pub async fn execute(
    export: &Export,
    s: &Session,
    cookie: u64,
    cmd: Command,
    payload: Bytes,
) -> Vec<Bytes> {
    let result = run(export.device.as_ref(), s, cookie, cmd, payload).await;
    export.counters.count(&cmd, result.is_ok());
    match result {
        Ok(parts) => parts,
        Err(e) => failed(s, cookie, &e),
    }
}

/// Largest READ copied in place by the connection's reader. Copying a
/// bigger one there would serialise the copies that tasks on every worker
/// do in parallel; bigger warm reads go out by `sendfile` instead, where
/// the socket allows it.
const READ_NOW_MAX: u32 = 128 << 10;

/// The reply of `cmd` if it can be answered at once without waiting (a
/// READ of local, cached bytes), counted like [`execute`]; None otherwise.
/// With `zero_copy`, a READ over [`READ_NOW_MAX`] is answered with the
/// device's file range (sent by `sendfile`).
pub fn execute_now(
    export: &Export,
    s: &Session,
    cookie: u64,
    cmd: &Command,
    zero_copy: bool,
) -> Option<Vec<Part>> {
    let Command::Read { offset, length, df } = *cmd else {
        return None;
    };
    if length > READ_NOW_MAX {
        if !zero_copy {
            return None;
        }
        let range = export.device.read_file_range(offset, length)?;
        export.counters.count(cmd, true);
        export.counters.zero_copy_read();
        // One stretch of data, so DF (don't fragment) holds either way.
        let header = if s.structured {
            reply::offset_data_header(cookie, offset, length, true)
        } else {
            reply::simple(cookie, None)
        };
        return Some(vec![Part::Mem(header.into()), Part::File(range)]);
    }
    let pieces = export.device.read_now(offset, length)?;
    export.counters.count(cmd, true);
    Some(Part::mem_all(read_reply(s, cookie, offset, pieces, df)))
}

/// The reply of a successful command, or its error.
async fn run(
    dev: &dyn BlockDevice,
    s: &Session,
    cookie: u64,
    cmd: Command,
    payload: Bytes,
) -> Result<Vec<Bytes>, Error> {
    // A payload-free success may always be a simple reply.
    let done = || vec![Bytes::from(reply::simple(cookie, None))];
    Ok(match cmd {
        Command::Read { offset, length, df } => {
            read_reply(s, cookie, offset, dev.read(offset, length).await?, df)
        }
        Command::Write { offset, fua, .. } => {
            dev.write(offset, payload, fua).await?;
            done()
        }
        Command::Flush => {
            dev.flush().await?;
            done()
        }
        Command::Trim { offset, length, fua } => {
            dev.trim(offset, length, fua).await?;
            done()
        }
        Command::Cache { offset, length } => {
            dev.cache(offset, length).await?;
            done()
        }
        Command::WriteZeroes { offset, length, fua, no_hole, fast } => {
            dev.write_zeroes(offset, length, ZeroMode { no_hole, fast }, fua).await?;
            done()
        }
        Command::BlockStatus { offset, length, req_one } => {
            block_status_reply(dev, s, cookie, offset, length, req_one).await?
        }
        // The reader handles DISC itself; answering it would break the spec.
        Command::Disconnect => Vec::new(),
    })
}

fn read_reply(
    s: &Session,
    cookie: u64,
    offset: u64,
    pieces: Vec<ReadPiece>,
    df: bool,
) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(pieces.len() * 2 + 1);
    let total: u32 = pieces.iter().map(ReadPiece::len).sum();
    if !s.structured || df {
        // One stretch of bytes: simple reply, or a single data chunk.
        if !s.structured {
            out.push(Bytes::from(reply::simple(cookie, None)));
        } else if total == 0 {
            return vec![Bytes::from(reply::none(cookie))];
        } else {
            out.push(Bytes::from(reply::offset_data_header(cookie, offset, total, true)));
        }
        for p in pieces {
            match p {
                ReadPiece::Data(b) => out.push(b),
                ReadPiece::Zero(n) => zeros(n, &mut out),
            }
        }
        return out;
    }
    let n = pieces.len();
    if n == 0 {
        return vec![Bytes::from(reply::none(cookie))];
    }
    let mut at = offset;
    for (i, p) in pieces.into_iter().enumerate() {
        let last = i + 1 == n;
        let len = p.len();
        match p {
            ReadPiece::Data(b) => {
                out.push(Bytes::from(reply::offset_data_header(cookie, at, len, last)));
                out.push(b);
            }
            ReadPiece::Zero(z) => out.push(Bytes::from(reply::offset_hole(cookie, at, z, last))),
        }
        at += u64::from(len);
    }
    out
}

/// Clip device extents to the request, merge equal neighbours, make
/// lengths u32 and nonzero; never empty, at most [`MAX_EXTENTS`] (the
/// reply then describes less than was asked, as the spec allows).
pub fn descriptors(extents: &[Extent], length: u32, req_one: bool) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    let mut left = u64::from(length);
    for e in extents {
        if left == 0 {
            break;
        }
        let l = e.length.min(left);
        if l == 0 {
            continue;
        }
        left -= l;
        match out.last_mut() {
            Some((len, flags)) if *flags == e.flags => *len += l as u32,
            _ => out.push((l as u32, e.flags)),
        }
    }
    if out.is_empty() {
        // Status 0 ("nothing known") is always a safe answer.
        out.push((length, 0));
    }
    out.truncate(if req_one { 1 } else { MAX_EXTENTS });
    out
}

async fn block_status_reply(
    dev: &dyn BlockDevice,
    s: &Session,
    cookie: u64,
    offset: u64,
    length: u32,
    req_one: bool,
) -> Result<Vec<Bytes>, Error> {
    let mut out = Vec::with_capacity(s.contexts.len());
    for (i, ctx) in s.contexts.iter().enumerate() {
        let extents = dev.block_status(*ctx, offset, length).await?;
        let last = i + 1 == s.contexts.len();
        let d = descriptors(&extents, length, req_one);
        out.push(Bytes::from(reply::block_status(cookie, ctx.id(), &d, last)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_clipping() {
        let x = [
            Extent { length: 10, flags: 3 },
            Extent { length: 5, flags: 3 },
            Extent { length: 100, flags: 0 },
        ];
        assert_eq!(descriptors(&x, 50, false), vec![(15, 3), (35, 0)]);
        assert_eq!(descriptors(&x, 50, true), vec![(15, 3)]);
        assert_eq!(descriptors(&[], 7, false), vec![(7, 0)]);
        assert_eq!(descriptors(&[Extent { length: 0, flags: 1 }], 7, false), vec![(7, 0)]);
        // Alternating extents: the reply stops at the cap.
        let many: Vec<Extent> =
            (0..3 * MAX_EXTENTS).map(|i| Extent { length: 512, flags: (i % 2) as u32 }).collect();
        let d = descriptors(&many, u32::MAX, false);
        assert_eq!(d.len(), MAX_EXTENTS);
        assert!(d.iter().all(|&(l, _)| l == 512));
    }
}
