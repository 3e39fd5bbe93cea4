//! Segment files (`NNNNNNNN.seg`, append-only) and the record scanner used
//! by replay, compaction and fsck.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::record::{HEADER_LEN, Header, MAGIC};
use crate::engine::IoEngine;

pub fn seg_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}.seg"))
}

/// Segment numbers present in `dir`, ascending.
pub fn list(dir: &Path) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        let name = name.to_string_lossy();
        if let Some(num) = name.strip_suffix(".seg") {
            if num.len() == 8 {
                if let Ok(n) = num.parse::<u32>() {
                    out.push(n);
                }
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Open segment `n`; with `create`, a new empty one (an empty file left by
/// an earlier attempt is reused, one with data is refused).
pub fn open(dir: &Path, n: u32, create: bool) -> io::Result<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(seg_path(dir, n))?;
    if create && f.metadata()?.len() != 0 {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("new segment {n} already holds data"),
        ));
    }
    Ok(f)
}

/// What a scan finds at a position.
#[derive(Debug)]
pub enum Item {
    /// A record whose header and payload check out.
    Record { pos: u64, header: Header, payload: Bytes },
    /// A sound header whose payload fails its CRC; the scan goes on after it.
    BadPayload { pos: u64, header: Header, why: &'static str },
    /// Bytes that parse as no record, up to the next sound record.
    Damaged { pos: u64, len: u64, why: &'static str },
    /// Nothing sound from `pos` to the end: a torn (or rotten) tail.
    Torn { pos: u64, why: &'static str },
}

impl Item {
    pub fn pos(&self) -> u64 {
        match self {
            Item::Record { pos, .. }
            | Item::BadPayload { pos, .. }
            | Item::Damaged { pos, .. }
            | Item::Torn { pos, .. } => *pos,
        }
    }
}

/// Reads a segment front to back through the engine, in large windows.
pub struct Scanner {
    engine: Arc<dyn IoEngine>,
    file: Arc<File>,
    pos: u64,
    end: u64,
    win: Bytes,
    win_off: u64,
}

const WINDOW: usize = 8 << 20;

impl Scanner {
    pub fn new(engine: Arc<dyn IoEngine>, file: Arc<File>, start: u64, end: u64) -> Scanner {
        Scanner { engine, file, pos: start, end, win: Bytes::new(), win_off: start }
    }

    /// `[off, off+len)` of the file (caller ensures it is below `end`).
    async fn bytes(&mut self, off: u64, len: usize) -> io::Result<Bytes> {
        let have = off >= self.win_off && off + len as u64 <= self.win_off + self.win.len() as u64;
        if !have {
            let want = WINDOW.max(len).min((self.end - off) as usize);
            let data = self.engine.read_at(self.file.clone(), off, want).await?;
            if data.len() < len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("segment shrank under a scan (wanted {len} bytes at {off})"),
                ));
            }
            self.win = Bytes::from(data);
            self.win_off = off;
        }
        let at = (off - self.win_off) as usize;
        Ok(self.win.slice(at..at + len))
    }

    pub async fn next(&mut self) -> io::Result<Option<Item>> {
        let pos = self.pos;
        if pos >= self.end {
            return Ok(None);
        }
        if self.end - pos < HEADER_LEN as u64 {
            self.pos = self.end;
            return Ok(Some(Item::Torn { pos, why: "incomplete record header" }));
        }
        let hb = self.bytes(pos, HEADER_LEN).await?;
        let header = match Header::decode(&hb) {
            Ok(h) => h,
            Err(why) => {
                return Ok(Some(match self.resync(pos + 1).await? {
                    Some(next) => {
                        self.pos = next;
                        Item::Damaged { pos, len: next - pos, why }
                    }
                    None => {
                        self.pos = self.end;
                        Item::Torn { pos, why }
                    }
                }));
            }
        };
        let rec_end = pos + header.record_len();
        if rec_end > self.end {
            self.pos = self.end;
            return Ok(Some(Item::Torn { pos, why: "record runs past the end of its segment" }));
        }
        let payload = self.bytes(pos + HEADER_LEN as u64, header.len as usize).await?;
        self.pos = rec_end;
        Ok(Some(match header.check_payload(&payload) {
            Ok(()) => Item::Record { pos, header, payload },
            Err(why) => Item::BadPayload { pos, header, why },
        }))
    }

    /// The first position at or after `from` where a wholly sound record
    /// starts, if any.
    async fn resync(&mut self, from: u64) -> io::Result<Option<u64>> {
        let mut at = from;
        'windows: while at + HEADER_LEN as u64 <= self.end {
            let len = WINDOW.min((self.end - at) as usize);
            let buf = self.bytes(at, len).await?;
            // Candidates start below `limit`, so a whole header fits in `buf`.
            let limit = buf.len() - (HEADER_LEN - 1);
            let mut i = 0;
            while i < limit {
                match buf[i..limit + 3].windows(4).position(|w| w == MAGIC) {
                    None => break,
                    Some(k) => i += k,
                }
                let cand = at + i as u64;
                if let Ok(h) = Header::decode(&buf[i..i + HEADER_LEN]) {
                    if cand + h.record_len() <= self.end {
                        let payload = self.bytes(cand + HEADER_LEN as u64, h.len as usize).await?;
                        if h.check_payload(&payload).is_ok() {
                            return Ok(Some(cand));
                        }
                        // The window may have moved: restart just after `cand`.
                        at = cand + 1;
                        continue 'windows;
                    }
                }
                i += 1;
            }
            at += limit as u64;
        }
        Ok(None)
    }
}
