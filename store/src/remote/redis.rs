//! Plain Redis wire specifics: `AUTH password` and `SELECT db` per
//! connection; `SET id blob NX` so a re-put of an existing id changes
//! nothing (`+OK` when stored, nil when the key was there).

use std::time::Duration;

use async_trait::async_trait;
use redis::{Cmd, Value};

use super::conn::{Conn, server_error_text};
use super::pool::{Session, SetupResult};
use super::unexpected;
use crate::error::{Error, ErrorKind};
use crate::url::Secret;

pub(crate) struct RedisSession {
    pub(crate) name: String,
    pub(crate) db: u32,
    pub(crate) password: Option<Secret>,
}

#[async_trait]
impl Session for RedisSession {
    async fn setup(&self, conn: &mut Conn, timeout: Duration) -> SetupResult {
        let mut steps: Vec<(&str, Cmd)> = Vec::new();
        if let Some(pw) = &self.password {
            // Redis has no challenge form: AUTH sends the password as is.
            let mut c = redis::cmd("AUTH");
            c.arg(pw.expose());
            steps.push(("AUTH", c));
        }
        if self.db != 0 {
            let mut c = redis::cmd("SELECT");
            c.arg(self.db);
            steps.push(("SELECT", c));
        }
        for (what, cmd) in &steps {
            match conn.call(cmd, timeout).await {
                Err(t) => return SetupResult::Transport(t),
                Ok(Value::Okay) => {}
                Ok(Value::ServerError(e)) => {
                    return SetupResult::Refused(map_error(
                        &self.name,
                        what,
                        &server_error_text(&e),
                    ));
                }
                Ok(other) => return SetupResult::Refused(unexpected(&self.name, what, &other)),
            }
        }
        SetupResult::Ready
    }
}

/// One page of `SCAN cursor COUNT n`: the next cursor (0 once the scan is
/// complete) and the keys of this page.
pub(crate) fn scan_page(name: &str, v: Value) -> crate::error::Result<(u64, Vec<Vec<u8>>)> {
    let bad = |v: &Value| unexpected(name, "SCAN", v);
    match v {
        Value::ServerError(e) => Err(map_error(name, "SCAN", &server_error_text(&e))),
        Value::Array(mut parts) if parts.len() == 2 => {
            let (cursor, keys) = match (parts.swap_remove(0), parts.swap_remove(0)) {
                (Value::BulkString(c), Value::Array(k)) => (c, k),
                (Value::BulkString(_), other) | (other, _) => return Err(bad(&other)),
            };
            let cursor = std::str::from_utf8(&cursor)
                .ok()
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| bad(&Value::BulkString(cursor.clone())))?;
            let keys = keys
                .into_iter()
                .map(|k| match k {
                    Value::BulkString(k) => Ok(k),
                    other => Err(bad(&other)),
                })
                .collect::<crate::error::Result<_>>()?;
            Ok((cursor, keys))
        }
        other => Err(bad(&other)),
    }
}

/// Map a Redis error reply to an error kind with an actionable message.
pub(crate) fn map_error(name: &str, what: &str, text: &str) -> Error {
    let code = text.split(' ').next().unwrap_or("");
    let (kind, why) = match code {
        "WRONGPASS" => (ErrorKind::PermissionDenied, "wrong password"),
        "NOAUTH" => (ErrorKind::PermissionDenied, "the server needs a password in the URL"),
        "NOPERM" => (ErrorKind::PermissionDenied, "the user lacks permission"),
        "READONLY" => (ErrorKind::PermissionDenied, "the server is a read-only replica"),
        "OOM" => (ErrorKind::NoSpace, "the server is out of memory (maxmemory)"),
        "LOADING" | "BUSY" | "MASTERDOWN" | "TRYAGAIN" => {
            (ErrorKind::Unavailable, "the server is not ready")
        }
        _ if text.contains("invalid password") => (ErrorKind::PermissionDenied, "wrong password"),
        _ if text.contains("without any password configured") => {
            (ErrorKind::PermissionDenied, "the server has no password; remove it from the URL")
        }
        _ if text.contains("DB index is out of range") => {
            (ErrorKind::InvalidInput, "the database number is out of range")
        }
        _ => (ErrorKind::Protocol, "unexpected error reply"),
    };
    Error::new(kind, format!("{name}: {what}: {why} (server said {text:?})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds() {
        let e = map_error(
            "redis://h:1/0",
            "AUTH",
            "WRONGPASS invalid username-password pair or user is disabled.",
        );
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("wrong password"));
        let e = map_error("redis://h:1/0", "SET", "OOM command not allowed");
        assert_eq!(e.kind(), ErrorKind::NoSpace);
    }
}
