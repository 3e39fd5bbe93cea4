//! The control socket of a serving fsmount process (STATE/mounts/<id>/ctl.sock).
//!
//! One request line per connection, one answer, then the server closes:
//!
//! ```text
//! stats            -> "ok\n" + TOML of a stats Snapshot
//! metrics          -> "ok\n" + Prometheus text
//! shutdown [lazy]  -> "ok\n" once unmounted, or "error MESSAGE\n" (still mounted)
//! ```
//!
//! The socket is root-only (mode 0600): shutdown is a privileged action.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, ErrorKind, Result};
use crate::stats::Snapshot;

/// What the serving process answers.
pub trait ControlHandler: Send + Sync + 'static {
    fn stats(&self) -> Snapshot;
    /// Unmount and exit; Err keeps the mount (e.g. busy) and says why.
    fn shutdown(&self, lazy: bool) -> std::result::Result<(), String>;
}

/// A running control server (its thread ends with the process).
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    busy: Arc<(Mutex<usize>, Condvar)>,
}

impl ControlServer {
    pub fn start(path: &Path, handler: Arc<dyn ControlHandler>) -> Result<ControlServer> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)
            .map_err(|e| Error::io(format!("bind control socket {}", path.display()), e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(format!("chmod {}", path.display()), e))?;
        let busy = Arc::new((Mutex::new(0usize), Condvar::new()));
        let b = busy.clone();
        std::thread::Builder::new()
            .name("fsmount-ctl".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    match conn {
                        Ok(s) => {
                            *b.0.lock() += 1;
                            if let Err(e) = serve_one(s, handler.as_ref()) {
                                tracing::debug!("control connection: {e}");
                            }
                            *b.0.lock() -= 1;
                            b.1.notify_all();
                        }
                        Err(e) => tracing::warn!("control socket accept: {e}"),
                    }
                }
            })
            .map_err(|e| Error::io("spawn control thread", e))?;
        Ok(ControlServer { path: path.to_path_buf(), busy })
    }

    /// Wait (bounded) until no request is being answered, so a process
    /// about to exit still delivers the answer to `shutdown`.
    pub fn drain(&self, timeout: Duration) {
        let (m, cv) = &*self.busy;
        let mut n = m.lock();
        let deadline = std::time::Instant::now() + timeout;
        while *n > 0 {
            if cv.wait_until(&mut n, deadline).timed_out() {
                return;
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve_one(s: UnixStream, h: &dyn ControlHandler) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(s.try_clone()?).take(256).read_line(&mut line)?;
    let mut w = s;
    let answer = match line.trim() {
        "stats" => match toml::to_string(&h.stats()) {
            Ok(t) => format!("ok\n{t}"),
            Err(e) => format!("error encode stats: {e}\n"),
        },
        "metrics" => format!("ok\n{}", h.stats().prometheus()),
        "shutdown" | "shutdown lazy" => match h.shutdown(line.trim().ends_with("lazy")) {
            Ok(()) => "ok\n".to_string(),
            Err(msg) => format!("error {msg}\n"),
        },
        other => format!("error unknown request {other:?}\n"),
    };
    w.write_all(answer.as_bytes())
}

/// Send one request and return the body of an "ok" answer.
pub fn request(path: &Path, req: &str, timeout: Duration) -> Result<String> {
    let mut s = UnixStream::connect(path)
        .map_err(|e| Error::io(format!("connect to {}", path.display()), e))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| Error::io("socket timeout", e))?;
    s.write_all(format!("{req}\n").as_bytes())
        .map_err(|e| Error::io(format!("send to {}", path.display()), e))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| Error::io(format!("read answer from {}", path.display()), e))?;
    if let Some(body) = out.strip_prefix("ok\n") {
        return Ok(body.to_string());
    }
    let msg = out.strip_prefix("error ").unwrap_or(&out).trim().to_string();
    if msg.is_empty() {
        return Err(Error::new(ErrorKind::Io, format!("{}: no answer", path.display())));
    }
    Err(Error::new(ErrorKind::Busy, msg))
}

/// Ask a serving process for its counters.
pub fn fetch_stats(path: &Path) -> Result<Snapshot> {
    let body = request(path, "stats", Duration::from_secs(5))?;
    toml::from_str(&body)
        .map_err(|e| Error::new(ErrorKind::Io, format!("bad stats from {}: {e}", path.display())))
}
