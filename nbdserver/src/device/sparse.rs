//! `blank:SIZE`: a thin disk kept in a local sparse file.
//!
//! Reads, writes, syncs and hole punches go through the store's I/O engine
//! (io_uring when the probe allows it). Allocation status comes from
//! `SEEK_DATA`/`SEEK_HOLE` on the file, run on the blocking pool. Zero
//! runs in read data are reported as holes (they truly read as zeros).
//! Everything is local, so `zosfs:cached` reports the whole range cached
//! and CACHE has nothing to do.
//!
//! The file is `flock`ed so two servers never share one cache file.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use zosfs_store::engine::IoEngine;

use super::{BlockDevice, Extent, ReadPiece, ZeroMode, split_zero_runs};
use crate::error::{Error, ErrorKind, Result};
use crate::proto::consts::{STATE_CACHED, STATE_HOLE, STATE_ZERO};
use crate::proto::{BlockSizes, MetaContext};

/// Largest READ/WRITE payload accepted (the spec's portable maximum).
pub const MAX_PAYLOAD: u32 = 32 << 20;
/// Granule of zero detection in reads and of reported holes.
const ZERO_GRANULE: u32 = 4096;
/// Most extents one block status answer walks (the spec allows fewer).
const MAX_EXTENTS: usize = 1024;

static ZEROS: [u8; 1 << 20] = [0u8; 1 << 20];

pub struct SparseFile {
    path: PathBuf,
    file: Arc<File>,
    size: u64,
    chunk: u32,
    engine: Arc<dyn IoEngine>,
}

fn lock_exclusive(file: &File, path: &Path) -> Result<()> {
    // SAFETY: flock on a valid open fd with plain integer flags.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        return Err(Error::with_source(
            ErrorKind::InvalidInput,
            format!("{} is in use by another process", path.display()),
            err,
        ));
    }
    Ok(())
}

impl SparseFile {
    /// Open (or create) the sparse file at `path` holding `size` bytes.
    /// An existing smaller file grows; a larger one is refused, because
    /// shrinking would drop data.
    pub fn open(path: &Path, size: u64, chunk: u32, engine: Arc<dyn IoEngine>) -> Result<Self> {
        let ctx = || format!("open {}", path.display());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(ctx(), e))?;
        lock_exclusive(&file, path)?;
        let len = file.metadata().map_err(|e| Error::io(ctx(), e))?.len();
        if len > size {
            return Err(Error::invalid(format!(
                "{} holds {len} bytes, more than the requested {size}; refusing to shrink it",
                path.display()
            )));
        }
        if len < size {
            file.set_len(size).map_err(|e| Error::io(format!("grow {}", path.display()), e))?;
        }
        Ok(SparseFile { path: path.to_path_buf(), file: Arc::new(file), size, chunk, engine })
    }

    fn io_err(&self, what: &str, off: u64, len: u64, e: io::Error) -> Error {
        Error::io(format!("{what} {len} bytes at {off} in {}", self.path.display()), e)
    }

    async fn sync(&self) -> Result<()> {
        self.engine
            .fdatasync(self.file.clone())
            .await
            .map_err(|e| Error::io(format!("fdatasync {}", self.path.display()), e))
    }

    async fn write_zero_buffers(&self, offset: u64, length: u32) -> Result<()> {
        let mut done = 0u64;
        while done < u64::from(length) {
            let n = (u64::from(length) - done).min(ZEROS.len() as u64) as usize;
            let at = offset + done;
            self.engine
                .write_at(self.file.clone(), at, Bytes::from_static(&ZEROS[..n]))
                .await
                .map_err(|e| self.io_err("write zeros", at, n as u64, e))?;
            done += n as u64;
        }
        Ok(())
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&File) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || f(&file)).await.map_err(io::Error::other)?
    }
}

/// `fallocate(FALLOC_FL_ZERO_RANGE)`: zeros that stay allocated.
fn zero_range(file: &File, off: u64, len: u64) -> io::Result<()> {
    // SAFETY: fallocate on a valid open fd with plain integer arguments.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_ZERO_RANGE,
            off as libc::off_t,
            len as libc::off_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

fn seek(file: &File, pos: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    // SAFETY: lseek on a valid open fd; it only moves the file position,
    // which no other code of ours uses (all I/O is positional).
    let r = unsafe { libc::lseek(file.as_raw_fd(), pos as libc::off_t, whence) };
    if r >= 0 {
        return Ok(Some(r as u64));
    }
    let e = io::Error::last_os_error();
    // ENXIO: no data (or hole) at or after `pos`.
    if e.raw_os_error() == Some(libc::ENXIO) { Ok(None) } else { Err(e) }
}

/// Holes (HOLE|ZERO) and data (0) in `[start, end)`, at most `max` extents.
fn allocation_map(file: &File, start: u64, end: u64, max: usize) -> io::Result<Vec<Extent>> {
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end && out.len() < max {
        let data = seek(file, pos, libc::SEEK_DATA)?.unwrap_or(end).min(end);
        if data > pos {
            out.push(Extent { length: data - pos, flags: STATE_HOLE | STATE_ZERO });
            pos = data;
            continue;
        }
        let hole = seek(file, pos, libc::SEEK_HOLE)?.unwrap_or(end).min(end);
        // Always make progress, even if the filesystem answers oddly.
        let hole = if hole > pos { hole } else { end };
        out.push(Extent { length: hole - pos, flags: 0 });
        pos = hole;
    }
    Ok(out)
}

#[async_trait]
impl BlockDevice for SparseFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn block_sizes(&self) -> BlockSizes {
        BlockSizes { min: 1, preferred: self.chunk, max: MAX_PAYLOAD }
    }

    fn describe(&self) -> String {
        format!("blank thin disk of {} bytes", self.size)
    }

    async fn read(&self, offset: u64, length: u32) -> Result<Vec<ReadPiece>> {
        let mut buf = self
            .engine
            .read_at(self.file.clone(), offset, length as usize)
            .await
            .map_err(|e| self.io_err("read", offset, length.into(), e))?;
        // The file is never shorter than the export, but if something cut
        // it, the missing tail reads as zeros rather than short data.
        buf.resize(length as usize, 0);
        Ok(split_zero_runs(offset, Bytes::from(buf), ZERO_GRANULE))
    }

    async fn write(&self, offset: u64, data: Bytes, fua: bool) -> Result<()> {
        let len = data.len() as u64;
        self.engine
            .write_at(self.file.clone(), offset, data)
            .await
            .map_err(|e| self.io_err("write", offset, len, e))?;
        if fua { self.sync().await } else { Ok(()) }
    }

    async fn flush(&self) -> Result<()> {
        self.sync().await
    }

    async fn trim(&self, offset: u64, length: u32, fua: bool) -> Result<()> {
        if length == 0 {
            return Ok(());
        }
        self.engine
            .punch_hole(self.file.clone(), offset, length.into())
            .await
            .map_err(|e| self.io_err("punch", offset, length.into(), e))?;
        if fua { self.sync().await } else { Ok(()) }
    }

    async fn write_zeroes(
        &self,
        offset: u64,
        length: u32,
        mode: ZeroMode,
        fua: bool,
    ) -> Result<()> {
        if length == 0 {
            return Ok(());
        }
        if !mode.no_hole {
            // A punched hole reads as zeros and is as fast as it gets.
            self.engine
                .punch_hole(self.file.clone(), offset, length.into())
                .await
                .map_err(|e| self.io_err("punch", offset, length.into(), e))?;
        } else {
            let len = u64::from(length);
            match self.blocking(move |f| zero_range(f, offset, len)).await {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) && mode.fast => {
                    return Err(Error::with_source(
                        ErrorKind::Unsupported,
                        "allocated zeroing is not fast on this filesystem",
                        e,
                    ));
                }
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    self.write_zero_buffers(offset, length).await?;
                }
                Err(e) => return Err(self.io_err("zero", offset, len, e)),
            }
        }
        if fua { self.sync().await } else { Ok(()) }
    }

    async fn block_status(
        &self,
        ctx: MetaContext,
        offset: u64,
        length: u32,
    ) -> Result<Vec<Extent>> {
        match ctx {
            MetaContext::Cached => Ok(vec![Extent { length: length.into(), flags: STATE_CACHED }]),
            MetaContext::Allocation => {
                let end = offset + u64::from(length);
                self.blocking(move |f| allocation_map(f, offset, end, MAX_EXTENTS))
                    .await
                    .map_err(|e| self.io_err("map", offset, length.into(), e))
            }
        }
    }

    async fn cache(&self, _offset: u64, _length: u32) -> Result<()> {
        // Every byte of a blank device is already local.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zosfs_store::engine::{EngineChoice, shared_engine};

    fn open(dir: &Path, size: u64) -> Result<SparseFile> {
        SparseFile::open(
            &dir.join("d/blank.img"),
            size,
            1 << 20,
            shared_engine(EngineChoice::Auto).unwrap(),
        )
    }

    fn data(p: &[ReadPiece]) -> Vec<u8> {
        let mut v = Vec::new();
        for piece in p {
            match piece {
                ReadPiece::Data(b) => v.extend_from_slice(b),
                ReadPiece::Zero(n) => v.resize(v.len() + *n as usize, 0),
            }
        }
        v
    }

    #[tokio::test]
    async fn write_read_trim_zero_status() {
        let t = tempfile::tempdir().unwrap();
        let d = open(t.path(), 8 << 20).unwrap();
        assert_eq!(d.read(0, 8192).await.unwrap(), vec![ReadPiece::Zero(8192)]);
        d.write(4096, Bytes::from(vec![0xab; 4096]), true).await.unwrap();
        let r = d.read(0, 3 * 4096).await.unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(data(&r)[4096..8192], [0xab; 4096]);
        // Allocation: a hole, the data block, then a hole to the end.
        let m = d.block_status(MetaContext::Allocation, 0, 8 << 20).await.unwrap();
        assert_eq!(m.iter().map(|e| e.length).sum::<u64>(), 8 << 20);
        assert!(m.iter().any(|e| e.flags == 0));
        assert_eq!(m[0].flags, STATE_HOLE | STATE_ZERO);
        // Trim and allocated zeroing both read back as zeros.
        d.trim(4096, 4096, false).await.unwrap();
        assert!(data(&d.read(4096, 4096).await.unwrap()).iter().all(|&b| b == 0));
        d.write(0, Bytes::from(vec![1; 65536]), false).await.unwrap();
        d.write_zeroes(0, 65536, ZeroMode { no_hole: true, fast: false }, true).await.unwrap();
        assert!(data(&d.read(0, 65536).await.unwrap()).iter().all(|&b| b == 0));
        d.flush().await.unwrap();
    }

    #[tokio::test]
    async fn reopen_keeps_data_and_refuses_shrink_and_second_user() {
        let t = tempfile::tempdir().unwrap();
        {
            let d = open(t.path(), 1 << 20).unwrap();
            // A second opener is refused while the first holds the lock.
            assert!(open(t.path(), 1 << 20).is_err());
            d.write(100, Bytes::from_static(b"hello"), false).await.unwrap();
            d.flush().await.unwrap();
        }
        let d = open(t.path(), 2 << 20).unwrap();
        assert_eq!(&data(&d.read(100, 5).await.unwrap())[..], b"hello");
        drop(d);
        let err = open(t.path(), 1 << 20).err().unwrap();
        assert!(err.to_string().contains("refusing to shrink"), "{err}");
    }
}
