//! A client's side of the socket: a small pool of blocking connections to
//! the owner, each carrying one request at a time.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::frame;
use super::locate::OwnerRecord;
use super::proto::{HELLO_LEN, Hello, MAX_REPLY, Op, Reply, VERSION, decode_reply};
use crate::chunk::ChunkId;
use crate::error::{Error, ErrorKind, Result};
use crate::local::{Located, RECORD_HEADER, check_record};

/// Idle connections kept for reuse.
const MAX_IDLE: usize = 16;
/// Fast reads between two looks for segment fds to let go of.
const PRUNE_EVERY: u64 = 1024;
/// How long the owner may take to answer the hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call did not get an answer from the owner.
#[derive(Debug)]
pub(crate) enum Fail {
    /// The owner is gone or going (connection refused, reset, cut): find
    /// the next owner and send the request again.
    Gone(std::io::Error),
    /// The owner cannot be used by this build (another protocol version, a
    /// peer of another user, malformed answers): retrying will not help.
    Refused(Error),
}

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Self {
        Fail::Gone(e)
    }
}

pub(crate) struct Client {
    name: String,
    pub(crate) owner: OwnerRecord,
    idle: Mutex<Vec<UnixStream>>,
    /// Read-only fds of the owner's segments (from LOCATE answers): reads
    /// go straight to the page cache, not through the socket.
    segs: Mutex<HashMap<u32, Arc<File>>>,
    fast_reads: AtomicU64,
    /// Requests on the wire at once. More than a few per CPU only makes
    /// the owner's and our threads take turns (measured: 32 in flight read
    /// at half the speed of 4 on two cores).
    inflight: Gate,
}

/// A counting gate: at most `max` holders at once.
struct Gate {
    busy: Mutex<usize>,
    freed: parking_lot::Condvar,
    max: usize,
}

impl Gate {
    fn new() -> Gate {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Gate { busy: Mutex::new(0), freed: parking_lot::Condvar::new(), max: (2 * cpus).max(4) }
    }

    fn enter(&self) -> GatePass<'_> {
        let mut busy = self.busy.lock();
        while *busy >= self.max {
            self.freed.wait(&mut busy);
        }
        *busy += 1;
        GatePass(self)
    }
}

struct GatePass<'a>(&'a Gate);

impl Drop for GatePass<'_> {
    fn drop(&mut self) {
        *self.0.busy.lock() -= 1;
        self.0.freed.notify_one();
    }
}

impl Client {
    /// Connect to the owner `rec` names (one connection, kept idle).
    pub(crate) fn connect(name: &str, rec: OwnerRecord) -> std::result::Result<Client, Fail> {
        let c = Client {
            name: name.to_string(),
            owner: rec,
            idle: Mutex::new(Vec::new()),
            segs: Mutex::new(HashMap::new()),
            fast_reads: AtomicU64::new(0),
            inflight: Gate::new(),
        };
        let s = c.dial()?;
        c.idle.lock().push(s);
        Ok(c)
    }

    fn dial(&self) -> std::result::Result<UnixStream, Fail> {
        let mut s = UnixStream::connect(&self.owner.socket)?;
        let uid = frame::peer_uid(&s)?;
        if !frame::trusted_uid(uid) {
            return Err(Fail::Refused(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "{}: the socket {} is served by uid {uid}, not by us or root",
                    self.name,
                    self.owner.socket.display()
                ),
            )));
        }
        s.set_read_timeout(Some(HELLO_TIMEOUT))?;
        s.write_all(&Hello::ours().encode())?;
        let mut b = [0u8; HELLO_LEN];
        s.read_exact(&mut b)?;
        let theirs = Hello::decode(&b).map_err(|why| self.refused(ErrorKind::Protocol, &why))?;
        if theirs.version != VERSION {
            return Err(self.refused(
                ErrorKind::Protocol,
                &format!(
                    "the store's owner (pid {}) speaks node store protocol {}, this zosfs speaks {VERSION}: \
                     run the same zosfs version on the node (restart the owner to upgrade)",
                    theirs.pid, theirs.version
                ),
            ));
        }
        s.set_read_timeout(None)?;
        Ok(s)
    }

    fn refused(&self, kind: ErrorKind, why: &str) -> Fail {
        Fail::Refused(Error::new(kind, format!("{}: {why}", self.name)))
    }

    fn conn(&self) -> std::result::Result<UnixStream, Fail> {
        let pooled = self.idle.lock().pop();
        match pooled {
            Some(s) => Ok(s),
            None => self.dial(),
        }
    }

    fn put_back(&self, s: UnixStream) {
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE {
            idle.push(s);
        }
    }

    /// One request and its answer on a pooled connection; `with_fd` reads
    /// the answer with an fd that may come along (LOCATE).
    fn exchange(
        &self,
        op: &Op,
        with_fd: bool,
    ) -> std::result::Result<(Result<Reply>, Option<std::os::fd::OwnedFd>), Fail> {
        let mut s = self.conn()?;
        let (head, tail) = op.encode();
        frame::write(&mut s, &head, tail.as_ref())?;
        let (body, fd) = match with_fd {
            true => frame::read_with_fd(&mut s, MAX_REPLY)?,
            false => (frame::read(&mut s, MAX_REPLY)?, None),
        };
        let answer =
            decode_reply(op, body).map_err(|why| self.refused(ErrorKind::Protocol, &why))?;
        self.put_back(s);
        Ok((answer, fd))
    }

    /// Send `op` and wait for the answer (blocking). A GET reads the record
    /// from the segment itself ([`Client::get`]).
    pub(crate) fn call(&self, op: &Op) -> std::result::Result<Result<Reply>, Fail> {
        let _pass = self.inflight.enter();
        if let Op::Get(id) = op {
            return self.get(id);
        }
        Ok(self.exchange(op, false)?.0)
    }

    /// GET by LOCATE: the owner says where the record is (and hands over
    /// the segment's fd once per connection), this process reads and checks
    /// it. Anything unexpected (no fd, a record that does not check out)
    /// falls back to a plain GET carried by the socket.
    fn get(&self, id: &ChunkId) -> std::result::Result<Result<Reply>, Fail> {
        let (answer, fd) = self.exchange(&Op::Locate(*id), true)?;
        let at = match answer {
            Err(e) => return Ok(Err(e)),
            Ok(Reply::Located(None)) => return Ok(Ok(Reply::Blob(None))),
            Ok(Reply::Located(Some((at, _)))) => at,
            Ok(other) => {
                let why = format!("LOCATE answered {other:?}");
                return Err(self.refused(ErrorKind::Protocol, &why));
            }
        };
        if let Some(fd) = fd {
            self.keep_segment(at.seg, File::from(fd));
        }
        match self.read_located(id, at) {
            Some(blob) => Ok(Ok(Reply::Blob(Some(blob)))),
            None => Ok(self.exchange(&Op::Get(*id), false)?.0),
        }
    }

    fn read_located(&self, id: &ChunkId, at: Located) -> Option<bytes::Bytes> {
        let file = self.segs.lock().get(&at.seg).cloned()?;
        let buf = pread_exact(&file, RECORD_HEADER + at.len as usize, u64::from(at.off))?;
        if self.fast_reads.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.prune_segments();
        }
        match check_record(&self.name, id, at, buf) {
            Ok(blob) => Some(blob),
            Err(e) => {
                tracing::warn!("{e}; asking the owner for the blob instead");
                None
            }
        }
    }

    fn keep_segment(&self, seg: u32, f: File) {
        self.prune_segments();
        self.segs.lock().entry(seg).or_insert_with(|| Arc::new(f));
    }

    /// Let go of segments compaction deleted: an open fd would keep their
    /// disk space allocated.
    fn prune_segments(&self) {
        self.segs.lock().retain(|_, f| f.metadata().is_ok_and(|m| m.nlink() > 0));
    }

    pub(crate) fn socket(&self) -> PathBuf {
        self.owner.socket.clone()
    }
}

/// `len` bytes at `off`, read into fresh memory that is not zeroed first
/// (a 1 MiB memset costs as much as the page-cache copy); `None` on any
/// error or a short file.
fn pread_exact(file: &File, len: usize, off: u64) -> Option<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    let mut done = 0usize;
    while done < len {
        // SAFETY: the kernel writes at most `len - done` bytes into the
        // spare capacity starting at `done`, which we own.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                buf.as_mut_ptr().add(done).cast(),
                len - done,
                (off + done as u64) as libc::off_t,
            )
        };
        match n {
            n if n > 0 => done += n as usize,
            0 => return None,
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => return None,
        }
    }
    // SAFETY: the loop above initialised all `len` bytes.
    unsafe { buf.set_len(len) };
    Some(buf)
}
