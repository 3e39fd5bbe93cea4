//! The io_uring engine: one ring driven by one thread.
//!
//! Callers enqueue operations on a channel and kick an eventfd; the ring
//! thread keeps a POLL_ADD armed on that eventfd, so a single
//! `submit_and_wait` sleeps until either a disk completion or new work
//! arrives. Buffers are owned by the in-flight table until their completion
//! is reaped, which is what keeps the kernel's pointers valid.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::mpsc;

use bytes::Bytes;
use futures::channel::oneshot;
use io_uring::{IoUring, opcode, squeue, types};

use super::{IoEngine, IoFuture};

const RING_ENTRIES: u32 = 256;
/// Reads at least this big are flagged IOSQE_ASYNC.
const ASYNC_READ_MIN: usize = 512 << 10;
/// user_data of the eventfd poll; op slots use their index.
const WAKE_TOKEN: u64 = u64::MAX;
/// user_data of the cancel requests a dying driver sends.
const CANCEL_TOKEN: u64 = u64::MAX - 1;
/// How long a dying driver waits for the kernel to let go of its buffers.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

enum Kind {
    Read {
        buf: Vec<u8>,
        done: usize,
        reply: oneshot::Sender<io::Result<Vec<u8>>>,
    },
    Write {
        data: Bytes,
        done: usize,
        reply: oneshot::Sender<io::Result<()>>,
    },
    Sync {
        reply: oneshot::Sender<io::Result<()>>,
    },
    Punch {
        len: u64,
        reply: oneshot::Sender<io::Result<()>>,
    },
    /// A vectored write; with `then_sync`, an fdatasync is issued from the
    /// ring thread once the write is complete, before answering.
    Writev {
        parts: Vec<Bytes>,
        iov: IoVecs,
        done: usize,
        then_sync: bool,
        syncing: bool,
        reply: oneshot::Sender<io::Result<()>>,
    },
}

/// The iovec array of an in-flight vectored write.
struct IoVecs(Vec<libc::iovec>);

// SAFETY: the iovecs point into the `Bytes` parts owned by the same `Kind`;
// they are built and used only on the driver thread, while the op is alive.
unsafe impl Send for IoVecs {}

impl IoVecs {
    /// iovecs for what is left of `parts` after `done` bytes (at most IOV_MAX).
    fn rebuild(&mut self, parts: &[Bytes], mut done: usize) {
        self.0.clear();
        for p in parts {
            if done >= p.len() {
                done -= p.len();
                continue;
            }
            let rest = &p[done..];
            done = 0;
            self.0.push(libc::iovec {
                iov_base: rest.as_ptr() as *mut libc::c_void,
                iov_len: rest.len(),
            });
            if self.0.len() == super::IOV_MAX {
                break;
            }
        }
    }
}

struct Op {
    file: Arc<File>,
    off: u64,
    kind: Kind,
}

pub struct UringEngine {
    tx: mpsc::Sender<Op>,
    wake: Arc<OwnedFd>,
}

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes plain integer arguments and returns a new fd or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl UringEngine {
    /// Set up the ring and its thread; fails when io_uring is not allowed
    /// (old kernel, seccomp, io_uring_disabled sysctl).
    pub fn new() -> io::Result<Self> {
        let mut ring = IoUring::new(RING_ENTRIES)?;
        // Probe: the opcodes we need must be supported, and a NOP must run.
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        for code in [
            opcode::Read::CODE,
            opcode::Write::CODE,
            opcode::Fsync::CODE,
            opcode::Fallocate::CODE,
            opcode::PollAdd::CODE,
            opcode::Writev::CODE,
        ] {
            if !probe.is_supported(code) {
                return Err(io::Error::other(format!("io_uring opcode {code} unsupported")));
            }
        }
        // SAFETY: a NOP references no memory.
        unsafe { ring.submission().push(&opcode::Nop::new().build().user_data(0)) }
            .map_err(|_| io::Error::other("io_uring: empty SQ is full"))?;
        ring.submit_and_wait(1)?;
        let cqe = ring.completion().next().ok_or_else(|| io::Error::other("no NOP completion"))?;
        if cqe.result() < 0 {
            return Err(io::Error::from_raw_os_error(-cqe.result()));
        }

        let wake = Arc::new(eventfd()?);
        let (tx, rx) = mpsc::channel();
        let wake_fd = wake.clone();
        std::thread::Builder::new()
            .name("zosfs-uring".into())
            .spawn(move || Driver::new(ring, rx, wake_fd).run())?;
        Ok(UringEngine { tx, wake })
    }

    fn submit(&self, op: Op) {
        // The driver only exits when every sender is gone, so send cannot fail
        // while `self` lives; if it ever did, the reply sender is dropped and
        // the caller sees a "canceled" error rather than a hang.
        let _ = self.tx.send(op);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

impl UringEngine {
    fn writev(
        &self,
        file: Arc<File>,
        off: u64,
        parts: Vec<Bytes>,
        then_sync: bool,
    ) -> IoFuture<()> {
        let (reply, rx) = oneshot::channel();
        let iov = IoVecs(Vec::new());
        let kind = Kind::Writev { parts, iov, done: 0, then_sync, syncing: false, reply };
        self.submit(Op { file, off, kind });
        Box::pin(async move { canceled(rx.await) })
    }
}

fn canceled<T>(r: Result<io::Result<T>, oneshot::Canceled>) -> io::Result<T> {
    r.unwrap_or_else(|_| Err(io::Error::other("io_uring driver stopped")))
}

impl IoEngine for UringEngine {
    fn name(&self) -> &'static str {
        "io_uring"
    }

    fn read_at(&self, file: Arc<File>, off: u64, len: usize) -> IoFuture<Vec<u8>> {
        let (reply, rx) = oneshot::channel();
        self.submit(Op { file, off, kind: Kind::Read { buf: vec![0u8; len], done: 0, reply } });
        Box::pin(async move { canceled(rx.await) })
    }

    fn write_at(&self, file: Arc<File>, off: u64, data: Bytes) -> IoFuture<()> {
        let (reply, rx) = oneshot::channel();
        self.submit(Op { file, off, kind: Kind::Write { data, done: 0, reply } });
        Box::pin(async move { canceled(rx.await) })
    }

    fn fdatasync(&self, file: Arc<File>) -> IoFuture<()> {
        let (reply, rx) = oneshot::channel();
        self.submit(Op { file, off: 0, kind: Kind::Sync { reply } });
        Box::pin(async move { canceled(rx.await) })
    }

    fn punch_hole(&self, file: Arc<File>, off: u64, len: u64) -> IoFuture<()> {
        let (reply, rx) = oneshot::channel();
        self.submit(Op { file, off, kind: Kind::Punch { len, reply } });
        Box::pin(async move { canceled(rx.await) })
    }

    fn write_vectored_at(&self, file: Arc<File>, off: u64, parts: Vec<Bytes>) -> IoFuture<()> {
        self.writev(file, off, parts, false)
    }

    fn write_vectored_sync_at(
        self: Arc<Self>,
        file: Arc<File>,
        off: u64,
        parts: Vec<Bytes>,
    ) -> IoFuture<()> {
        self.writev(file, off, parts, true)
    }
}

struct Driver {
    ring: IoUring,
    rx: mpsc::Receiver<Op>,
    wake: Arc<OwnedFd>,
    wake_buf: Box<u64>,
    /// In-flight ops by slot; a slot is `Some` from push to completion.
    slots: Vec<Option<Op>>,
    free: Vec<usize>,
    /// Ops waiting for SQ space.
    backlog: VecDeque<Op>,
    senders_gone: bool,
}

/// Runs on a normal exit (nothing in flight) and when a panic unwinds the
/// ring thread. Invariant kept: no op buffer is freed while the kernel may
/// still read or write it. In-flight ops are cancelled and their
/// completions awaited; buffers of ops that never complete are leaked, not
/// freed. Callers of dropped ops get "io_uring driver stopped" errors.
impl Drop for Driver {
    fn drop(&mut self) {
        if self.in_flight() == 0 {
            return;
        }
        let left = self.cancel_in_flight();
        if left > 0 {
            tracing::error!(
                "io_uring: {left} ops still in flight at driver exit; leaking their buffers"
            );
            std::mem::forget(std::mem::take(&mut self.slots));
        }
    }
}

impl Driver {
    fn new(ring: IoUring, rx: mpsc::Receiver<Op>, wake: Arc<OwnedFd>) -> Self {
        Driver {
            ring,
            rx,
            wake,
            wake_buf: Box::new(0),
            slots: Vec::new(),
            free: Vec::new(),
            backlog: VecDeque::new(),
            senders_gone: false,
        }
    }

    fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn run(mut self) {
        self.arm_wake();
        loop {
            self.drain_channel();
            self.fill_sq();
            if self.senders_gone && self.in_flight() == 0 && self.backlog.is_empty() {
                return;
            }
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => {
                    tracing::error!("io_uring submit failed: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            self.reap();
        }
    }

    fn arm_wake(&mut self) {
        // read() of the eventfd happens synchronously after the poll fires;
        // the poll references only the eventfd, which `self.wake` keeps open.
        let sqe = opcode::PollAdd::new(types::Fd(self.wake.as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(WAKE_TOKEN);
        self.push_raw(&sqe);
    }

    fn drain_channel(&mut self) {
        loop {
            match self.rx.try_recv() {
                Ok(op) => self.backlog.push_back(op),
                Err(mpsc::TryRecvError::Empty) => return,
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.senders_gone = true;
                    return;
                }
            }
        }
    }

    fn fill_sq(&mut self) {
        // Keep one SQ slot for re-arming the wake poll.
        while !self.backlog.is_empty() {
            let sq = self.ring.submission();
            if sq.len() + 1 >= sq.capacity() {
                break;
            }
            drop(sq);
            let op = self.backlog.pop_front().expect("not empty");
            let slot = match self.free.pop() {
                Some(s) => s,
                None => {
                    self.slots.push(None);
                    self.slots.len() - 1
                }
            };
            self.slots[slot] = Some(op);
            self.push_slot(slot);
        }
    }

    /// Build and push the SQE for the (remaining part of the) op in `slot`.
    fn push_slot(&mut self, slot: usize) {
        let op = self.slots[slot].as_mut().expect("slot in use");
        let fd = types::Fd(op.file.as_raw_fd() as RawFd);
        let sqe: squeue::Entry = match &mut op.kind {
            Kind::Read { buf, done, .. } => {
                let rest = &mut buf[*done..];
                let sqe = opcode::Read::new(fd, rest.as_mut_ptr(), rest.len() as u32)
                    .offset(op.off + *done as u64)
                    .build();
                // Large reads go straight to io-wq workers: done inline they
                // would copy every byte on this one ring thread.
                if rest.len() >= ASYNC_READ_MIN { sqe.flags(squeue::Flags::ASYNC) } else { sqe }
            }
            Kind::Write { data, done, .. } => {
                let rest = &data[*done..];
                opcode::Write::new(fd, rest.as_ptr(), rest.len() as u32)
                    .offset(op.off + *done as u64)
                    .build()
            }
            Kind::Sync { .. } => opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build(),
            Kind::Punch { len, .. } => opcode::Fallocate::new(fd, *len)
                .offset(op.off)
                .mode(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
                .build(),
            Kind::Writev { syncing: true, .. } => {
                opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build()
            }
            Kind::Writev { parts, iov, done, .. } => {
                iov.rebuild(parts, *done);
                opcode::Writev::new(fd, iov.0.as_ptr(), iov.0.len() as u32)
                    .offset(op.off + *done as u64)
                    .build()
            }
        }
        .user_data(slot as u64);
        // SAFETY: the buffers the SQE points into are owned by `self.slots[slot]`
        // and are neither moved nor freed until its completion is reaped.
        while unsafe { self.ring.submission().push(&sqe) }.is_err() {
            let _ = self.ring.submit();
        }
    }

    /// Push an SQE that points at no op buffer (cancel, wake poll).
    fn push_raw(&mut self, sqe: &squeue::Entry) {
        // SAFETY: the entries pushed here reference no memory of ours.
        while unsafe { self.ring.submission().push(sqe) }.is_err() {
            if self.ring.submit().is_err() {
                return;
            }
        }
    }

    /// Cancel every in-flight op and wait (bounded) for the kernel to
    /// complete them; returns how many are still in flight.
    fn cancel_in_flight(&mut self) -> usize {
        for slot in 0..self.slots.len() {
            if self.slots[slot].is_some() {
                let sqe = opcode::AsyncCancel::new(slot as u64).build().user_data(CANCEL_TOKEN);
                self.push_raw(&sqe);
            }
        }
        let deadline = std::time::Instant::now() + DRAIN_TIMEOUT;
        while self.in_flight() > 0 && std::time::Instant::now() < deadline {
            let ts = types::Timespec::new().nsec(100_000_000);
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            let done: Vec<u64> = self.ring.completion().map(|c| c.user_data()).collect();
            for token in done {
                let slot = token as usize;
                // Dropping the op drops its reply sender: the caller gets
                // "io_uring driver stopped".
                if slot < self.slots.len() && self.slots[slot].take().is_some() {
                    self.free.push(slot);
                }
            }
        }
        self.in_flight()
    }

    fn reap(&mut self) {
        let cqes: Vec<(u64, i32)> =
            self.ring.completion().map(|c| (c.user_data(), c.result())).collect();
        for (token, res) in cqes {
            if token == WAKE_TOKEN {
                // SAFETY: reads 8 bytes into a live boxed u64 from our eventfd.
                unsafe {
                    libc::read(self.wake.as_raw_fd(), (&mut *self.wake_buf as *mut u64).cast(), 8)
                };
                self.arm_wake();
                continue;
            }
            self.complete(token as usize, res);
        }
    }

    fn complete(&mut self, slot: usize, res: i32) {
        if res == -libc::EINTR || res == -libc::EAGAIN {
            self.push_slot(slot);
            return;
        }
        let op = self.slots[slot].as_mut().expect("completion for a live slot");
        let err = (res < 0).then(|| io::Error::from_raw_os_error(-res));
        let finished = match &mut op.kind {
            Kind::Read { buf, done, .. } => {
                if err.is_none() && res > 0 {
                    *done += res as usize;
                }
                err.is_some() || res == 0 || *done == buf.len()
            }
            Kind::Write { data, done, .. } => {
                if err.is_none() {
                    *done += res as usize;
                }
                err.is_some() || *done == data.len() || res == 0
            }
            Kind::Writev { syncing: true, .. } => true,
            Kind::Writev { parts, done, then_sync, syncing, .. } => {
                if err.is_none() {
                    *done += res as usize;
                }
                let total: usize = parts.iter().map(|p| p.len()).sum();
                let written = err.is_none() && *done >= total;
                if written && *then_sync {
                    // Not finished: the slot goes back in as the fdatasync,
                    // without a trip to the caller.
                    *syncing = true;
                    false
                } else {
                    err.is_some() || *done >= total || res == 0
                }
            }
            Kind::Sync { .. } | Kind::Punch { .. } => true,
        };
        if !finished {
            self.push_slot(slot);
            return;
        }
        let Op { file, kind, .. } = self.slots[slot].take().expect("live slot");
        self.free.push(slot);
        // Release our reference to the file before waking the caller, so a
        // caller that closes and reopens it (flock) never finds it still open.
        drop(file);
        match kind {
            Kind::Read { mut buf, done, reply } => {
                let _ = reply.send(match err {
                    Some(e) => Err(e),
                    None => {
                        buf.truncate(done);
                        Ok(buf)
                    }
                });
            }
            Kind::Write { data, done, reply } => {
                let _ = reply.send(match err {
                    Some(e) => Err(e),
                    None if done < data.len() => Err(io::ErrorKind::WriteZero.into()),
                    None => Ok(()),
                });
            }
            Kind::Writev { parts, done, reply, .. } => {
                let total: usize = parts.iter().map(|p| p.len()).sum();
                let _ = reply.send(match err {
                    Some(e) => Err(e),
                    None if done < total => Err(io::ErrorKind::WriteZero.into()),
                    None => Ok(()),
                });
            }
            Kind::Sync { reply } | Kind::Punch { reply, .. } => {
                let _ = reply.send(err.map_or(Ok(()), Err));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::panic::AssertUnwindSafe;

    use super::*;

    /// A panic unwinding the ring thread while a read is in flight: the
    /// kernel op is cancelled before its buffer is freed (bytes written to
    /// the pipe afterwards are still there to read, nobody consumed them into
    /// freed memory) and the caller gets an error instead of a hang.
    #[test]
    fn a_panic_with_a_read_in_flight_cancels_it_before_freeing_its_buffer() {
        let ring = IoUring::new(8).expect("io_uring");
        let (_keep_sender, rx) = mpsc::channel();
        let mut d = Driver::new(ring, rx, Arc::new(eventfd().expect("eventfd")));
        let (pipe_r, mut pipe_w) = std::io::pipe().expect("pipe");
        let mut reader = File::from(OwnedFd::from(pipe_r));
        let (reply, answer) = oneshot::channel();
        let file = Arc::new(reader.try_clone().expect("dup"));
        d.backlog.push_back(Op {
            file,
            off: 0,
            kind: Kind::Read { buf: vec![0; 64], done: 0, reply },
        });
        d.fill_sq();
        d.ring.submit().expect("submit");
        assert_eq!(d.in_flight(), 1);
        assert!(d.ring.completion().is_empty(), "the read is pending in the kernel");

        let unwound = std::panic::catch_unwind(AssertUnwindSafe(move || {
            let _driver = d;
            panic!("injected panic on the ring thread");
        }));
        assert!(unwound.is_err());
        assert!(futures::executor::block_on(answer).is_err(), "the caller sees the driver stop");
        pipe_w.write_all(b"still here").expect("write");
        let mut got = [0u8; 10];
        reader.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"still here");
    }
}
