//! Opening a LazyFile: the data file, the state file, checking that the
//! state file describes this layout and content, or starting over.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use parking_lot::{Mutex, RwLock};
use tokio::sync::Semaphore;

use super::format::{self, Header, SLOT_LEN, STATES_OFF};
use super::journal::{Journal, Writer};
use super::stats::Counters;
use super::{ChunkSource, ChunkState, Inner, Layout, LazyOptions, OnMismatch, StateTable};
use crate::engine::{EngineChoice, shared_engine};
use crate::error::{Error, ErrorKind, Result, corrupt, invalid};

/// `<data>.state`
pub(crate) fn state_path(data: &Path) -> PathBuf {
    let mut s = data.as_os_str().to_owned();
    s.push(".state");
    PathBuf::from(s)
}

/// The files as found (or made) at open time.
struct Files {
    data: File,
    state: File,
    header: Header,
    slot: usize,
    packed: Vec<u8>,
}

pub(crate) async fn open(
    path: &Path,
    layout: Layout,
    source: Arc<dyn ChunkSource>,
    opts: LazyOptions,
) -> Result<Arc<Inner>> {
    let name = path.display().to_string();
    if opts.fetch_depth == 0 || opts.prefetch_depth == 0 {
        return Err(invalid(format!("{name}: fetch_depth and prefetch_depth must be at least 1")));
    }
    let rt = tokio::runtime::Handle::try_current()
        .map_err(|_| invalid(format!("{name}: LazyFile::open must run inside a tokio runtime")))?;
    let engine = match &opts.engine {
        Some(e) => e.clone(),
        None => shared_engine(EngineChoice::Auto)
            .map_err(|e| Error::io(format!("{name}: open I/O engine"), e))?,
    };
    let expected = Header {
        seq: 0,
        size: layout.size(),
        count: layout.count(),
        fixed_chunk: layout.fixed_chunk_size().unwrap_or(0),
        layout_digest: layout.digest(),
        identity: source.identity(),
    };
    let (p, on_mismatch) = (path.to_path_buf(), opts.on_mismatch);
    let describe = source.describe();
    let files = crate::backend::blocking(move || {
        open_files(&p, &expected, on_mismatch, &describe).map_err(|e| e.context_prefix(p.display()))
    })
    .await?;

    let data = Arc::new(files.data);
    let state = Arc::new(files.state);
    let table = StateTable::new((0..layout.count()).map(|i| format::get_code(&files.packed, i)));
    // Absent regions may hold bytes of fills that never got marked: make them
    // holes, so a fully present file reads exactly as its content.
    let mut holes: Vec<std::ops::Range<u64>> = Vec::new();
    let mut missing = 0u64;
    for i in 0..layout.count() {
        if table.get(i) != ChunkState::Absent {
            continue;
        }
        missing += u64::from(!source.is_zero(i));
        let s = layout.span(i);
        match holes.last_mut() {
            Some(r) if r.end == s.start => r.end = s.end,
            _ => holes.push(s),
        }
    }
    for r in holes {
        engine
            .punch_hole(data.clone(), r.start, r.end - r.start)
            .await
            .map_err(|e| Error::io(format!("{name}: punch absent chunks"), e))?;
    }

    let counters = Arc::new(Counters::default());
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let journal = Journal::start(Writer {
        engine: engine.clone(),
        data: data.clone(),
        state,
        persisted: files.packed,
        header: files.header.clone(),
        slot: files.slot,
        interval: opts.state_sync_interval,
        poisoned: Arc::new(AtomicBool::new(false)),
        counters: counters.clone(),
        failpoint: opts.failpoint.clone(),
        name: name.clone(),
        _done: Some(done_tx),
    });
    Ok(Arc::new(Inner {
        name,
        path: path.to_path_buf(),
        layout,
        source: RwLock::new(source),
        engine,
        data,
        states: table,
        missing: AtomicU64::new(missing),
        jobs: Mutex::new(HashMap::new()),
        journal,
        journal_done: Mutex::new(Some(done_rx)),
        header: Mutex::new(files.header),
        fetch_permits: Semaphore::new(opts.fetch_depth),
        prefetch_permits: Arc::new(Semaphore::new(opts.prefetch_depth.min(opts.fetch_depth))),
        counters,
        opts,
        rt,
        last_read_end: AtomicU64::new(0),
        ra_window: AtomicU64::new(0),
        nowait_reads: AtomicBool::new(true),
    }))
}

fn open_rw(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        // Decrypted image content: for the owner only.
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("open {}", path.display()), e))
}

/// One process at a time per cache (a second open would corrupt states).
fn lock(file: &File, path: &Path) -> Result<()> {
    // SAFETY: flock on a valid open fd with integer flags.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Err(Error::new(
            ErrorKind::Unavailable,
            format!("{} is in use by another LazyFile (locked)", path.display()),
        ));
    }
    Err(Error::io(format!("lock {}", path.display()), err))
}

fn open_files(
    path: &Path,
    expected: &Header,
    on_mismatch: OnMismatch,
    describe: &str,
) -> Result<Files> {
    let data = open_rw(path)?;
    lock(&data, path)?;
    let spath = state_path(path);
    let mut state = open_rw(&spath)?;
    let state_len = state.metadata().map_err(|e| Error::io("stat state file", e))?.len();
    let mut head = vec![0u8; STATES_OFF as usize];
    let n = read_full(&mut state, &mut head).map_err(|e| Error::io("read state header", e))?;
    head.truncate(n);

    let found = match format::current_header(&head) {
        Ok(Some((h, slot))) => Some((h, slot)),
        Ok(None) if state_len == 0 => None,
        Ok(None) => {
            return refuse_or_reset(
                data,
                path,
                expected,
                on_mismatch,
                false,
                corrupt("the state file has no valid header"),
            );
        }
        Err(e) => return refuse_or_reset(data, path, expected, on_mismatch, false, e),
    };
    let Some((header, slot)) = found else {
        return reset(data, path, expected);
    };
    let packed = read_states(&mut state, header.count);
    if header.same_content(expected) {
        let packed = packed?;
        if data.metadata().map_err(|e| Error::io("stat data file", e))?.len() != expected.size {
            data.set_len(expected.size).map_err(|e| Error::io("size data file", e))?;
        }
        return Ok(Files { data, state, header, slot, packed });
    }
    let clean = packed.map(|p| {
        (0..header.count).all(|i| !ChunkState::from_code(format::get_code(&p, i)).is_changed())
    });
    let why = mismatch(&header, expected, describe);
    refuse_or_reset(data, path, expected, on_mismatch, clean.unwrap_or(false), why)
}

fn read_states(state: &mut File, count: u64) -> Result<Vec<u8>> {
    use std::io::{Seek, SeekFrom};
    let mut packed = vec![0u8; format::states_len(count)];
    state.seek(SeekFrom::Start(STATES_OFF)).map_err(|e| Error::io("seek state file", e))?;
    let n = read_full(state, &mut packed).map_err(|e| Error::io("read states", e))?;
    if n != packed.len() {
        return Err(corrupt(format!(
            "the state file is truncated ({n} of {} state bytes)",
            packed.len()
        )));
    }
    Ok(packed)
}

fn mismatch(found: &Header, want: &Header, describe: &str) -> Error {
    let what = if found.size != want.size {
        format!("a file of {} bytes, not {}", found.size, want.size)
    } else if found.layout_digest != want.layout_digest || found.fixed_chunk != want.fixed_chunk {
        "other chunk boundaries".to_string()
    } else {
        "other content".to_string()
    };
    invalid(format!("the cache was made for {what} (want {describe})"))
}

fn refuse_or_reset(
    data: File,
    path: &Path,
    expected: &Header,
    on_mismatch: OnMismatch,
    clean: bool,
    why: Error,
) -> Result<Files> {
    match on_mismatch {
        OnMismatch::Reset => {}
        OnMismatch::ResetIfClean if clean => {}
        OnMismatch::ResetIfClean => {
            return Err(why.context_prefix(format!(
                "refusing to reset a cache holding local writes (commit them first, or \
                 remove {} to drop them)",
                path.display()
            )));
        }
        OnMismatch::Refuse => return Err(why),
    }
    tracing::warn!("{}: starting over: {}", path.display(), why.chain());
    reset(data, path, expected)
}

/// Start over: a new state file with every chunk absent replaces the old
/// one atomically (rename), then the data file is emptied. A crash in
/// between leaves either the old, consistent pair or an all-absent state.
fn reset(data: File, path: &Path, expected: &Header) -> Result<Files> {
    let spath = state_path(path);
    let mut tmp_name = spath.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp_path = PathBuf::from(tmp_name);
    let header = Header { seq: 1, ..expected.clone() };
    let packed = vec![0u8; format::states_len(expected.count)];
    {
        let mut tmp = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp_path)
            .map_err(|e| Error::io(format!("create {}", tmp_path.display()), e))?;
        let mut head = vec![0u8; STATES_OFF as usize];
        head[..SLOT_LEN].copy_from_slice(&header.encode());
        let io = |e| Error::io(format!("write {}", tmp_path.display()), e);
        tmp.write_all(&head).map_err(io)?;
        tmp.write_all(&packed).map_err(io)?;
        tmp.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp_path, &spath)
        .map_err(|e| Error::io(format!("rename to {}", spath.display()), e))?;
    sync_dir(&spath)?;
    let io = |e| Error::io(format!("reset {}", path.display()), e);
    data.set_len(0).map_err(io)?;
    data.set_len(expected.size).map_err(io)?;
    data.sync_all().map_err(io)?;
    let state = open_rw(&spath)?;
    Ok(Files { data, state, header, slot: 0, packed })
}

fn sync_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("fsync {}", dir.display()), e))
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
