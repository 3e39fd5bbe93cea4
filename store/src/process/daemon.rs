//! Process plumbing: `-d/--daemon` detaching with a readiness pipe, pid
//! files, and turning SIGTERM/SIGINT/SIGHUP into an orderly shutdown.
//!
//! [`daemonize`] must run before the process starts any thread (fork keeps
//! only the calling thread). The parent waits on a pipe: the child writes
//! `ok` once the mount is ready or `error MESSAGE` when setup failed, and
//! the parent exits with that outcome — the caller of `fsmount -d` (or
//! `chunkstore serve -d`, `nbdserver -d`) learns the exact error, not just
//! "it started". A child that dies first closes the pipe, which the parent
//! reports too. The daemon keeps the parent's command line (no re-exec):
//! callers hide passwords in it with [`super::argv::hide_secrets`].

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, invalid};

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
/// (never returns); `prog` names the program in its messages. In the
/// child: new session, stdin from /dev/null, stdout and stderr appended
/// to `log`.
pub fn daemonize(prog: &str, log: &Path) -> Result<Readiness> {
    let logf = open_own_file(log, 0o600, false).map_err(|e| e.context_prefix("log file"))?;
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
        parent_wait(prog, File::from(rd), pid, log);
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

/// Print what a server answered about something it made ready: the first
/// line to stdout (followed by `suffix`), any further lines, which are
/// warnings, to stderr.
pub fn print_answer(prog: &str, what: &str, suffix: &str) {
    let mut lines = what.lines();
    println!("{prog}: {}{suffix}", lines.next().unwrap_or_default());
    for warning in lines {
        eprintln!("{prog}: {warning}");
    }
}

fn parent_wait(prog: &str, mut rd: File, child: i32, log: &Path) -> ! {
    let mut msg = String::new();
    let _ = rd.read_to_string(&mut msg);
    let msg = msg.trim();
    if let Some(ok) = msg.strip_prefix("ok") {
        print_answer(prog, ok.trim(), &format!(" (pid {child})"));
        std::process::exit(0);
    }
    match msg.strip_prefix("error ") {
        Some(e) => eprintln!("{prog}: {e}"),
        None => eprintln!(
            "{prog}: the daemon (pid {child}) exited before it was ready; see {}",
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

/// How a server was asked to run: `-d/--daemon`, `--pid-file`,
/// `--log-file` (each program declares the flags, this does the work).
#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    pub daemon: bool,
    pub pid_file: Option<PathBuf>,
    pub log_file: Option<PathBuf>,
}

/// What [`DaemonOptions::start`] leaves to the server: tell the waiting
/// parent how start-up went, and keep the pid file until exit.
#[derive(Debug)]
pub struct Started {
    pub readiness: Readiness,
    pub pid_file: Option<PidFile>,
    /// Where stderr goes, if not to the terminal.
    pub log_file: Option<PathBuf>,
}

impl DaemonOptions {
    /// With `-d`, detach (logging to `--log-file`, else `default_log`);
    /// without, send stderr to `--log-file` if given. Then write the pid
    /// file, naming the process that serves. Call before any thread starts.
    pub fn start(&self, prog: &str, default_log: &Path) -> Result<Started> {
        let log_file = match (&self.log_file, self.daemon) {
            (Some(l), _) => Some(l.clone()),
            (None, true) => Some(default_log.to_path_buf()),
            (None, false) => None,
        };
        let readiness = match (&log_file, self.daemon) {
            (Some(log), true) => daemonize(prog, log)?,
            (Some(log), false) => {
                redirect_stderr(log)?;
                Readiness::foreground()
            }
            (None, _) => Readiness::foreground(),
        };
        let pid_file = match self.pid_file.as_deref().map(PidFile::create).transpose() {
            Ok(p) => p,
            Err(e) => {
                readiness.failed(&e.chain());
                return Err(e);
            }
        };
        Ok(Started { readiness, pid_file, log_file })
    }
}

impl Started {
    /// ` (log PATH)` when stderr goes to a file, for the ready message.
    pub fn log_note(&self) -> String {
        self.log_file.as_ref().map(|l| format!(" (log {})", l.display())).unwrap_or_default()
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
        let mut f = open_own_file(path, 0o644, true).map_err(|e| e.context_prefix("pid file"))?;
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

/// Open (creating with `mode`) a file a daemon writes at a path that may
/// lie in a directory others can write to (`--pid-file`, `--log-file`):
/// a symlink at the path is refused (O_NOFOLLOW), and so is anything but a
/// regular file with one name, so a planted link cannot make root append
/// to or truncate another file. `truncate` empties it after the checks.
pub fn open_own_file(path: &Path, mode: u32, truncate: bool) -> Result<File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let what = |e| Error::io(format!("open {} (symlinks are refused)", path.display()), e);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(!truncate)
        .write(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(what)?;
    let md = f.metadata().map_err(what)?;
    if !md.is_file() || md.nlink() != 1 {
        return Err(invalid(format!(
            "{} is not a plain file with a single name; refusing to write it",
            path.display()
        )));
    }
    if truncate {
        f.set_len(0).map_err(|e| Error::io(format!("truncate {}", path.display()), e))?;
    }
    Ok(f)
}

/// Foreground with `--log-file`: send stderr (the log) there.
pub fn redirect_stderr(log: &Path) -> Result<()> {
    let f = open_own_file(log, 0o600, false).map_err(|e| e.context_prefix("log file"))?;
    // SAFETY: dup2 of a descriptor we own onto stderr.
    if unsafe { libc::dup2(f.as_raw_fd(), 2) } < 0 {
        return Err(Error::last_os("redirect stderr to the log file"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_files_refuse_symlinks_and_hard_links() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(open_own_file(&link, 0o600, true).is_err());
        let hard = dir.path().join("hard");
        std::fs::hard_link(&target, &hard).unwrap();
        assert!(open_own_file(&hard, 0o600, true).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        let pid = dir.path().join("pid");
        drop(PidFile::create(&pid).unwrap());
        assert!(!pid.exists(), "a pid file is removed on drop");
    }
}
