//! Process plumbing: `-d/--daemon` detaching with a readiness pipe, pid
//! files, and turning SIGTERM/SIGINT/SIGHUP into an orderly shutdown.
//!
//! [`daemonize`] must run before the process starts any thread (fork keeps
//! only the calling thread). The parent waits on a pipe: the child writes
//! `ok` once the mount is ready or `error MESSAGE` when setup failed, and
//! the parent exits with that outcome — the caller of `fsmount -d` learns
//! the exact error, not just "it started". A child that dies first closes
//! the pipe, which the parent reports too.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The child's end of the readiness pipe (a no-op in the foreground).
#[derive(Debug)]
pub struct Readiness {
    pipe: Option<File>,
}

impl Readiness {
    /// Foreground: nobody waits.
    pub fn foreground() -> Readiness {
        Readiness { pipe: None }
    }

    pub fn ready(mut self, what: &str) {
        if let Some(mut p) = self.pipe.take() {
            let _ = writeln!(p, "ok {what}");
        }
    }

    pub fn failed(mut self, err: &str) {
        if let Some(mut p) = self.pipe.take() {
            let _ = writeln!(p, "error {}", err.replace('\n', " "));
        }
    }
}

/// Fork. In the parent, wait for the child's readiness and exit with it
/// (never returns). In the child: new session, stdin from /dev/null,
/// stdout and stderr appended to `log`.
pub fn daemonize(log: &Path) -> Result<Readiness> {
    let logf =
        crate::sys::open_own_file(log, 0o600, false).map_err(|e| e.context_prefix("log file"))?;
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid out-array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::last_os("pipe2"));
    }
    // SAFETY: pipe2 returned two fresh descriptors that we now own.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: single-threaded at this point (documented precondition).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::last_os("fork"));
    }
    if pid > 0 {
        drop(wr);
        parent_wait(File::from(rd), pid, log);
    }
    drop(rd);
    // SAFETY: setsid has no memory-safety preconditions.
    unsafe { libc::setsid() };
    let null = File::open("/dev/null").map_err(|e| Error::io("open /dev/null", e))?;
    // SAFETY: dup2 onto the standard descriptors with fds we own.
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(logf.as_raw_fd(), 1);
        libc::dup2(logf.as_raw_fd(), 2);
    }
    Ok(Readiness { pipe: Some(File::from(wr)) })
}

fn parent_wait(mut rd: File, child: i32, log: &Path) -> ! {
    let mut msg = String::new();
    let _ = rd.read_to_string(&mut msg);
    let msg = msg.trim();
    if let Some(ok) = msg.strip_prefix("ok") {
        println!("fsmount: {} (pid {child})", ok.trim());
        std::process::exit(0);
    }
    match msg.strip_prefix("error ") {
        Some(e) => eprintln!("fsmount: {e}"),
        None => eprintln!(
            "fsmount: the daemon (pid {child}) exited before the mount was ready; see {}",
            log.display()
        ),
    }
    std::process::exit(1);
}

/// Block the termination signals in this thread and every thread it
/// creates later, so only [`wait_signal`] sees them. Call before spawning.
pub fn block_signals() {
    // SAFETY: sigset manipulation on a local set; pthread_sigmask on this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Wait for one of the blocked termination signals; returns its number.
pub fn wait_signal() -> i32 {
    // SAFETY: as in block_signals; sigwait writes the signal into `sig`.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        let mut sig = 0;
        libc::sigwait(&set, &mut sig);
        sig
    }
}

/// A pid file removed on drop (only if it still holds our pid).
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    pub fn create(path: &Path) -> Result<PidFile> {
        let pid = std::process::id();
        let mut f = crate::sys::open_own_file(path, 0o644, true)
            .map_err(|e| e.context_prefix("pid file"))?;
        f.write_all(format!("{pid}\n").as_bytes())
            .map_err(|e| Error::io(format!("write pid file {}", path.display()), e))?;
        Ok(PidFile { path: path.to_path_buf() })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let mine = format!("{}\n", std::process::id());
        if std::fs::read_to_string(&self.path).is_ok_and(|s| s == mine) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
