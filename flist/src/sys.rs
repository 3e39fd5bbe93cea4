//! Thin wrappers over the Linux calls std does not offer: extended
//! attributes on paths without following symlinks, and the `*at` calls
//! unpack uses to create entries relative to a directory fd (so a symlink
//! can never redirect a write outside the destination).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::model::Xattr;

fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// All extended attributes of `path` (not following a final symlink),
/// sorted by name. Filesystems without xattr support give an empty list.
pub fn lxattrs(path: &[u8]) -> io::Result<Vec<Xattr>> {
    let p = cstr(path)?;
    let mut names = vec![0u8; 1024];
    let len = loop {
        // SAFETY: `p` is NUL-terminated; the buffer pointer and length
        // describe `names`, which outlives the call.
        let n = unsafe { libc::llistxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = cstr(name)?;
        let mut value = vec![0u8; 256];
        loop {
            // SAFETY: both strings are NUL-terminated; pointer and length
            // describe `value`, which outlives the call.
            let n = unsafe {
                libc::lgetxattr(p.as_ptr(), cname.as_ptr(), value.as_mut_ptr().cast(), value.len())
            };
            if n >= 0 {
                value.truncate(n as usize);
                break;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) => value.resize(value.len() * 4, 0),
                // Removed between list and get: skip it.
                Some(libc::ENODATA) => {
                    value.clear();
                    break;
                }
                _ => return Err(e),
            }
        }
        out.push(Xattr { name: name.to_vec(), value });
    }
    out.sort();
    Ok(out)
}

/// Set an extended attribute on `path` without following a final symlink.
pub fn lsetxattr(path: &[u8], x: &Xattr) -> io::Result<()> {
    let p = cstr(path)?;
    let n = cstr(&x.name)?;
    // SAFETY: both strings are NUL-terminated; the value pointer and length
    // describe `x.value`, which outlives the call.
    check(unsafe {
        libc::lsetxattr(p.as_ptr(), n.as_ptr(), x.value.as_ptr().cast(), x.value.len(), 0)
    })
}

/// Open `name` inside directory `dir` with `flags | O_NOFOLLOW | O_CLOEXEC`.
pub fn openat(dir: RawFd, name: &[u8], flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    let n = cstr(name)?;
    // SAFETY: `n` is NUL-terminated; `dir` is a directory fd the caller owns.
    let fd = unsafe {
        libc::openat(
            dir,
            n.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by openat and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open a directory `name` inside `dir`, refusing symlinks.
pub fn open_dir_at(dir: RawFd, name: &[u8]) -> io::Result<OwnedFd> {
    openat(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
}

pub fn mkdirat(dir: RawFd, name: &[u8], mode: u32) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: `n` is NUL-terminated; `dir` is a directory fd the caller owns.
    check(unsafe { libc::mkdirat(dir, n.as_ptr(), mode as libc::mode_t) })
}

pub fn symlinkat(target: &[u8], dir: RawFd, name: &[u8]) -> io::Result<()> {
    let t = cstr(target)?;
    let n = cstr(name)?;
    // SAFETY: both strings are NUL-terminated; `dir` is owned by the caller.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir, n.as_ptr()) })
}

pub fn mknodat(dir: RawFd, name: &[u8], mode: u32, rdev: u64) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: `n` is NUL-terminated; `dir` is a directory fd the caller owns.
    check(unsafe { libc::mknodat(dir, n.as_ptr(), mode as libc::mode_t, rdev as libc::dev_t) })
}

/// Hardlink `old_dir/old` as `new_dir/new` (never following symlinks).
pub fn linkat(old_dir: RawFd, old: &[u8], new_dir: RawFd, new: &[u8]) -> io::Result<()> {
    let o = cstr(old)?;
    let n = cstr(new)?;
    // SAFETY: both strings are NUL-terminated; both fds are owned by the caller.
    check(unsafe { libc::linkat(old_dir, o.as_ptr(), new_dir, n.as_ptr(), 0) })
}

/// chown without following a final symlink.
pub fn lchownat(dir: RawFd, name: &[u8], uid: u32, gid: u32) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: `n` is NUL-terminated; `dir` is a directory fd the caller owns.
    check(unsafe { libc::fchownat(dir, n.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })
}

/// chmod of a non-symlink entry (Linux cannot chmod symlinks).
pub fn chmodat(dir: RawFd, name: &[u8], mode: u32) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: `n` is NUL-terminated; `dir` is a directory fd the caller owns.
    check(unsafe { libc::fchmodat(dir, n.as_ptr(), mode as libc::mode_t, 0) })
}

/// Set mtime (atime = mtime) without following a final symlink.
pub fn set_mtime_at(dir: RawFd, name: &[u8], mtime_ns: i64) -> io::Result<()> {
    let n = cstr(name)?;
    let ts = libc::timespec {
        tv_sec: mtime_ns.div_euclid(1_000_000_000),
        tv_nsec: mtime_ns.rem_euclid(1_000_000_000),
    };
    let times = [ts, ts];
    // SAFETY: `n` is NUL-terminated; `times` is a 2-element array as
    // utimensat requires; `dir` is owned by the caller.
    check(unsafe { libc::utimensat(dir, n.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
}

/// The path of `name` inside the directory fd `dir`, through /proc: lets
/// path-only calls (lsetxattr) act on an entry of a directory we hold open
/// without re-walking (and re-trusting) the path from the root.
pub fn proc_path(dir: &impl AsRawFd, name: &[u8]) -> Vec<u8> {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    p
}

pub fn fchown(fd: &impl AsRawFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: fchown on a file descriptor the caller holds open.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) })
}

pub fn fchmod(fd: &impl AsRawFd, mode: u32) -> io::Result<()> {
    // SAFETY: fchmod on a file descriptor the caller holds open.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) })
}

pub fn fsetxattr(fd: &impl AsRawFd, x: &Xattr) -> io::Result<()> {
    let n = cstr(&x.name)?;
    // SAFETY: `n` is NUL-terminated; the value pointer and length describe
    // `x.value`; the fd is held open by the caller.
    check(unsafe {
        libc::fsetxattr(fd.as_raw_fd(), n.as_ptr(), x.value.as_ptr().cast(), x.value.len(), 0)
    })
}

/// Set mtime (atime = mtime) of an open file.
pub fn futimens(fd: &impl AsRawFd, mtime_ns: i64) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: mtime_ns.div_euclid(1_000_000_000),
        tv_nsec: mtime_ns.rem_euclid(1_000_000_000),
    };
    let times = [ts, ts];
    // SAFETY: `times` is the 2-element array futimens requires; the fd is
    // held open by the caller.
    check(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) })
}

/// Whether this process runs as root (ownership can be restored).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
