//! 0-db wire specifics: the session setup and what each reply means, as
//! recorded from a real 0-db v2.0.7 (`tests/fixtures/zdb/`).
//!
//! * `SET k v` replies the key; nil means the stored value was already
//!   byte-identical (nothing written) — both are success.
//! * `GET` nil = missing; `EXISTS` `:1`/`:0`; `DEL` `+OK`, or
//!   `-Key not found` for a missing key.
//! * `SELECT ns password` opens a namespace; `AUTH SECURE CHALLENGE` returns
//!   `+<nonce>` and `SELECT ns SECURE sha1hex("<nonce>:<password>")` then
//!   proves the password without sending it. A server started without
//!   `--admin` answers every AUTH with `-Authentication disabled`; there the
//!   plain form is the only one. It sends the password in clear, so it is
//!   used only when the URL allows it (`?plaintext-auth=1`); otherwise
//!   opening fails and says so.

use std::time::Duration;

use async_trait::async_trait;
use redis::{Cmd, Value};
use sha1::{Digest, Sha1};

use super::conn::{Conn, server_error_text};
use super::pool::{Session, SetupResult};
use super::unexpected;
use crate::chunk::ChunkId;
use crate::error::{Error, ErrorKind, Result};
use crate::url::Secret;

pub(crate) struct ZdbSession {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) password: Option<Secret>,
    /// `?plaintext-auth=1`: fall back to `SELECT ns password`.
    pub(crate) plaintext_auth: bool,
}

#[async_trait]
impl Session for ZdbSession {
    async fn setup(&self, conn: &mut Conn, timeout: Duration) -> SetupResult {
        let select = match &self.password {
            None => select_plain(&self.namespace, None),
            Some(pw) => match conn.call(&challenge_cmd(), timeout).await {
                Err(t) => return SetupResult::Transport(t),
                Ok(Value::SimpleString(nonce)) if valid_nonce(&nonce) => {
                    select_secure(&self.namespace, &nonce, pw)
                }
                Ok(Value::ServerError(e)) if self.plaintext_auth => {
                    // No --admin on the server: AUTH is disabled as a whole,
                    // SELECT with the password is the only way in.
                    tracing::debug!(
                        "{}: secure authentication not available ({}), using SELECT with password (plaintext-auth=1)",
                        self.name,
                        server_error_text(&e)
                    );
                    select_plain(&self.namespace, Some(pw))
                }
                Ok(Value::ServerError(e)) => {
                    return SetupResult::Refused(no_challenge(&self.name, &server_error_text(&e)));
                }
                Ok(other) => {
                    return SetupResult::Refused(unexpected(
                        &self.name,
                        "AUTH SECURE CHALLENGE",
                        &other,
                    ));
                }
            },
        };
        match conn.call(&select, timeout).await {
            Err(t) => SetupResult::Transport(t),
            Ok(Value::Okay) => SetupResult::Ready,
            Ok(Value::ServerError(e)) => {
                let what = format!("SELECT namespace {:?}", self.namespace);
                SetupResult::Refused(map_error(&self.name, &what, &server_error_text(&e)))
            }
            Ok(other) => SetupResult::Refused(unexpected(&self.name, "SELECT", &other)),
        }
    }

    /// After these replies 0-db closes the connection, or leaves the bad
    /// request unconsumed so every later request gets the same error.
    fn keeps_connection(&self, error: &str) -> bool {
        !(error == "Payload too big"
            || error.starts_with("Malformed")
            || error.starts_with("Your active namespace is not available")
            || error == "Missing arguments"
            || error == "Too many arguments")
    }
}

/// The server offers no challenge: the password would go in clear.
fn no_challenge(name: &str, reply: &str) -> Error {
    Error::new(
        ErrorKind::PermissionDenied,
        format!(
            "{name}: the server offers no secure authentication (AUTH SECURE CHALLENGE: {reply:?}); \
             not sending the password in clear. Start the server with an admin password, or add \
             ?plaintext-auth=1 to the URL (&plaintext-auth=1 for zdb+unix) to allow it"
        ),
    )
}

fn challenge_cmd() -> Cmd {
    let mut c = redis::cmd("AUTH");
    c.arg("SECURE").arg("CHALLENGE");
    c
}

/// 0-db nonces are 16 lower-case hex digits; accept any short token
/// without the `:` that separates it from the password in the hash.
fn valid_nonce(n: &str) -> bool {
    !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn select_plain(ns: &str, pw: Option<&Secret>) -> Cmd {
    let mut c = redis::cmd("SELECT");
    c.arg(ns);
    if let Some(pw) = pw {
        c.arg(pw.expose());
    }
    c
}

fn select_secure(ns: &str, nonce: &str, pw: &Secret) -> Cmd {
    let mut c = redis::cmd("SELECT");
    c.arg(ns).arg("SECURE").arg(secure_hash(nonce, pw));
    c
}

/// Lower-case hex of `sha1("<nonce>:<password>")` (0-db compares it
/// case-sensitively).
pub(crate) fn secure_hash(nonce: &str, pw: &Secret) -> String {
    let mut h = Sha1::new();
    h.update(nonce.as_bytes());
    h.update(b":");
    h.update(pw.expose().as_bytes());
    hex::encode(h.finalize())
}

/// What a `SET id blob` reply means.
pub(crate) enum SetOutcome {
    /// Stored now, or already stored byte-identical (nil reply).
    Stored,
    /// Refused because the namespace is write-once and the key exists.
    Worm,
}

pub(crate) fn set_reply(name: &str, id: &ChunkId, v: Value) -> Result<SetOutcome> {
    match v {
        Value::BulkString(k) if k == id.as_bytes() => Ok(SetOutcome::Stored),
        Value::Nil => Ok(SetOutcome::Stored),
        Value::ServerError(e) => {
            let text = server_error_text(&e);
            if text.starts_with("Namespace is protected by worm mode") {
                return Ok(SetOutcome::Worm);
            }
            Err(map_error(name, &format!("SET chunk {id}"), &text))
        }
        other => Err(unexpected(name, &format!("SET chunk {id}"), &other)),
    }
}

pub(crate) fn del_reply(name: &str, id: &ChunkId, v: Value) -> Result<bool> {
    match v {
        Value::Okay => Ok(true),
        Value::ServerError(e) => {
            let text = server_error_text(&e);
            if text == "Key not found" {
                return Ok(false);
            }
            Err(map_error(name, &format!("DEL chunk {id}"), &text))
        }
        other => Err(unexpected(name, &format!("DEL chunk {id}"), &other)),
    }
}

/// A SCAN page: the cursor for the next page and the keys of this one.
pub(crate) type ScanPage = (Vec<u8>, Vec<Vec<u8>>);

/// One page of `SCAN [cursor]`; `None` once 0-db answers "No more data"
/// (its end marker).
pub(crate) fn scan_page(name: &str, v: Value) -> Result<Option<ScanPage>> {
    let bad = |v: &Value| unexpected(name, "SCAN", v);
    match v {
        Value::ServerError(e) => {
            let text = server_error_text(&e);
            if text == "No more data" {
                return Ok(None);
            }
            Err(map_error(name, "SCAN", &text))
        }
        Value::Array(mut parts) if parts.len() == 2 => {
            let (cursor, entries) = match (parts.swap_remove(0), parts.swap_remove(0)) {
                (Value::BulkString(c), Value::Array(e)) => (c, e),
                (Value::BulkString(_), other) | (other, _) => return Err(bad(&other)),
            };
            let mut keys = Vec::with_capacity(entries.len());
            for e in entries {
                // Each entry is [key, :length, :timestamp]; only the key is used.
                match e {
                    Value::Array(mut f) if f.len() == 3 => match f.swap_remove(0) {
                        Value::BulkString(k) => keys.push(k),
                        other => return Err(bad(&other)),
                    },
                    other => return Err(bad(&other)),
                }
            }
            Ok(Some((cursor, keys)))
        }
        other => Err(bad(&other)),
    }
}

/// Parse `entries` and `data_size_bytes` out of an NSINFO text.
pub(crate) fn nsinfo_counts(text: &str) -> (Option<u64>, Option<u64>) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
            .and_then(|v| v.trim().parse().ok())
    };
    (field("entries"), field("data_size_bytes"))
}

/// Map a 0-db error reply to an error kind with a message a user can act on.
pub(crate) fn map_error(name: &str, what: &str, text: &str) -> Error {
    let (kind, why) = match text {
        "Access denied" => (ErrorKind::PermissionDenied, "wrong password"),
        "Namespace protected and private" => (
            ErrorKind::PermissionDenied,
            "the namespace is private and needs a password in the URL",
        ),
        "Namespace is in read-only mode" => (
            ErrorKind::PermissionDenied,
            "the namespace is read-only for this connection (public namespace opened without its password)",
        ),
        "Namespace not found" => {
            (ErrorKind::NotFound, "the namespace does not exist on the server")
        }
        "No space left on this namespace" => {
            (ErrorKind::NoSpace, "the namespace is full (its maxsize is reached)")
        }
        "Namespace is protected by worm mode" => {
            (ErrorKind::PermissionDenied, "the namespace is write-once (worm)")
        }
        "Permission denied" => (ErrorKind::PermissionDenied, "needs admin rights"),
        "Payload too big" => (ErrorKind::InvalidInput, "value over the server's 8 MiB limit"),
        t if t.starts_with("Namespace is temporarily") => {
            (ErrorKind::Unavailable, "the namespace is temporarily locked or frozen")
        }
        t if t.starts_with("Your active namespace is not available anymore") => {
            (ErrorKind::NotFound, "the namespace was removed")
        }
        _ => (ErrorKind::Protocol, "unexpected error reply"),
    };
    Error::new(kind, format!("{name}: {what}: {why} (server said {text:?})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_hash_matches_the_recorded_exchange() {
        // Fixture steps 286/288: nonce b8be68e093a6d53a, password "nspw",
        // the real server accepted this hash.
        let h = secure_hash("b8be68e093a6d53a", &Secret::new("nspw"));
        assert_eq!(h, "8651681638f1b823cb3d1446b7c50e477d020f4d");
    }

    #[test]
    fn scan_pages() {
        let entry = |k: &[u8]| {
            Value::Array(vec![Value::BulkString(k.to_vec()), Value::Int(3), Value::Int(9)])
        };
        let page = Value::Array(vec![
            Value::BulkString(b"cur".to_vec()),
            Value::Array(vec![entry(b"k1"), entry(b"k2")]),
        ]);
        let (cur, keys) = scan_page("z", page).unwrap().unwrap();
        assert_eq!((cur, keys), (b"cur".to_vec(), vec![b"k1".to_vec(), b"k2".to_vec()]));
        assert!(scan_page("z", Value::Int(1)).is_err());
        let short =
            Value::Array(vec![Value::BulkString(b"c".to_vec()), Value::Array(vec![Value::Int(1)])]);
        assert!(scan_page("z", short).is_err());
    }

    #[test]
    fn nsinfo_fields() {
        let t = "# namespace\nname: imgs\nentries: 2\npublic: no\ndata_size_bytes: 77\n";
        assert_eq!(nsinfo_counts(t), (Some(2), Some(77)));
    }

    #[test]
    fn error_kinds() {
        let e = map_error("zdb://h:1/ns", "SET chunk x", "No space left on this namespace");
        assert_eq!(e.kind(), ErrorKind::NoSpace);
        assert!(e.to_string().starts_with("zdb://h:1/ns: SET chunk x: the namespace is full"));
        let e = map_error("zdb://h:1/ns", "SELECT", "Access denied");
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        let e = map_error("zdb://h:1/ns", "GET", "Something new");
        assert_eq!(e.kind(), ErrorKind::Protocol);
    }
}
