//! The writer thread: group commit.
//!
//! Callers queue requests and wait on a oneshot. The writer takes all that
//! is queued, lays the records out back to back at the end of the active
//! segment, writes them with one vectored write, syncs once (under
//! `EveryPut`), applies them to the index and only then answers. While it
//! writes and syncs, new requests pile up and form the next batch, so many
//! concurrent puts share each fdatasync.
//!
//! Writes to a segment are issued one at a time, in order, so a crash can
//! only leave a prefix of the last write on disk: a torn tail, never a hole.
//! A failed write or sync is undone by truncating the segment back to where
//! the batch started; if even that fails, the store refuses further writes.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::oneshot;
use futures::executor::block_on;
use parking_lot::{Condvar, Mutex};

use super::index::Loc;
use super::record::{Header, Pos};
use super::{Inner, Seg, segment};
use crate::backend::SyncPolicy;
use crate::chunk::ChunkId;
use crate::error::{Error, ErrorKind, Result};

pub(crate) type Reply<T> = oneshot::Sender<Result<T>>;

pub(crate) enum Req {
    /// Append a blob record; apply it (last wins) once written.
    Put { id: ChunkId, blob: Bytes, reply: Option<Reply<Pos>> },
    /// Append a tombstone (the index entry is already gone).
    Tomb { id: ChunkId, target: Pos, reply: Option<Reply<()>> },
    /// Make everything answered so far durable.
    Sync { reply: Reply<()> },
    /// Start a new active segment, so the current one can be compacted.
    Seal { reply: Reply<()> },
}

/// Wait for the writer's answer.
pub(crate) async fn wait<T>(rx: oneshot::Receiver<Result<T>>, name: &str) -> Result<T> {
    rx.await.unwrap_or_else(|_| {
        Err(Error::new(ErrorKind::Unavailable, format!("{name}: writer stopped")))
    })
}

#[derive(Default)]
struct Pending {
    reqs: VecDeque<Req>,
    shutdown: bool,
}

#[derive(Default)]
pub(crate) struct Queue {
    pending: Mutex<Pending>,
    cv: Condvar,
}

impl Queue {
    pub fn push(&self, req: Req) -> Result<(), ()> {
        let mut p = self.pending.lock();
        if p.shutdown {
            return Err(());
        }
        p.reqs.push_back(req);
        self.cv.notify_one();
        Ok(())
    }

    pub fn shutdown(&self) {
        self.pending.lock().shutdown = true;
        self.cv.notify_one();
    }

    /// Everything queued (waiting up to `timeout` for something), and
    /// whether the store is closing.
    fn take(&self, timeout: Option<Duration>) -> (Vec<Req>, bool) {
        let mut p = self.pending.lock();
        if p.reqs.is_empty() && !p.shutdown {
            match timeout {
                Some(t) => {
                    self.cv.wait_for(&mut p, t);
                }
                None => self.cv.wait(&mut p),
            }
        }
        (p.reqs.drain(..).collect(), p.shutdown)
    }
}

/// Records of one segment written with one vectored write.
struct Run {
    start: u64,
    len: u64,
    parts: Vec<Bytes>,
    /// Headers and small payloads, coalesced so a batch of small records
    /// needs few iovecs.
    small: Vec<u8>,
    items: Vec<Item>,
}

enum Item {
    Put { id: ChunkId, off: u64, len: u32, reply: Option<Reply<Pos>> },
    Tomb { reply: Option<Reply<()>> },
}

/// Payloads at least this big are written from their own buffer.
const SMALL: usize = 16 << 10;

impl Run {
    fn new(start: u64) -> Run {
        Run { start, len: 0, parts: Vec::new(), small: Vec::new(), items: Vec::new() }
    }

    fn end(&self) -> u64 {
        self.start + self.len
    }

    fn add(&mut self, header: &Header, payload: &Bytes) {
        self.small.extend_from_slice(&header.encode());
        if payload.len() < SMALL {
            self.small.extend_from_slice(payload);
        } else {
            self.parts.push(Bytes::from(std::mem::take(&mut self.small)));
            self.parts.push(payload.clone());
        }
        self.len += header.record_len();
    }

    fn into_parts(mut self) -> (Vec<Bytes>, Vec<Item>) {
        if !self.small.is_empty() {
            self.parts.push(Bytes::from(self.small));
        }
        (self.parts, self.items)
    }
}

struct Writer {
    inner: Arc<Inner>,
    active: u32,
    file: Arc<File>,
    /// Bytes written and applied in the active segment.
    end: u64,
    /// Bytes of the active segment known durable.
    synced: u64,
    last_sync: Instant,
}

pub(crate) fn run(inner: Arc<Inner>) {
    let (active, file, end) = {
        let st = inner.state.read();
        let a = st.active();
        (a, st.segs[&a].file.clone(), st.segs[&a].size)
    };
    let mut w = Writer { inner, active, file, end, synced: end, last_sync: Instant::now() };
    loop {
        let timeout = match w.inner.cfg.sync {
            SyncPolicy::Periodic(d) if w.synced < w.end => {
                Some(d.saturating_sub(w.last_sync.elapsed()).max(Duration::from_millis(1)))
            }
            _ => None,
        };
        let (batch, shutdown) = w.inner.queue.take(timeout);
        if !batch.is_empty() {
            w.process(batch);
        }
        if let SyncPolicy::Periodic(d) = w.inner.cfg.sync {
            if w.synced < w.end && w.last_sync.elapsed() >= d {
                if let Err(e) = w.sync() {
                    w.disable(format!("periodic sync failed: {}", e.chain()));
                }
            }
        }
        if shutdown && w.inner.queue.pending.lock().reqs.is_empty() {
            if let Err(e) = w.sync() {
                tracing::error!("{}: final sync failed: {}", w.inner.name, e.chain());
            }
            return;
        }
    }
}

impl Writer {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn process(&mut self, batch: Vec<Req>) {
        if let Some(why) = self.inner.broken.lock().clone() {
            let err =
                || Error::new(ErrorKind::Io, format!("{}: store disabled: {why}", self.name()));
            for req in batch {
                fail_req(req, err());
            }
            return;
        }
        let every_put = self.inner.cfg.sync == SyncPolicy::EveryPut;
        let mut run = Run::new(self.end);
        let mut sync_waiters = Vec::new();
        for req in batch {
            let (header, payload) = match &req {
                Req::Put { id, blob, .. } => (Header::blob(id, blob), blob.clone()),
                Req::Tomb { id, target, .. } => {
                    let (h, p) = Header::tombstone(id, *target);
                    (h, Bytes::copy_from_slice(&p))
                }
                Req::Sync { .. } => {
                    if let Req::Sync { reply } = req {
                        sync_waiters.push(reply);
                    }
                    continue;
                }
                Req::Seal { .. } => {
                    self.flush(std::mem::replace(&mut run, Run::new(0)), every_put);
                    let res = if self.end > 0 { self.roll() } else { Ok(()) };
                    run = Run::new(self.end);
                    if let Req::Seal { reply } = req {
                        let _ = reply.send(res);
                    }
                    continue;
                }
            };
            if run.end() + header.record_len() > self.inner.cfg.seg_size && run.end() > 0 {
                self.flush(std::mem::replace(&mut run, Run::new(0)), every_put);
                if let Err(e) = self.roll() {
                    fail_req(req, e);
                    run = Run::new(self.end);
                    continue;
                }
                run = Run::new(self.end);
            }
            let off = run.end();
            run.add(&header, &payload);
            run.items.push(match req {
                Req::Put { id, blob, reply } => {
                    Item::Put { id, off, len: blob.len() as u32, reply }
                }
                Req::Tomb { reply, .. } => Item::Tomb { reply },
                Req::Sync { .. } | Req::Seal { .. } => unreachable!("handled above"),
            });
        }
        self.flush(run, every_put || !sync_waiters.is_empty());
        if !sync_waiters.is_empty() {
            let res = self.sync();
            if let Err(e) = &res {
                // The unsynced bytes were already acknowledged.
                self.disable(format!("sync failed: {}", e.chain()));
            }
            for r in sync_waiters {
                let _ = r.send(res.as_ref().map(|_| ()).map_err(Error::duplicate));
            }
        }
    }

    /// Write a run, sync it if asked, apply it and answer its requests.
    fn flush(&mut self, run: Run, sync: bool) {
        if run.items.is_empty() {
            return;
        }
        debug_assert_eq!(run.start, self.end);
        let start = run.start;
        let len = run.len;
        let (parts, items) = run.into_parts();
        let ctx = |what: &str| format!("{}: {what} segment {}", self.name(), self.active);
        let res = if sync && self.synced == start {
            // The common group commit: write then fdatasync as one request.
            let engine = self.inner.engine.clone();
            let r = block_on(engine.write_vectored_sync_at(self.file.clone(), start, parts))
                .map_err(|e| Error::io(ctx("write+sync"), e));
            if r.is_ok() {
                self.mark_synced(start + len);
            }
            r
        } else {
            let r = block_on(self.inner.engine.write_vectored_at(self.file.clone(), start, parts))
                .map_err(|e| Error::io(ctx("write"), e));
            if r.is_ok() && sync { self.sync_to(start + len) } else { r }
        };
        if let Err(e) = res {
            self.undo(start);
            for it in items {
                match it {
                    Item::Put { reply, .. } => send(reply, Err(e.duplicate())),
                    Item::Tomb { reply } => send(reply, Err(e.duplicate())),
                }
            }
            return;
        }
        self.end = start + len;
        let n = items.len() as u64;
        let active = self.active;
        let mut put_replies = Vec::with_capacity(items.len());
        let mut tomb_replies = Vec::new();
        {
            let mut st = self.inner.state.write();
            for it in items {
                match it {
                    Item::Put { id, off, len, reply } => {
                        let loc = Loc { pos: Pos { seg: active, off: off as u32 }, len };
                        let old = st.index.insert(id, loc, self.inner.tick());
                        st.add_live(loc, old);
                        put_replies.extend(reply.map(|r| (r, loc.pos)));
                    }
                    Item::Tomb { reply } => tomb_replies.extend(reply),
                }
            }
            let seg = st.segs.get_mut(&active).expect("active segment is in the table");
            seg.size = self.end;
            st.seg_bytes += len;
            st.applied = Pos { seg: active, off: self.end as u32 };
        }
        self.inner.counters.applied.fetch_add(n, Ordering::Relaxed);
        self.inner.counters.appended.fetch_add(len, Ordering::Relaxed);
        for (r, pos) in put_replies {
            let _ = r.send(Ok(pos));
        }
        for r in tomb_replies {
            let _ = r.send(Ok(()));
        }
    }

    fn sync_to(&mut self, upto: u64) -> Result<()> {
        if self.synced >= upto {
            return Ok(());
        }
        block_on(self.inner.engine.fdatasync(self.file.clone())).map_err(|e| {
            Error::io(format!("{}: fdatasync segment {}", self.name(), self.active), e)
        })?;
        self.mark_synced(upto);
        Ok(())
    }

    fn mark_synced(&mut self, upto: u64) {
        self.synced = upto;
        self.last_sync = Instant::now();
        self.inner.counters.syncs.fetch_add(1, Ordering::Relaxed);
    }

    fn sync(&mut self) -> Result<()> {
        self.sync_to(self.end)
    }

    /// Refuse every later write (reads go on). After a failed fdatasync
    /// Linux may have dropped the dirty pages, and a retry would "succeed"
    /// without them: acknowledged puts may be lost, and only reopening the
    /// store (which checks every record of the tail) tells what is on disk.
    fn disable(&self, why: String) {
        let why = format!("{why}; writes refused until the store is reopened");
        tracing::error!("{}: {why}", self.name());
        *self.inner.broken.lock() = Some(why);
    }

    /// Cut a failed batch off the segment. Data before `start` is untouched.
    fn undo(&mut self, start: u64) {
        if let Err(e) = self.file.set_len(start) {
            self.disable(format!(
                "could not truncate segment {} after a failed write: {e}",
                self.active
            ));
        }
        self.synced = self.synced.min(start);
    }

    /// Seal the active segment (durable first) and start the next one.
    fn roll(&mut self) -> Result<()> {
        self.sync()?;
        let next = self.active + 1;
        let file = segment::open(&self.inner.dir, next, true)
            .map_err(|e| Error::io(format!("{}: create segment {next}", self.name()), e))?;
        let file = Arc::new(file);
        block_on(self.inner.engine.fdatasync(self.inner.dir_file.clone()))
            .map_err(|e| Error::io(format!("{}: sync directory", self.name()), e))?;
        {
            let mut st = self.inner.state.write();
            st.segs.insert(next, Seg { file: file.clone(), size: 0, live: 0 });
            st.applied = Pos { seg: next, off: 0 };
        }
        self.active = next;
        self.file = file;
        self.end = 0;
        self.synced = 0;
        Ok(())
    }
}

fn send<T>(reply: Option<Reply<T>>, res: Result<T>) {
    if let Some(r) = reply {
        let _ = r.send(res);
    }
}

fn fail_req(req: Req, e: Error) {
    match req {
        Req::Put { reply, .. } => send(reply, Err(e)),
        Req::Tomb { reply, .. } => send(reply, Err(e)),
        Req::Sync { reply } | Req::Seal { reply } => {
            let _ = reply.send(Err(e));
        }
    }
}
