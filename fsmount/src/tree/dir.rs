//! A local directory as a tree. Inode numbers are the source's own, so they
//! are stable across mounts; the map from inode to path fills as entries
//! are looked up (the kernel always looks an entry up before using it).
//! The tree stays on the source's filesystem: entries of nested mounts
//! would bring foreign inode numbers, so they are hidden.
//!
//! The source may be writable by others while fsmount (root) serves it:
//! every entry is reached with openat2 below the root's descriptor,
//! refusing symlinks on the way and other filesystems
//! (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV`), and an open
//! checks that the file it got is the inode that was looked up (device and
//! inode number), so swapping an entry for a symlink or another file
//! between the lookup and the open serves nothing it should not.

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;

use super::{Attr, Content, DirEntry, Ino, Kind, Tree, TreeStats};
use crate::error::{Error, ErrorKind, Result, invalid};

pub struct DirTree {
    root: PathBuf,
    /// The root directory, held open: every path is resolved below it.
    root_fd: File,
    root_ino: Ino,
    dev: u64,
    paths: RwLock<HashMap<Ino, PathBuf>>,
}

fn time(secs: i64, nsec: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

fn attr_of(md: &std::fs::Metadata) -> Result<Attr> {
    let kind = Kind::from_mode(md.mode())
        .ok_or_else(|| invalid(format!("unknown file type in mode {:o}", md.mode())))?;
    Ok(Attr {
        ino: md.ino(),
        kind,
        perm: (md.mode() & 0o7777) as u16,
        nlink: md.nlink() as u32,
        uid: md.uid(),
        gid: md.gid(),
        size: md.size(),
        blocks: md.blocks(),
        atime: time(md.atime(), md.atime_nsec()),
        mtime: time(md.mtime(), md.mtime_nsec()),
        ctime: time(md.ctime(), md.ctime_nsec()),
        rdev: md.rdev(),
    })
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| invalid("path with NUL byte"))
}

/// Call an l*xattr function with a growing buffer.
fn xattr_call(
    what: &str,
    p: &Path,
    f: impl Fn(*mut libc::c_void, usize) -> isize,
) -> Result<Option<Vec<u8>>> {
    let mut cap = 256usize;
    loop {
        let mut buf = vec![0u8; cap];
        let n = f(buf.as_mut_ptr().cast(), buf.len());
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(Some(buf));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) if cap < (1 << 20) => cap *= 4,
            Some(libc::ENODATA) => return Ok(None),
            Some(libc::ENOTSUP) => return Ok(None),
            _ => return Err(Error::io(format!("{what} {}", p.display()), e)),
        }
    }
}

impl DirTree {
    pub fn open(root: &Path) -> Result<DirTree> {
        let root = std::fs::canonicalize(root)
            .map_err(|e| Error::io(format!("source directory {}", root.display()), e))?;
        let root_fd = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&root)
                .map_err(|e| Error::io(format!("open source directory {}", root.display()), e))?
        };
        let md =
            root_fd.metadata().map_err(|e| Error::io(format!("stat {}", root.display()), e))?;
        let mut paths = HashMap::new();
        paths.insert(md.ino(), root.clone());
        Ok(DirTree { root, root_fd, root_ino: md.ino(), dev: md.dev(), paths: RwLock::new(paths) })
    }

    /// Open `p` (a path below the root) with `flags`, resolved below the
    /// root's descriptor without following any symlink or leaving its
    /// filesystem (the last component itself may be a symlink only with
    /// O_PATH, which then opens the link).
    fn open_beneath(&self, p: &Path, flags: i32) -> Result<File> {
        use std::os::fd::{AsRawFd, FromRawFd};
        let rel = p.strip_prefix(&self.root).map_err(|_| {
            invalid(format!("{} is not below {}", p.display(), self.root.display()))
        })?;
        let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
        let c = cpath(rel)?;
        // SAFETY: open_how is plain old data; zeroed is a valid value.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (flags | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64;
        how.resolve = libc::RESOLVE_BENEATH
            | libc::RESOLVE_NO_SYMLINKS
            | libc::RESOLVE_NO_MAGICLINKS
            | libc::RESOLVE_NO_XDEV;
        // SAFETY: openat2 with a live directory fd, a valid C string and a
        // properly sized open_how; the result is a new fd we own.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.root_fd.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EXDEV) {
                // Hidden like every entry of another filesystem.
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("{} is on another filesystem", p.display()),
                ));
            }
            return Err(Error::io(format!("open {}", p.display()), e));
        }
        // SAFETY: fd is a fresh descriptor returned by openat2.
        Ok(unsafe { File::from_raw_fd(fd as i32) })
    }

    fn path(&self, ino: Ino) -> Result<PathBuf> {
        self.paths
            .read()
            .get(&ino)
            .cloned()
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("inode {ino} not looked up")))
    }

    fn stat(&self, p: &Path) -> Result<Attr> {
        let md = self
            .open_beneath(p, libc::O_PATH)?
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", p.display()), e))?;
        if md.dev() != self.dev {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("{} is on another filesystem", p.display()),
            ));
        }
        attr_of(&md)
    }
}

impl Tree for DirTree {
    fn root(&self) -> Ino {
        self.root_ino
    }

    fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Attr> {
        let p = self.path(parent)?.join(name);
        let a = self.stat(&p)?;
        self.paths.write().entry(a.ino).or_insert(p);
        Ok(a)
    }

    fn getattr(&self, ino: Ino) -> Result<Attr> {
        self.stat(&self.path(ino)?)
    }

    fn readdir(&self, ino: Ino) -> Result<Vec<DirEntry>> {
        let dir = self.path(ino)?;
        let rd =
            std::fs::read_dir(&dir).map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
            let p = ent.path();
            let attr = match self.stat(&p) {
                Ok(a) => a,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            self.paths.write().entry(attr.ino).or_insert(p);
            out.push(DirEntry { name: ent.file_name(), attr });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        use std::os::fd::AsRawFd;
        let p = self.path(ino)?;
        let link = self.open_beneath(&p, libc::O_PATH)?;
        let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
        // SAFETY: readlinkat on our O_PATH fd with an empty path reads that
        // link; the buffer is a live Vec of the given length.
        let n = unsafe {
            libc::readlinkat(link.as_raw_fd(), c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        };
        if n < 0 {
            return Err(Error::last_os(format!("readlink {}", p.display())));
        }
        buf.truncate(n as usize);
        Ok(buf)
    }

    fn listxattr(&self, ino: Ino) -> Result<Vec<OsString>> {
        let p = self.path(ino)?;
        let c = cpath(&p)?;
        // SAFETY: c is a valid path; the buffer pointer/length come from a live Vec.
        let raw = xattr_call("listxattr", &p, |b, n| unsafe {
            libc::llistxattr(c.as_ptr(), b.cast(), n)
        })?;
        Ok(raw
            .unwrap_or_default()
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| OsString::from_vec(s.to_vec()))
            .collect())
    }

    fn getxattr(&self, ino: Ino, name: &OsStr) -> Result<Option<Vec<u8>>> {
        let p = self.path(ino)?;
        let c = cpath(&p)?;
        let n = CString::new(name.as_bytes()).map_err(|_| invalid("xattr name with NUL"))?;
        // SAFETY: c and n are valid C strings; the buffer comes from a live Vec.
        xattr_call("getxattr", &p, |b, len| unsafe {
            libc::lgetxattr(c.as_ptr(), n.as_ptr(), b, len)
        })
    }

    fn open(&self, ino: Ino) -> Result<Arc<dyn Content>> {
        let p = self.path(ino)?;
        // O_NONBLOCK: a FIFO swapped in must not block the FUSE thread.
        let file = self.open_beneath(&p, libc::O_RDONLY | libc::O_NONBLOCK)?;
        let md = file.metadata().map_err(|e| Error::io(format!("stat {}", p.display()), e))?;
        if !md.is_file() || md.ino() != ino || md.dev() != self.dev {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("{} changed since it was looked up", p.display()),
            ));
        }
        Ok(Arc::new(LocalContent { file, size: md.len() }))
    }

    fn stats(&self) -> TreeStats {
        let Ok(c) = cpath(&self.root) else { return TreeStats::default() };
        // SAFETY: statvfs is plain old data; zeroed is a valid initial value.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: c is a valid path and st a valid out-pointer.
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return TreeStats::default();
        }
        TreeStats {
            files: st.f_files.saturating_sub(st.f_ffree),
            bytes: st.f_blocks.saturating_sub(st.f_bfree).saturating_mul(st.f_frsize),
        }
    }
}

/// A regular file that is entirely local.
pub struct LocalContent {
    file: File,
    size: u64,
}

impl Content for LocalContent {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("read", e)),
            }
        }
        Ok(done)
    }

    fn local_file(&self) -> Option<&File> {
        Some(&self.file)
    }
}
