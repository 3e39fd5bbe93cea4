//! Thin, documented wrappers over the system calls fsmount needs: mounts and
//! mountinfo, loop devices, file locks, statfs and process checks. Nothing
//! here knows about volumes or overlays; the modules above compose these.

pub mod loopdev;
pub mod mount;

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, Result, invalid};

/// f_type of a btrfs filesystem in statfs(2).
pub const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;

/// statfs(2) f_type of the filesystem holding `path`.
pub fn fs_type(path: &Path) -> Result<i64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| invalid(format!("path {} contains a NUL byte", path.display())))?;
    // SAFETY: statfs is plain old data; zeroed is a valid initial value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string and st a valid out-pointer for the call.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(Error::last_os(format!("statfs {}", path.display())));
    }
    Ok(st.f_type as i64)
}

/// An exclusive advisory lock on a file, released on drop (or process death).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Block until the lock on `path` (created if missing) is ours.
    pub fn exclusive(path: &Path) -> Result<FileLock> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(format!("open lock file {}", path.display()), e))?;
        loop {
            // SAFETY: flock on an fd we own.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(FileLock { _file: file });
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(Error::io(format!("lock {}", path.display()), e));
            }
        }
    }
}

/// Whether a process with this pid exists and has not exited (a zombie
/// waiting to be reaped counts as gone).
pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
        return !matches!(state, Some('Z') | Some('X') | None);
    }
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid as i32, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Send a signal to a process.
pub fn signal(pid: u32, sig: i32) -> Result<()> {
    if pid == 0 || pid > i32::MAX as u32 {
        return Err(invalid(format!("bad pid {pid}")));
    }
    // SAFETY: kill(2) with a checked positive pid.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    if rc != 0 {
        return Err(Error::last_os(format!("signal {sig} to pid {pid}")));
    }
    Ok(())
}

/// The command name of a live process (/proc/PID/comm), to avoid signalling
/// an unrelated process that reused a recorded pid.
pub fn process_name(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|s| s.trim_end().to_string())
}

// The peer check of every zosfs socket lives with the node store's.
pub use zosfs_store::node::frame::{peer_uid, trusted_uid as peer_allowed};

/// Bind a listening unix socket at `path` whose file is 0600 from the
/// moment it exists: the socket inode's mode is set before bind(2), which
/// creates the file with that mode (less the umask), so there is no window
/// between bind and a chmod. (The umask is per process: changing it would
/// race other threads creating files.)
pub fn bind_private(path: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data; zeroed is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "socket path too long or holds a NUL byte",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: plain socket(2); the fd is owned right below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: fchmod, bind and listen on our own fd with a valid address of `len` bytes.
    unsafe {
        if libc::fchmod(sock.as_raw_fd(), 0o600) != 0
            || libc::bind(
                sock.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len as libc::socklen_t,
            ) != 0
            || libc::listen(sock.as_raw_fd(), 128) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(std::os::unix::net::UnixListener::from(sock))
}
