//! Talking to a server from another fsmount process (`mount` joining a
//! running server, `umount`, `stats`, `list`).

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::protocol::{Answer, Request};
use crate::error::{Error, ErrorKind, Result};
use crate::stats::Snapshot;

/// Send one request. Err(NotFound) when no server listens there.
pub fn call(socket: &Path, req: &Request, timeout: Duration) -> Result<Answer> {
    let mut s = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ECONNREFUSED)) => {
            return Err(Error::with_source(
                ErrorKind::NotFound,
                format!("no fsmount server at {}", socket.display()),
                e,
            ));
        }
        Err(e) => return Err(Error::io(format!("connect to {}", socket.display()), e)),
    };
    // Talk only to a server of root or of our own uid.
    let uid = crate::sys::peer_uid(&s).map_err(|e| Error::io("SO_PEERCRED", e))?;
    if !crate::sys::peer_allowed(uid) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{} is served by uid {uid}; refusing to use it", socket.display()),
        ));
    }
    let text = req.encode()?;
    s.set_read_timeout(Some(timeout)).map_err(|e| Error::io("socket timeout", e))?;
    s.write_all(text.as_bytes())
        .and_then(|_| s.shutdown(Shutdown::Write))
        .map_err(|e| Error::io(format!("send to {}", socket.display()), e))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| Error::io(format!("read the answer of {}", socket.display()), e))?;
    Ok(Answer::decode(&out))
}

/// `call` for requests whose error is final: Ok body or Err(Busy, message).
pub fn call_ok(socket: &Path, req: &Request, timeout: Duration) -> Result<String> {
    match call(socket, req, timeout)? {
        Answer::Ok(body) => Ok(body),
        Answer::Error(msg) => Err(Error::new(ErrorKind::Busy, msg)),
        Answer::Retry => Err(Error::new(ErrorKind::NotFound, "the fsmount server is exiting")),
    }
}

/// Counters of one mount.
pub fn fetch_stats(socket: &Path, mountpoint: &Path) -> Result<Snapshot> {
    let req = Request::Stats { mountpoint: mountpoint.to_path_buf() };
    let body = call_ok(socket, &req, Duration::from_secs(10))?;
    toml::from_str(&body)
        .map_err(|e| Error::new(ErrorKind::Io, format!("bad stats from {}: {e}", socket.display())))
}
