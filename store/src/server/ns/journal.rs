//! A namespace's metadata journal: an append-only file of CRC-framed
//! records, replayed at start.
//!
//! ```text
//! frame   = len: u32 LE | crc32(payload): u32 LE | payload (len bytes)
//! payload = tag: u8 | fields (little-endian integers, u8-length-prefixed bytes)
//! ```
//!
//! The first record is always `Create`. A bad frame (short, failing its
//! CRC, or not decoding) with no valid frame anywhere after it is a torn
//! tail from a crash and is cut off when the journal is opened for
//! writing. A bad frame with a valid frame after it is damage in the
//! middle (a crash only ever tears the end): the journal is refused with
//! the file and offset named, and nothing is cut, so the records after
//! the damage and the values they name stay for an operator to recover.
//!
//! Values are not in the journal: `Set` names the blob id under which the
//! value lives in the value store.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::chunk::ChunkId;
use crate::cursor::Reader;
use crate::error::{Error, Result, corrupt};

/// Journal format version written in `Create`.
const VERSION: u8 = 1;
/// "zosfs zdb namespace journal".
const MAGIC: &[u8; 8] = b"ZOSZDBNS";
/// A frame can never be larger than this (keys ≤ 255, names ≤ 128).
const MAX_FRAME: usize = 4096;

const TAG_CREATE: u8 = 1;
const TAG_SET: u8 = 2;
const TAG_DEL: u8 = 3;
const TAG_SETTING: u8 = 4;
const TAG_NEXT_ID: u8 = 5;

/// Persistent namespace settings (`lock`/`freeze` are runtime only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Setting {
    /// Empty clears the password.
    Password(Vec<u8>),
    Public(bool),
    Worm(bool),
    MaxSize(u64),
    /// true: sequential, false: user keys.
    Sequential(bool),
}

/// One journal record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Create {
        uid: [u8; 16],
        /// Creation order among namespaces (NSLIST order).
        order: u64,
        name: Vec<u8>,
    },
    /// A write of `key`: it now has this value. Each Set uses up one internal id.
    Set {
        key: Vec<u8>,
        /// Scan position (write sequence in user mode, the id in sequential mode).
        pos: u64,
        len: u32,
        timestamp: u32,
        hash: [u8; 32],
        /// None for an empty value (nothing stored).
        blob: Option<ChunkId>,
    },
    Del {
        key: Vec<u8>,
    },
    Setting(Setting),
    /// Written by compaction: the internal id counter (Sets that are gone
    /// from the journal no longer count).
    NextId(u64),
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    debug_assert!(b.len() <= 255);
    out.push(b.len() as u8);
    out.extend_from_slice(b);
}

impl Record {
    fn encode_payload(&self, out: &mut Vec<u8>) {
        match self {
            Record::Create { uid, order, name } => {
                out.push(TAG_CREATE);
                out.extend_from_slice(MAGIC);
                out.push(VERSION);
                out.extend_from_slice(uid);
                out.extend_from_slice(&order.to_le_bytes());
                put_bytes(out, name);
            }
            Record::Set { key, pos, len, timestamp, hash, blob } => {
                out.push(TAG_SET);
                put_bytes(out, key);
                out.extend_from_slice(&pos.to_le_bytes());
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&timestamp.to_le_bytes());
                out.extend_from_slice(hash);
                match blob {
                    Some(id) => {
                        out.push(1);
                        out.extend_from_slice(id.as_bytes());
                    }
                    None => out.push(0),
                }
            }
            Record::Del { key } => {
                out.push(TAG_DEL);
                put_bytes(out, key);
            }
            Record::Setting(s) => {
                out.push(TAG_SETTING);
                match s {
                    Setting::Password(p) => {
                        out.push(1);
                        put_bytes(out, p);
                    }
                    Setting::Public(b) => out.extend_from_slice(&[2, *b as u8]),
                    Setting::Worm(b) => out.extend_from_slice(&[3, *b as u8]),
                    Setting::MaxSize(n) => {
                        out.push(4);
                        out.extend_from_slice(&n.to_le_bytes());
                    }
                    Setting::Sequential(b) => out.extend_from_slice(&[5, *b as u8]),
                }
            }
            Record::NextId(n) => {
                out.push(TAG_NEXT_ID);
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
    }

    /// Append this record as one frame.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 8]);
        self.encode_payload(out);
        let payload_len = out.len() - start - 8;
        let crc = crc32fast::hash(&out[start + 8..]);
        out[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    pub fn decode_payload(p: &[u8]) -> Option<Record> {
        let mut r = Reader::new(p);
        let rec = match r.u8()? {
            TAG_CREATE => {
                if r.take(8)? != MAGIC || r.u8()? != VERSION {
                    return None;
                }
                let uid = r.take(16)?.try_into().ok()?;
                let order = r.u64()?;
                Record::Create { uid, order, name: r.short_bytes()? }
            }
            TAG_SET => Record::Set {
                key: r.short_bytes()?,
                pos: r.u64()?,
                len: r.u32()?,
                timestamp: r.u32()?,
                hash: r.take(32)?.try_into().ok()?,
                blob: match r.u8()? {
                    0 => None,
                    1 => Some(ChunkId::from_slice(r.take(32)?)?),
                    _ => return None,
                },
            },
            TAG_DEL => Record::Del { key: r.short_bytes()? },
            TAG_SETTING => Record::Setting(match r.u8()? {
                1 => Setting::Password(r.short_bytes()?),
                2 => Setting::Public(r.u8()? != 0),
                3 => Setting::Worm(r.u8()? != 0),
                4 => Setting::MaxSize(r.u64()?),
                5 => Setting::Sequential(r.u8()? != 0),
                _ => return None,
            }),
            TAG_NEXT_ID => Record::NextId(r.u64()?),
            _ => return None,
        };
        r.is_empty().then_some(rec)
    }
}

/// Result of reading a journal file.
#[derive(Debug)]
pub struct Replay {
    pub records: Vec<Record>,
    /// Length of the valid prefix; bytes after it are a torn tail.
    pub valid_len: u64,
    pub file_len: u64,
}

/// The valid frame starting at `off`, if one does, and its length.
fn frame_at(data: &[u8], off: usize) -> Option<(Record, usize)> {
    let head = data.get(off..off + 8)?;
    let len = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().unwrap());
    if len == 0 || len > MAX_FRAME {
        return None;
    }
    let payload = data.get(off + 8..off + 8 + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    Some((Record::decode_payload(payload)?, 8 + len))
}

/// Decode every valid frame of `data`, stopping at the first bad one.
pub fn decode_all(data: &[u8]) -> Replay {
    let mut records = Vec::new();
    let mut off = 0usize;
    while let Some((rec, len)) = frame_at(data, off) {
        records.push(rec);
        off += len;
    }
    Replay { records, valid_len: off as u64, file_len: data.len() as u64 }
}

/// The offset of the first valid frame after a bad one at `bad`, if any:
/// a frame is searched for at every byte, as the bad frame's length
/// cannot be trusted.
pub fn next_valid_frame(data: &[u8], bad: usize) -> Option<usize> {
    (bad + 1..data.len().saturating_sub(8)).find(|&off| frame_at(data, off).is_some())
}

/// Read and decode a journal file; refuse one damaged in the middle.
pub fn read(path: &Path) -> Result<Replay> {
    let data = std::fs::read(path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    let replay = decode_all(&data);
    if !matches!(replay.records.first(), Some(Record::Create { .. })) {
        return Err(corrupt(format!("{}: not a namespace journal", path.display())));
    }
    let bad = replay.valid_len as usize;
    if let Some(next) = next_valid_frame(&data, bad) {
        return Err(corrupt(format!(
            "{}: damaged record at byte offset {bad}, followed by valid records from byte \
             offset {next}: this is not a torn tail, refusing to cut the records after it \
             (keep a copy of the file; truncating it to {bad} bytes drops every write after \
             the damage)",
            path.display()
        )));
    }
    Ok(replay)
}

/// fsync a directory so a rename or create inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("fsync directory {}", dir.display()), e))
}

/// Write a complete journal (`records`) to `path` atomically: a temporary
/// file, fsync, rename, fsync of the directory.
pub fn write_new(path: &Path, records: &[Record]) -> Result<()> {
    let mut buf = Vec::new();
    for r in records {
        r.encode(&mut buf);
    }
    let tmp = path.with_extension("tmp");
    let ctx = |what: &str| format!("{what} {}", tmp.display());
    let mut f = restricted_file(&tmp).map_err(|e| Error::io(ctx("create"), e))?;
    f.write_all(&buf).map_err(|e| Error::io(ctx("write"), e))?;
    f.sync_all().map_err(|e| Error::io(ctx("fsync"), e))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| Error::io(format!("rename {} into place", tmp.display()), e))?;
    sync_dir(path.parent().expect("journal has a directory"))
}

/// A new file only the owner can read: journals hold namespace passwords.
fn restricted_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)
}

/// An open journal for appending. Writes are plain `write(2)` calls (the
/// page cache keeps them across a crash of this process); `sync` makes them
/// durable against power loss and is called periodically and at shutdown.
#[derive(Debug)]
pub struct JournalFile {
    path: PathBuf,
    file: Arc<File>,
}

impl JournalFile {
    /// Open for appending; a torn tail beyond `valid_len` is cut off first.
    pub fn open(path: &Path, valid_len: u64) -> Result<JournalFile> {
        let ctx = |what: &str| format!("{what} {}", path.display());
        // O_APPEND: every write lands at the end, whoever writes.
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| Error::io(ctx("open"), e))?;
        let len = file.metadata().map_err(|e| Error::io(ctx("stat"), e))?.len();
        if len > valid_len {
            file.set_len(valid_len).map_err(|e| Error::io(ctx("truncate torn tail of"), e))?;
            file.sync_all().map_err(|e| Error::io(ctx("fsync"), e))?;
        }
        Ok(JournalFile { path: path.to_path_buf(), file: Arc::new(file) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append bytes at the end (blocking; call from a blocking thread).
    pub fn append(&self, data: &[u8]) -> Result<()> {
        let mut f = &*self.file;
        f.write_all(data).map_err(|e| Error::io(format!("append to {}", self.path.display()), e))
    }

    /// fsync (blocking).
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io(format!("fsync {}", self.path.display()), e))
    }

    /// Current length (blocking).
    pub fn len(&self) -> u64 {
        self.file.metadata().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A second handle sharing the file, for moving into blocking tasks.
    pub fn handle(&self) -> JournalFile {
        JournalFile { path: self.path.clone(), file: self.file.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        vec![
            Record::Create { uid: [7; 16], order: 3, name: b"imgs".to_vec() },
            Record::Setting(Setting::Password(b"s3cret".to_vec())),
            Record::Setting(Setting::Public(false)),
            Record::Setting(Setting::Worm(true)),
            Record::Setting(Setting::MaxSize(10)),
            Record::Setting(Setting::Sequential(true)),
            Record::Set {
                key: b"\0\r\nk".to_vec(),
                pos: 9,
                len: 5,
                timestamp: 1_600_000_000,
                hash: [1; 32],
                blob: Some(ChunkId([2; 32])),
            },
            Record::Set {
                key: vec![b'K'; 255],
                pos: 10,
                len: 0,
                timestamp: 0,
                hash: [3; 32],
                blob: None,
            },
            Record::Del { key: b"x".to_vec() },
            Record::NextId(42),
        ]
    }

    #[test]
    fn round_trips_every_record() {
        let mut buf = Vec::new();
        for r in sample() {
            r.encode(&mut buf);
        }
        let replay = decode_all(&buf);
        assert_eq!(replay.records, sample());
        assert_eq!(replay.valid_len, buf.len() as u64);
    }

    #[test]
    fn torn_or_rotten_tail_ends_the_journal() {
        let mut buf = Vec::new();
        for r in sample() {
            r.encode(&mut buf);
        }
        let full = buf.len();
        let mut one = Vec::new();
        sample()[0].encode(&mut one);
        // Every truncation point keeps exactly the whole frames before it.
        for cut in 0..full {
            let replay = decode_all(&buf[..cut]);
            assert!(replay.valid_len as usize <= cut);
            assert!(replay.records.len() < sample().len());
        }
        // A flipped bit in the second frame stops decoding after the first,
        // and the frames behind it are found.
        let mut bad = buf.clone();
        bad[one.len() + 9] ^= 0x40;
        let replay = decode_all(&bad);
        assert_eq!(replay.records.len(), 1);
        assert_eq!(replay.valid_len as usize, one.len());
        assert!(next_valid_frame(&bad, one.len()).is_some());
        // A torn last frame has nothing valid behind it.
        assert_eq!(
            next_valid_frame(&buf[..full - 3], decode_all(&buf[..full - 3]).valid_len as usize),
            None
        );
    }

    #[test]
    fn damage_in_the_middle_is_refused_and_nothing_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        write_new(&path, &sample()).unwrap();
        let mut data = std::fs::read(&path).unwrap();
        let mid = data.len() / 2;
        data[mid] ^= 0x01;
        std::fs::write(&path, &data).unwrap();
        let e = read(&path).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Corrupt);
        let msg = e.to_string();
        assert!(msg.contains(&path.display().to_string()) && msg.contains("offset"), "{msg}");
        assert_eq!(std::fs::read(&path).unwrap(), data, "the file is left as it was");
    }

    #[test]
    fn open_cuts_torn_tail_and_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        write_new(&path, &sample()[..2]).unwrap();
        let good = std::fs::metadata(&path).unwrap().len();
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2]).unwrap(); // a torn frame
        drop(f);
        let replay = read(&path).unwrap();
        assert_eq!(replay.valid_len, good);
        let j = JournalFile::open(&path, replay.valid_len).unwrap();
        assert_eq!(j.len(), good);
        let mut more = Vec::new();
        Record::Del { key: b"a".to_vec() }.encode(&mut more);
        j.append(&more).unwrap();
        j.sync().unwrap();
        assert_eq!(read(&path).unwrap().records.len(), 3);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn refuses_a_file_that_is_not_a_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        std::fs::write(&path, b"hello world, not a journal").unwrap();
        assert_eq!(read(&path).unwrap_err().kind(), crate::ErrorKind::Corrupt);
    }
}
