//! The fallback engine: pread/pwrite on tokio's blocking pool (or inline
//! when there is no runtime, e.g. on a FUSE worker thread).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::sync::Arc;

use bytes::Bytes;

use super::{IoEngine, IoFuture};

pub struct SyncEngine;

fn run<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> IoFuture<T> {
    Box::pin(async move {
        match tokio::runtime::Handle::try_current() {
            Ok(h) => h.spawn_blocking(f).await.map_err(io::Error::other)?,
            Err(_) => f(),
        }
    })
}

pub(crate) fn pread_full(file: &File, off: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        match file.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(buf)
}

pub(crate) fn punch(file: &File, off: u64, len: u64) -> io::Result<()> {
    // SAFETY: fallocate on a valid open fd with plain integer arguments.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off as libc::off_t,
            len as libc::off_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// pwritev all of `parts` at `off`, resuming after short writes.
pub(crate) fn pwritev_all(file: &File, mut off: u64, parts: &[Bytes]) -> io::Result<()> {
    let mut idx = 0; // first part not fully written
    let mut skip = 0; // bytes of parts[idx] already written
    while idx < parts.len() {
        let iov: Vec<libc::iovec> = parts[idx..]
            .iter()
            .take(super::IOV_MAX)
            .enumerate()
            .map(|(i, p)| {
                let s = if i == 0 { &p[skip..] } else { &p[..] };
                libc::iovec { iov_base: s.as_ptr() as *mut libc::c_void, iov_len: s.len() }
            })
            .collect();
        // SAFETY: every iovec points into a `Bytes` in `parts`, which outlives
        // this call; the fd is open for the duration (borrowed `file`).
        let n = unsafe {
            libc::pwritev(file.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int, off as i64)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 && iov.iter().any(|v| v.iov_len > 0) {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let mut n = n as usize;
        off += n as u64;
        while idx < parts.len() && n >= parts[idx].len() - skip {
            n -= parts[idx].len() - skip;
            idx += 1;
            skip = 0;
        }
        skip += n;
    }
    Ok(())
}

impl IoEngine for SyncEngine {
    fn name(&self) -> &'static str {
        "pread/pwrite"
    }

    fn read_at(&self, file: Arc<File>, off: u64, len: usize) -> IoFuture<Vec<u8>> {
        run(move || pread_full(&file, off, len))
    }

    fn write_at(&self, file: Arc<File>, off: u64, data: Bytes) -> IoFuture<()> {
        run(move || file.write_all_at(&data, off))
    }

    fn fdatasync(&self, file: Arc<File>) -> IoFuture<()> {
        run(move || file.sync_data())
    }

    fn punch_hole(&self, file: Arc<File>, off: u64, len: u64) -> IoFuture<()> {
        run(move || punch(&file, off, len))
    }

    fn write_vectored_at(&self, file: Arc<File>, off: u64, parts: Vec<Bytes>) -> IoFuture<()> {
        run(move || pwritev_all(&file, off, &parts))
    }

    fn write_vectored_sync_at(
        self: Arc<Self>,
        file: Arc<File>,
        off: u64,
        parts: Vec<Bytes>,
    ) -> IoFuture<()> {
        run(move || {
            pwritev_all(&file, off, &parts)?;
            file.sync_data()
        })
    }
}
