//! The read path: local chunks from the data file (contiguous ones in one
//! read), absent chunks from their fill, zeros synthesised; all pieces of
//! one read concurrently.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::jobs::Ready;
use super::{ChunkState, Inner};
use crate::error::{Error, ErrorKind, Result};

enum Piece {
    /// Bytes of local chunks, read from the data file.
    File(Range<u64>),
    /// Part of one chunk that is not local (or reads as zeros).
    Chunk(u64, Range<u64>),
}

enum Data {
    Zeros,
    Owned(Vec<u8>),
    Shared(Bytes),
}

/// The read's range clipped to the file, or None when nothing is left.
fn clip(inner: &Inner, off: u64, len: usize) -> Option<Range<u64>> {
    let size = inner.layout.size();
    (off < size && len > 0).then(|| off..off.saturating_add(len as u64).min(size))
}

/// Start the read-ahead a read of `r` calls for.
fn read_ahead_for(inner: &Arc<Inner>, r: &Range<u64>) {
    if inner.opts.readahead > 0 {
        let window = readahead_window(inner, r.start, r.end);
        if window > 0 {
            inner.readahead(inner.layout.index_of(r.end - 1), window);
        }
    }
}

/// Whether every chunk of `r` is in the data file (present or dirty).
fn all_local(inner: &Inner, r: &Range<u64>) -> bool {
    inner
        .layout
        .chunks_in(r.start, r.end - r.start)
        .all(|i| matches!(inner.states.get(i), ChunkState::Present | ChunkState::Dirty))
}

/// The read served at once, without waiting, when every chunk of it is
/// local and the page cache holds all its bytes; None otherwise (and
/// then nothing happened: the caller goes through [`read`]).
pub(crate) fn read_now(inner: &Arc<Inner>, off: u64, len: usize) -> Option<Vec<u8>> {
    let r = clip(inner, off, len).filter(|r| all_local(inner, r))?;
    let len = (r.end - r.start) as usize;
    let data = read_cached(inner, r.start, len).filter(|d| d.len() == len)?;
    read_ahead_for(inner, &r);
    count_local_hits(inner, &r);
    Some(data)
}

/// A byte range of a LazyFile's data file, to be sent from the page
/// cache without a copy through user space (`sendfile(2)`).
///
/// The bytes are those in the file when they are sent, not when the range
/// was handed out: a write or trim of the range in between shows. Only for
/// callers to whom such a write is concurrent with the read anyway (NBD:
/// the read's reply has not been sent yet).
#[derive(Clone, Debug)]
pub struct FileRange {
    pub file: Arc<std::fs::File>,
    pub offset: u64,
    pub len: usize,
}

/// The range `[off, off+len)` as a [`FileRange`] if every chunk of it is
/// local and the page cache holds every page of it (so sending it does not
/// wait for the disk); None otherwise (and then nothing happened).
pub(crate) fn file_range_now(inner: &Arc<Inner>, off: u64, len: usize) -> Option<FileRange> {
    let r = clip(inner, off, len).filter(|r| r.end - r.start == len as u64)?;
    if !all_local(inner, &r) || !page_cached(&inner.data, r.start, len as u64) {
        return None;
    }
    read_ahead_for(inner, &r);
    count_local_hits(inner, &r);
    Some(FileRange { file: inner.data.clone(), offset: r.start, len })
}

/// Whether the page cache holds every page of `[off, off+len)` of `file`,
/// by `cachestat(2)` (Linux 6.5+; false without it).
fn page_cached(file: &std::fs::File, off: u64, len: u64) -> bool {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::AtomicBool;
    /// cachestat's number in every Linux syscall table.
    const SYS_CACHESTAT: libc::c_long = 451;
    static MISSING: AtomicBool = AtomicBool::new(false);
    #[repr(C)]
    struct CachestatRange {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    if len == 0 || MISSING.load(Ordering::Relaxed) {
        return false;
    }
    let range = CachestatRange { off, len };
    let mut stat = Stat::default();
    // SAFETY: both structs match the kernel's layouts and outlive the call.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const CachestatRange,
            &mut stat as *mut Stat,
            0u32,
        )
    };
    if rc != 0 {
        if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
            MISSING.store(true, Ordering::Relaxed);
        }
        return false;
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(512) as u64;
    let pages = (off + len).div_ceil(page) - off / page;
    stat.nr_cache >= pages
}

pub(crate) async fn read(inner: &Arc<Inner>, off: u64, len: usize) -> Result<Vec<u8>> {
    let Some(Range { start: off, end }) = clip(inner, off, len) else {
        return Ok(Vec::new());
    };
    let chunks = inner.layout.chunks_in(off, end - off);
    read_ahead_for(inner, &(off..end));

    let mut pieces: Vec<Piece> = Vec::new();
    for i in chunks {
        let span = inner.layout.span(i);
        let part = span.start.max(off)..span.end.min(end);
        let local = matches!(inner.states.get(i), ChunkState::Present | ChunkState::Dirty);
        match pieces.last_mut() {
            Some(Piece::File(r)) if local && r.end == part.start => r.end = part.end,
            _ if local => pieces.push(Piece::File(part)),
            _ => pieces.push(Piece::Chunk(i, part)),
        }
    }
    if let [Piece::File(r)] = pieces.as_slice() {
        count_local_hits(inner, r);
        return read_file(inner, r.clone()).await;
    }

    let results = futures::future::join_all(pieces.into_iter().map(|p| async move {
        match p {
            Piece::File(r) => {
                count_local_hits(inner, &r);
                Ok((r.start, Data::Owned(read_file(inner, r).await?)))
            }
            Piece::Chunk(i, r) => Ok((r.start, read_chunk(inner, i, r).await?)),
        }
    }))
    .await;
    let mut out = vec![0u8; (end - off) as usize];
    for res in results {
        let (start, data) = res?;
        let at = (start - off) as usize;
        match data {
            Data::Zeros => {}
            Data::Owned(v) => out[at..at + v.len()].copy_from_slice(&v),
            Data::Shared(b) => out[at..at + b.len()].copy_from_slice(&b),
        }
    }
    Ok(out)
}

/// Reads up to this size are first tried straight from the page cache.
const INLINE_READ_MAX: usize = 2 << 20;

/// The bytes at `off` that the page cache holds, from the start of the
/// range on (all, some, or none of them), read inline with
/// `preadv2(RWF_NOWAIT)`: it never waits for the disk, so it cannot stall
/// the async worker, and a warm read skips the hop to the I/O engine's
/// thread. None when not tried (too long, or the kernel lacks RWF_NOWAIT
/// for this file).
fn read_cached(inner: &Inner, off: u64, len: usize) -> Option<Vec<u8>> {
    use std::os::fd::AsRawFd;
    if len > INLINE_READ_MAX || !inner.nowait_reads.load(Ordering::Relaxed) {
        return None;
    }
    // Not zeroed first: the kernel fills it and only what it wrote is kept.
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    let iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: len };
    // SAFETY: iov describes `buf`'s allocation, writable for `len` bytes
    // for the duration of the call; the fd is owned by inner.data, open.
    let n = unsafe {
        libc::preadv2(inner.data.as_raw_fd(), &iov, 1, off as libc::off_t, libc::RWF_NOWAIT)
    };
    if n < 0 {
        let err = std::io::Error::last_os_error().raw_os_error();
        if err == Some(libc::EOPNOTSUPP) || err == Some(libc::EINVAL) || err == Some(libc::ENOSYS) {
            inner.nowait_reads.store(false, Ordering::Relaxed);
        }
        return Some(buf);
    }
    // SAFETY: the kernel wrote the first `n` (≤ len) bytes.
    unsafe { buf.set_len(n as usize) };
    Some(buf)
}

fn count_local_hits(inner: &Inner, r: &Range<u64>) {
    inner.counters.hits.add(inner.layout.chunks_in(r.start, r.end - r.start).count() as u64);
}

/// Whether a read continues the previous one (within two chunks, either
/// way: the kernel issues parallel reads slightly out of order).
/// How many chunks to fetch ahead of this read (0: none). A read at offset
/// 0, or one next to the previous read, is sequential. Like the kernel's
/// page-cache read-ahead the window ramps: nothing while the reader stays in
/// the first chunk (reading a file's header or a binary's ELF header must
/// not pull in the rest of a big file), then 1, 2, 4 … chunks, doubling each
/// time the reader enters a new chunk, up to `opts.readahead`. A read
/// elsewhere resets it.
fn readahead_window(inner: &Inner, off: u64, end: u64) -> u64 {
    let prev = inner.last_read_end.swap(end, Ordering::Relaxed);
    let first = inner.layout.index_of(off);
    let last = inner.layout.index_of(end - 1);
    let prev_chunk =
        (prev > 0 && prev <= inner.layout.size()).then(|| inner.layout.index_of(prev - 1));
    let sequential = off == 0 || prev_chunk.is_some_and(|p| first + 2 >= p && first <= p + 2);
    if !sequential || off == 0 {
        // A new stream (or none): start over from no read-ahead.
        inner.ra_window.store(0, Ordering::Relaxed);
        if !sequential {
            return 0;
        }
    }
    let entered_new_chunk = match prev_chunk {
        Some(p) if off != 0 => last > p,
        _ => last > 0,
    };
    let window = inner.ra_window.load(Ordering::Relaxed);
    if !entered_new_chunk {
        return window;
    }
    let grown = if window == 0 { 1 } else { (window * 2).min(inner.opts.readahead as u64) };
    inner.ra_window.store(grown, Ordering::Relaxed);
    grown
}

async fn read_file(inner: &Inner, r: Range<u64>) -> Result<Vec<u8>> {
    let want = (r.end - r.start) as usize;
    // What the page cache has now; the engine reads the rest (a short
    // count means a page is not cached, or EOF, checked below).
    let mut have = read_cached(inner, r.start, want).unwrap_or_default();
    if have.len() == want {
        return Ok(have);
    }
    let at = r.start + have.len() as u64;
    let rest_len = want - have.len();
    let rest = inner
        .engine
        .read_at(inner.data.clone(), at, rest_len)
        .await
        .map_err(|e| Error::io(format!("{}: read at {at}", inner.name), e))?;
    if rest.len() != rest_len {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "{}: short read at {at} ({} of {rest_len} bytes): data file truncated?",
                inner.name,
                rest.len()
            ),
        ));
    }
    if have.is_empty() {
        return Ok(rest);
    }
    have.extend_from_slice(&rest);
    Ok(have)
}

/// Bytes `r` of chunk `i`, which was not local when the read was planned.
async fn read_chunk(inner: &Arc<Inner>, i: u64, r: Range<u64>) -> Result<Data> {
    loop {
        match inner.states.get(i) {
            ChunkState::Present | ChunkState::Dirty => {
                inner.counters.hits.inc();
                return Ok(Data::Owned(read_file(inner, r).await?));
            }
            ChunkState::Zero => {
                inner.counters.hits.inc();
                inner.counters.zero_reads.inc();
                return Ok(Data::Zeros);
            }
            ChunkState::Absent if inner.source().is_zero(i) => {
                inner.counters.zero_reads.inc();
                return Ok(Data::Zeros);
            }
            ChunkState::Absent => {
                match inner.absent_content(i).await? {
                    Some(Ready::Bytes(b)) => {
                        let start = inner.layout.span(i).start;
                        let slice = (r.start - start) as usize..(r.end - start) as usize;
                        return Ok(Data::Shared(b.slice(slice)));
                    }
                    Some(Ready::InFile) => return Ok(Data::Owned(read_file(inner, r).await?)),
                    None => {}
                }
                // The chunk changed state meanwhile (a write or trim): look again.
            }
        }
    }
}
