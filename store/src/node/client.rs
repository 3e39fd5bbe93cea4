//! A client's side of the socket: a small pool of blocking connections to
//! the owner, each carrying one request at a time.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use parking_lot::Mutex;

use super::frame;
use super::locate::OwnerRecord;
use super::proto::{HELLO_LEN, Hello, MAX_REPLY, Op, Reply, VERSION, decode_reply};
use crate::error::{Error, ErrorKind, Result};

/// Idle connections kept for reuse.
const MAX_IDLE: usize = 16;
/// How long the owner may take to answer the hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call did not get an answer from the owner.
#[derive(Debug)]
pub(crate) enum Fail {
    /// The owner is gone or going (connection refused, reset, cut): find
    /// the next owner and send the request again.
    Gone(std::io::Error),
    /// The owner cannot be used by this build (another protocol version, a
    /// peer of another user, malformed answers): retrying will not help.
    Refused(Error),
}

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Self {
        Fail::Gone(e)
    }
}

pub(crate) struct Client {
    name: String,
    pub(crate) owner: OwnerRecord,
    idle: Mutex<Vec<UnixStream>>,
}

impl Client {
    /// Connect to the owner `rec` names (one connection, kept idle).
    pub(crate) fn connect(name: &str, rec: OwnerRecord) -> std::result::Result<Client, Fail> {
        let c = Client { name: name.to_string(), owner: rec, idle: Mutex::new(Vec::new()) };
        let s = c.dial()?;
        c.idle.lock().push(s);
        Ok(c)
    }

    fn dial(&self) -> std::result::Result<UnixStream, Fail> {
        let mut s = UnixStream::connect(&self.owner.socket)?;
        let uid = frame::peer_uid(&s)?;
        if !frame::trusted_uid(uid) {
            return Err(Fail::Refused(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "{}: the socket {} is served by uid {uid}, not by us or root",
                    self.name,
                    self.owner.socket.display()
                ),
            )));
        }
        s.set_read_timeout(Some(HELLO_TIMEOUT))?;
        s.write_all(&Hello::ours().encode())?;
        let mut b = [0u8; HELLO_LEN];
        s.read_exact(&mut b)?;
        let theirs = Hello::decode(&b).map_err(|why| self.refused(ErrorKind::Protocol, &why))?;
        if theirs.version != VERSION {
            return Err(self.refused(
                ErrorKind::Protocol,
                &format!(
                    "the store's owner (pid {}) speaks node store protocol {}, this zosfs speaks {VERSION}: \
                     run the same zosfs version on the node (restart the owner to upgrade)",
                    theirs.pid, theirs.version
                ),
            ));
        }
        s.set_read_timeout(None)?;
        Ok(s)
    }

    fn refused(&self, kind: ErrorKind, why: &str) -> Fail {
        Fail::Refused(Error::new(kind, format!("{}: {why}", self.name)))
    }

    /// Send `op` and wait for the answer (blocking).
    pub(crate) fn call(&self, op: &Op) -> std::result::Result<Result<Reply>, Fail> {
        let pooled = self.idle.lock().pop();
        let mut s = match pooled {
            Some(s) => s,
            None => self.dial()?,
        };
        let (head, tail) = op.encode();
        frame::write(&mut s, &head, tail.as_ref())?;
        let body = frame::read(&mut s, MAX_REPLY)?;
        let answer =
            decode_reply(op, body).map_err(|why| self.refused(ErrorKind::Protocol, &why))?;
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE {
            idle.push(s);
        }
        Ok(answer)
    }

    pub(crate) fn socket(&self) -> PathBuf {
        self.owner.socket.clone()
    }
}
