//! Namespace administration of a 0-db server (`chunkstore ns`): NSNEW,
//! NSLIST, NSINFO, NSSET and NSDEL on one connection.
//!
//! With an admin password the connection first proves it with
//! `AUTH SECURE CHALLENGE` / `AUTH SECURE sha1hex("<nonce>:<password>")`,
//! so the password never crosses the wire. A server without an admin
//! password answers AUTH with `-Authentication disabled`: every client is
//! admin there, and the commands are sent without it.
//!
//! Replies are 0-db v2.0.7's (`tests/fixtures/zdb/`); the errors a user can
//! act on (exists, not found, not admin) get their own message and kind.

use std::time::Duration;

use redis::{Cmd, Value};

use super::conn::{Conn, Transport, server_error_text};
use super::unexpected;
use super::zdb::{map_error, secure_hash};
use crate::error::{Error, ErrorKind, Result, invalid};
use crate::url::{Backend, Secret, StoreUrl};

/// An authenticated admin connection to a 0-db server.
pub struct ZdbAdmin {
    conn: Conn,
    /// The server, without a password, for messages.
    name: String,
    timeout: Duration,
}

/// The namespace a `zdb://` or `zdb+unix://` URL names.
pub fn namespace_of(url: &StoreUrl) -> Result<&str> {
    match &url.backend {
        Backend::Zdb { namespace, .. } => Ok(namespace),
        _ => Err(not_zdb(url)),
    }
}

fn not_zdb(url: &StoreUrl) -> Error {
    invalid(format!("{}: not a 0-db URL (zdb:// or zdb+unix://)", url.redacted()))
}

impl ZdbAdmin {
    /// Connect to the server of `url` (its namespace and password are not
    /// used here) and authenticate as admin when `admin` is given.
    pub async fn connect(
        url: &StoreUrl,
        admin: Option<&Secret>,
        timeout: Duration,
    ) -> Result<Self> {
        let Backend::Zdb { addr, .. } = &url.backend else { return Err(not_zdb(url)) };
        let name = url.redacted();
        let conn =
            Conn::connect(addr, timeout).await.map_err(|t| transport_error(&name, "connect", t))?;
        let mut admin_conn = ZdbAdmin { conn, name, timeout };
        if let Some(pw) = admin {
            admin_conn.auth(pw).await?;
        }
        Ok(admin_conn)
    }

    async fn call(&mut self, what: &str, cmd: &Cmd) -> Result<Value> {
        self.conn.call(cmd, self.timeout).await.map_err(|t| transport_error(&self.name, what, t))
    }

    async fn auth(&mut self, pw: &Secret) -> Result<()> {
        let nonce =
            match self.call("AUTH", redis::cmd("AUTH").arg("SECURE").arg("CHALLENGE")).await? {
                Value::SimpleString(n) => n,
                Value::ServerError(e) if server_error_text(&e) == "Authentication disabled" => {
                    return self.auth_disabled();
                }
                other => return Err(self.refused("AUTH SECURE CHALLENGE", other)),
            };
        let hash = secure_hash(&nonce, pw);
        match self.call("AUTH", redis::cmd("AUTH").arg("SECURE").arg(hash)).await? {
            Value::Okay => Ok(()),
            Value::SimpleString(s) if s == "OK" => Ok(()),
            Value::ServerError(e) if server_error_text(&e) == "Authentication disabled" => {
                self.auth_disabled()
            }
            Value::ServerError(e) if server_error_text(&e) == "Access denied" => Err(Error::new(
                ErrorKind::PermissionDenied,
                format!("{}: AUTH: wrong admin password", self.name),
            )),
            other => Err(self.refused("AUTH SECURE", other)),
        }
    }

    /// The server has no admin password: nothing to prove.
    fn auth_disabled(&self) -> Result<()> {
        tracing::info!("{}: the server has no admin password; every client is admin", self.name);
        Ok(())
    }

    fn refused(&self, what: &str, v: Value) -> Error {
        match v {
            Value::ServerError(e) => ns_error(&self.name, what, &server_error_text(&e)),
            other => unexpected(&self.name, what, &other),
        }
    }

    /// Run a command whose success reply is `+OK`.
    async fn ok(&mut self, what: &str, cmd: &Cmd) -> Result<()> {
        match self.call(what, cmd).await? {
            Value::Okay => Ok(()),
            Value::SimpleString(s) if s == "OK" => Ok(()),
            other => Err(self.refused(what, other)),
        }
    }

    /// NSNEW: create an empty namespace.
    pub async fn create(&mut self, ns: &str) -> Result<()> {
        self.ok(&format!("NSNEW {ns:?}"), redis::cmd("NSNEW").arg(ns)).await
    }

    /// NSDEL: remove a namespace and its keys.
    pub async fn delete(&mut self, ns: &str) -> Result<()> {
        self.ok(&format!("NSDEL {ns:?}"), redis::cmd("NSDEL").arg(ns)).await
    }

    /// NSSET: change one property (`maxsize`, `password`, `public`, `worm`,
    /// `mode`, `lock`, `freeze`; see `chunkstore ns set --help`).
    pub async fn set(&mut self, ns: &str, property: &str, value: &str) -> Result<()> {
        let what = format!("NSSET {ns:?} {property}");
        self.ok(&what, redis::cmd("NSSET").arg(ns).arg(property).arg(value)).await
    }

    /// NSLIST: every namespace name, as the server orders them.
    pub async fn list(&mut self) -> Result<Vec<String>> {
        match self.call("NSLIST", &redis::cmd("NSLIST")).await? {
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::BulkString(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
                    other => Err(unexpected(&self.name, "NSLIST", &other)),
                })
                .collect(),
            other => Err(self.refused("NSLIST", other)),
        }
    }

    /// NSINFO: the server's `key: value` text about one namespace.
    pub async fn info(&mut self, ns: &str) -> Result<String> {
        let what = format!("NSINFO {ns:?}");
        match self.call(&what, redis::cmd("NSINFO").arg(ns)).await? {
            Value::BulkString(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
            other => Err(self.refused(&what, other)),
        }
    }
}

fn transport_error(name: &str, what: &str, t: Transport) -> Error {
    let ctx = format!("{name}: {what}: {t}");
    match t {
        Transport::Connect(e) => Error::with_source(ErrorKind::Unavailable, ctx, e),
        Transport::Broken(e) => Error::with_source(ErrorKind::Unavailable, ctx, e),
        Transport::Timeout(_) => Error::new(ErrorKind::Unavailable, ctx),
    }
}

/// The namespace commands' own error replies, then the common ones.
fn ns_error(name: &str, what: &str, text: &str) -> Error {
    let (kind, why) = match text {
        "This namespace is not available" => {
            (ErrorKind::InvalidInput, "the namespace exists already")
        }
        "This namespace doesn't exists" | "Namespace not found" => {
            (ErrorKind::NotFound, "no such namespace")
        }
        "Permission denied" => (
            ErrorKind::PermissionDenied,
            "not admin: give the server's admin password (--admin-file or CHUNKSTORE_ADMIN)",
        ),
        "This name is not allowed" => {
            (ErrorKind::InvalidInput, "the name is not allowed (., .., default, or with /)")
        }
        "Cannot remove default namespace" | "Cannot update default namespace" => {
            (ErrorKind::InvalidInput, "the default namespace cannot be removed or changed")
        }
        "Invalid property" => (ErrorKind::InvalidInput, "the server does not know this property"),
        _ => return map_error(name, what, text),
    };
    Error::new(kind, format!("{name}: {what}: {why} (server said {text:?})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_errors_are_named() {
        let e = ns_error("zdb://h:1/x", "NSNEW \"x\"", "This namespace is not available");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("exists already"), "{e}");
        let e = ns_error("zdb://h:1/x", "NSDEL \"x\"", "This namespace doesn't exists");
        assert_eq!(e.kind(), ErrorKind::NotFound);
        let e = ns_error("zdb://h:1/x", "NSNEW \"x\"", "Permission denied");
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("not admin"), "{e}");
        let e = ns_error("zdb://h:1/x", "NSINFO \"x\"", "Namespace not found");
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }
}
