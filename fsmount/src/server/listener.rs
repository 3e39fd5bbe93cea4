//! Accepting requests on the server socket: each connection gets a thread
//! that reads the request, hands it to the server's event loop and writes
//! the answer back. Requests run one at a time in the loop (mounts and
//! unmounts change shared state); reading and writing never block it.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Sender, channel};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::Event;
use super::protocol::{Answer, MAX_REQUEST, Request};
use crate::error::{Error, Result};

/// The bound socket; removed on drop.
#[derive(Debug)]
pub struct Listener {
    path: PathBuf,
    /// Identity of the socket file we bound: a later server may bind the
    /// same path, and its socket must not be removed by us.
    ident: (u64, u64),
    busy: Arc<(Mutex<usize>, Condvar)>,
}

impl Listener {
    /// Bind `path` (a stale file is replaced: the caller checked that no
    /// server answers there, under the state lock) and serve in threads.
    pub fn start(path: &Path, events: Sender<Event>) -> Result<Listener> {
        let _ = std::fs::remove_file(path);
        // Born 0600 in a 0700 directory; every connection's peer is
        // checked with SO_PEERCRED as well (see `serve`).
        let l = crate::sys::bind_private(path)
            .map_err(|e| Error::io(format!("bind server socket {}", path.display()), e))?;
        let md = std::fs::symlink_metadata(path)
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
        let ident = (md.dev(), md.ino());
        let busy = Arc::new((Mutex::new(0usize), Condvar::new()));
        let b = busy.clone();
        let events = Mutex::new(events);
        std::thread::Builder::new()
            .name("fsmount-listen".into())
            .spawn(move || {
                for conn in l.incoming() {
                    let Ok(conn) = conn else { continue };
                    let tx = events.lock().clone();
                    let b = b.clone();
                    *b.0.lock() += 1;
                    let spawned =
                        std::thread::Builder::new().name("fsmount-req".into()).spawn(move || {
                            if let Err(e) = serve(conn, &tx) {
                                tracing::debug!("server connection: {e}");
                            }
                            *b.0.lock() -= 1;
                            b.1.notify_all();
                        });
                    if spawned.is_err() {
                        tracing::warn!("cannot start a request thread");
                    }
                }
            })
            .map_err(|e| Error::io("spawn listener thread", e))?;
        Ok(Listener { path: path.to_path_buf(), ident, busy })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Remove the socket file if it still is ours (new connections then
    /// fail, and the next fsmount starts a new server).
    pub fn unlink(&self) {
        if let Ok(md) = std::fs::metadata(&self.path) {
            if (md.dev(), md.ino()) == self.ident {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }

    /// No answer is being prepared or written.
    pub fn idle(&self) -> bool {
        *self.busy.0.lock() == 0
    }

    /// Wait (bounded) until every answer in progress was written, so an
    /// exiting server still delivers the answer to its last request.
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
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.unlink();
    }
}

fn serve(s: UnixStream, events: &Sender<Event>) -> std::io::Result<()> {
    // The socket sits in a 0700 directory and is 0600; the peer's
    // credentials are checked too, whatever the file modes became.
    let uid = crate::sys::peer_uid(&s)?;
    if !crate::sys::peer_allowed(uid) {
        tracing::warn!("refused a request from uid {uid}");
        let refusal =
            Answer::Error(format!("permission denied: uid {uid} may not use this socket"));
        return (&s).write_all(refusal.encode().as_bytes());
    }
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut text = String::new();
    (&s).take(MAX_REQUEST).read_to_string(&mut text)?;
    let answer = match Request::decode(&text) {
        Err(e) => Answer::Error(e.to_string()),
        // Answered here, not in the loop: "is a server alive?" must not
        // wait behind a long mount setup.
        Ok(Request::Ping) => Answer::Ok("pong".into()),
        Ok(req) => {
            let (tx, rx) = channel();
            if events.send(Event::Request { req, reply: tx }).is_err() {
                Answer::Retry
            } else {
                rx.recv().unwrap_or(Answer::Retry)
            }
        }
    };
    (&s).write_all(answer.encode().as_bytes())
}
