//! Data commands: SET, GET, MGET, DEL, EXISTS, CHECK, LENGTH, KEYTIME,
//! SCAN / RSCAN, KEYCUR.

use bytes::Bytes;

use super::{After, Request, Session, Shared, admin_only, atoll, msg, validate};
use crate::server::ns::{Entry, MAX_KEY, Namespace, ReadError, SetOutcome, SetRequest, WriteError};
use crate::server::wire::{Drain, ReplyBuf};

/// Entries per SCAN reply (0-db returns what it reads in 2 ms).
const SCAN_BATCH: usize = 1024;

/// Scan cursors are 17 opaque bytes, like 0-db's:
/// `key length u8 | position u64 | value length u32 | crc32(uid ‖ first 13 bytes)`.
/// The CRC binds a cursor to its namespace and catches forged ones.
pub const CURSOR_LEN: usize = 17;

pub fn encode_cursor(ns: &Namespace, key: &[u8], e: &Entry) -> [u8; CURSOR_LEN] {
    let mut c = [0u8; CURSOR_LEN];
    c[0] = key.len() as u8;
    c[1..9].copy_from_slice(&e.pos.to_le_bytes());
    c[9..13].copy_from_slice(&e.len.to_le_bytes());
    let crc = cursor_crc(ns, &c[..13]);
    c[13..].copy_from_slice(&crc.to_le_bytes());
    c
}

fn cursor_crc(ns: &Namespace, head: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(ns.uid());
    h.update(head);
    h.finalize()
}

/// The scan position of a cursor, if it is one of ours for this namespace.
pub fn decode_cursor(ns: &Namespace, c: &[u8]) -> Option<u64> {
    if c.len() != CURSOR_LEN {
        return None;
    }
    let crc = u32::from_le_bytes(c[13..].try_into().ok()?);
    (cursor_crc(ns, &c[..13]) == crc).then(|| u64::from_le_bytes(c[1..9].try_into().unwrap()))
}

fn read_error(e: ReadError, out: &mut ReplyBuf) {
    match e {
        ReadError::Frozen => out.error(msg::FROZEN),
        ReadError::Data(e) => {
            tracing::error!("GET: {}", e.chain());
            out.error("Internal Error");
        }
    }
}

/// `key > 255` bytes on a read command.
fn key_too_long(req: &Request, out: &mut ReplyBuf) -> bool {
    if req.arg(1).len() > MAX_KEY {
        out.error(msg::INVALID_KEY);
        return true;
    }
    false
}

pub async fn set(sh: &Shared, se: &Session, req: &Request<'_>, out: &mut ReplyBuf) {
    if req.argc() == 4 {
        // SET key value timestamp: admins only.
        if !admin_only(sh, se, out) {
            return;
        }
    } else if req.argc() != 3 {
        out.error(msg::UNEXPECTED_ARGS);
        return;
    }
    if req.arg(1).len() > MAX_KEY {
        out.error("Key too large");
        return;
    }
    if !se.writable {
        out.error(msg::READ_ONLY);
        return;
    }
    let set = SetRequest {
        key: req.arg(1).clone(),
        value: req.arg(2).clone(),
        // time_t truncated to the 32 bits 0-db keeps.
        timestamp: (req.argc() == 4).then(|| atoll(req.arg(3)) as u32),
    };
    match se.ns.set(set).await {
        Ok(SetOutcome::Stored(key)) => out.bulk(key),
        Ok(SetOutcome::Unchanged) => out.nil(),
        Err(e) => write_error(e, out),
    }
}

fn write_error(e: WriteError, out: &mut ReplyBuf) {
    out.error(match e {
        WriteError::Frozen => msg::FROZEN,
        WriteError::Locked => msg::LOCKED,
        WriteError::Worm => "Namespace is protected by worm mode",
        WriteError::WormDelete => "Cannot delete a key when namespace is in worm mode",
        WriteError::NoSpace => "No space left on this namespace",
        WriteError::KeyNeeded => "Invalid argument, key needed",
        WriteError::OnlyUpdate => "Invalid key, only update authorized",
        WriteError::NotFound => "Key not found",
        WriteError::Data(e) => {
            tracing::error!("SET: {}", e.chain());
            "Cannot write data right now"
        }
        WriteError::Index(e) => {
            tracing::error!("write: {}", e.chain());
            "Cannot write index right now"
        }
    })
}

pub async fn get(se: &Session, req: &Request<'_>, out: &mut ReplyBuf) {
    if !validate(req, out, 2) || key_too_long(req, out) {
        return;
    }
    get_one(&se.ns, req.arg(1), out).await;
}

async fn get_one(ns: &Namespace, key: &[u8], out: &mut ReplyBuf) {
    match ns.get(key).await {
        Ok(Some(v)) => out.bulk(v.data),
        Ok(None) => out.nil(),
        Err(e) => read_error(e, out),
    }
}

/// MGET key...: the values go out as they are read (the same key asked
/// a thousand times must not make a reply of a thousand values in memory).
pub async fn mget(
    se: &Session,
    req: &Request<'_>,
    out: &mut ReplyBuf,
    drain: &mut dyn Drain,
) -> After {
    if req.argc() < 2 {
        out.error("Invalid arguments");
        return After::Continue;
    }
    if req.args[1..].iter().any(|k| k.len() > MAX_KEY) {
        out.error(msg::INVALID_KEY);
        return After::Continue;
    }
    if let Err(e) = se.ns.readable() {
        read_error(e, out);
        return After::Continue;
    }
    out.array(req.argc() - 1);
    for key in &req.args[1..] {
        get_one(&se.ns, key, out).await;
        if out.is_full() && drain.drain(out).await.is_err() {
            return After::Close;
        }
    }
    After::Continue
}

pub async fn del(sh: &Shared, se: &Session, req: &Request<'_>, out: &mut ReplyBuf) {
    if req.argc() == 3 {
        // DEL key timestamp: admins only (the timestamp is not observable).
        if !admin_only(sh, se, out) {
            return;
        }
    } else if !validate(req, out, 2) {
        return;
    }
    if key_too_long(req, out) {
        return;
    }
    if !se.writable {
        out.error(msg::READ_ONLY);
        return;
    }
    match se.ns.del(req.arg(1)).await {
        Ok(()) => out.status("OK"),
        Err(WriteError::Index(e)) => {
            tracing::error!("DEL: {}", e.chain());
            out.error("Cannot delete key (index)");
        }
        Err(e) => write_error(e, out),
    }
}

/// The live entry of the request's key, after the checks every key
/// lookup command shares; None when a reply was already queued.
fn lookup(se: &Session, req: &Request, out: &mut ReplyBuf) -> Option<Option<Entry>> {
    if !validate(req, out, 2) || key_too_long(req, out) {
        return None;
    }
    match se.ns.entry(req.arg(1)) {
        Ok(e) => Some(e),
        Err(e) => {
            read_error(e, out);
            None
        }
    }
}

pub fn exists(se: &Session, req: &Request, out: &mut ReplyBuf) {
    if let Some(e) = lookup(se, req, out) {
        out.int(e.is_some() as i64);
    }
}

pub fn length(se: &Session, req: &Request, out: &mut ReplyBuf) {
    match lookup(se, req, out) {
        Some(Some(e)) => out.int(e.len as i64),
        Some(None) => out.nil(),
        None => {}
    }
}

pub fn keytime(se: &Session, req: &Request, out: &mut ReplyBuf) {
    match lookup(se, req, out) {
        Some(Some(e)) => out.int(e.timestamp as i64),
        Some(None) => out.nil(),
        None => {}
    }
}

pub async fn check(se: &Session, req: &Request<'_>, out: &mut ReplyBuf) {
    if lookup(se, req, out).is_none() {
        return;
    }
    match se.ns.check(req.arg(1)).await {
        Ok(Some(ok)) => out.int(ok as i64),
        Ok(None) => out.nil(),
        Err(e) => read_error(e, out),
    }
}

pub fn keycur(se: &Session, req: &Request, out: &mut ReplyBuf) {
    if !validate(req, out, 2) {
        return;
    }
    match se.ns.entry(req.arg(1)) {
        Ok(Some(e)) => out.bulk_slice(&encode_cursor(&se.ns, req.arg(1), &e)),
        Ok(None) => out.error("Key not found"),
        Err(e) => read_error(e, out),
    }
}

/// SCAN [cursor] / RSCAN [cursor]:
/// `*2 [cursor, *N of *3 [key, :length, :timestamp]]`.
pub fn scan(se: &Session, req: &Request, out: &mut ReplyBuf, backwards: bool) {
    let from = if req.argc() == 1 {
        None
    } else {
        match decode_cursor(&se.ns, req.arg(1)) {
            Some(pos) => Some(pos),
            None => {
                // Frozen wins over a bad cursor, as in 0-db.
                if let Err(e) = se.ns.readable() {
                    return read_error(e, out);
                }
                out.error("Invalid key format");
                return;
            }
        }
    };
    let entries = match se.ns.scan(from, backwards, SCAN_BATCH) {
        Ok(v) => v,
        Err(e) => return read_error(e, out),
    };
    let Some((last_key, last)) = entries.last() else {
        out.error("No more data");
        return;
    };
    out.array(2);
    out.bulk_slice(&encode_cursor(&se.ns, last_key, last));
    out.array(entries.len());
    for (key, e) in &entries {
        out.array(3);
        out.bulk(Bytes::clone(key));
        out.int(e.len as i64);
        out.int(e.timestamp as i64);
    }
}
