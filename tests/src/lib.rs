//! Helpers shared by the end-to-end tests: locating the workspace binaries,
//! child processes that are always stopped, waiting on a condition with a
//! deadline (never a bare sleep), and free ports.
//!
//! Each area keeps its own helpers in its own module here.

pub mod flist;
pub mod router;
pub mod zdb;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub mod nbd;

/// Path of a workspace binary built in the same profile as this test
/// (`target/<profile>/<name>`). `make test` builds all binaries first.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary> -> target/<profile>/<name>
    let dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>");
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --release --workspace --bins` first",
        p.display()
    );
    p
}

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct ChildGuard {
    pub child: Child,
    pub what: String,
}

impl ChildGuard {
    pub fn spawn(mut cmd: Command, what: impl Into<String>) -> Result<Self> {
        let what = what.into();
        let child = cmd.spawn().with_context(|| format!("start {what}"))?;
        Ok(ChildGuard { child, what })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL now (crash simulation) and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait up to `timeout` for a clean exit; returns its status.
    pub fn terminate(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        unsafe { libc_kill(self.child.id() as i32, 15) };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                self.kill9();
                bail!("{} did not exit within {timeout:?} of SIGTERM", self.what);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Poll `cond` until it returns Ok(Some(v)) or the deadline passes.
/// This is how tests wait for a server or a mount: on a condition, not a sleep.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match cond() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() > deadline {
            match last_err {
                Some(e) => bail!("timed out after {timeout:?} waiting for {what}: {e:#}"),
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A TCP port free right now on 127.0.0.1.
///
/// Ports come from below the kernel's ephemeral range (32768 and up), never
/// from `bind(:0)`: a client socket could take an ephemeral port before the
/// server binds it. Each test process walks up from its own random start
/// (tests run in parallel processes under nextest), skipping ports in use.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};
    const LOW: u32 = 20000;
    const SPAN: u32 = 12000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    if NEXT.load(Ordering::Relaxed) == u32::MAX {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let start = (nanos ^ std::process::id().wrapping_mul(2654435761)) % SPAN;
        let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
    }
    loop {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Wait until something accepts TCP connections on 127.0.0.1:port.
pub fn wait_port(port: u16, timeout: Duration) -> Result<()> {
    wait_for(&format!("127.0.0.1:{port} to accept"), timeout, || {
        Ok(std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ()))
    })
}

/// Start Debian's redis-server on a free port in `dir` (no persistence).
pub fn start_redis(dir: &std::path::Path) -> Result<(ChildGuard, u16)> {
    let port = free_port();
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ])
    .arg("--dir")
    .arg(dir)
    .stdout(std::process::Stdio::null());
    let guard = ChildGuard::spawn(cmd, "redis-server")?;
    wait_port(port, Duration::from_secs(10))?;
    Ok((guard, port))
}

pub mod fsmount;
