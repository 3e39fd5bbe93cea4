//! The wire format of the server socket (RUN/servers/<server-id>.sock).
//!
//! One request per connection: the client writes a TOML document (an
//! [`Request`], tagged by `op`) and shuts its write side; the server
//! answers one of
//!
//! ```text
//! ok\n<body>        done; body depends on the request
//! error <message>\n refused or failed; nothing changed when refused
//! retry\n           the server is exiting: start a new one
//! ```
//!
//! The socket is 0600 in a 0700 directory, and both ends check the other's
//! uid (SO_PEERCRED: root or the same uid): every request is a privileged
//! action.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result, invalid};
use crate::lifecycle::MountSpec;

/// Largest request accepted (a mount spec is a few hundred bytes).
pub const MAX_REQUEST: u64 = 1 << 20;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Set up one more mount in this server.
    Mount {
        spec: MountSpec,
    },
    /// Unmount one of its mounts.
    Umount {
        mountpoint: PathBuf,
        lazy: bool,
    },
    /// Counters of one mount (TOML of a stats `Snapshot`).
    Stats {
        mountpoint: PathBuf,
    },
    /// Prometheus text of every mount.
    Metrics,
    Ping,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Ok(String),
    Error(String),
    Retry,
}

impl Request {
    pub fn encode(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| {
            Error::with_source(ErrorKind::InvalidInput, "encode request (paths must be UTF-8)", e)
        })
    }

    pub fn decode(text: &str) -> Result<Request> {
        toml::from_str(text).map_err(|e| invalid(format!("bad request: {e}")))
    }
}

impl Answer {
    pub fn encode(&self) -> String {
        match self {
            Answer::Ok(body) => format!("ok\n{body}"),
            Answer::Error(msg) => format!("error {}\n", msg.replace('\n', " ")),
            Answer::Retry => "retry\n".to_string(),
        }
    }

    pub fn decode(text: &str) -> Answer {
        if let Some(body) = text.strip_prefix("ok\n") {
            return Answer::Ok(body.to_string());
        }
        if text == "retry\n" {
            return Answer::Retry;
        }
        match text.strip_prefix("error ") {
            Some(m) => Answer::Error(m.trim_end().to_string()),
            None if text.is_empty() => Answer::Error("the server closed without answering".into()),
            None => Answer::Error(format!("unexpected answer {:?}", text.lines().next())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let r = Request::Umount { mountpoint: PathBuf::from("/mnt/a b"), lazy: true };
        assert_eq!(Request::decode(&r.encode().unwrap()).unwrap(), r);
        assert_eq!(Request::decode(&Request::Metrics.encode().unwrap()).unwrap(), Request::Metrics);
        assert!(Request::decode("op = \"explode\"").is_err());
        for a in [Answer::Ok("x\ny".into()), Answer::Error("bad".into()), Answer::Retry] {
            assert_eq!(Answer::decode(&a.encode()), a);
        }
        assert_eq!(
            Answer::decode(&Answer::Error("two\nlines".into()).encode()),
            Answer::Error("two lines".into())
        );
        assert!(matches!(Answer::decode(""), Answer::Error(_)));
    }
}
