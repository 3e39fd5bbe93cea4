//! One connection to a RESP server: our own socket (TCP with NODELAY, or a
//! unix socket) under a `redis` crate connection, used for one request at a
//! time by its owner (the pool never shares a connection between requests).

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisConnectionInfo, Value};
use tokio::net::{TcpStream, UnixStream};

use crate::url::NetAddr;

/// Why a request did not produce a reply. Every variant means the
/// connection is no longer trusted and must be dropped.
#[derive(Debug)]
pub(crate) enum Transport {
    /// Could not connect (refused, no route, DNS, missing socket).
    Connect(std::io::Error),
    /// Connected, but the peer did not answer within the timeout.
    Timeout(Duration),
    /// The connection broke or the reply could not be parsed.
    Broken(redis::RedisError),
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Connect(e) => write!(f, "cannot connect: {e}"),
            Transport::Timeout(t) => write!(f, "no reply within {t:?}"),
            Transport::Broken(e) => write!(f, "connection failed: {e}"),
        }
    }
}

pub(crate) struct Conn {
    inner: MultiplexedConnection,
}

impl Conn {
    /// Open a socket to `addr` within `timeout`. The caller runs the session
    /// setup (AUTH / SELECT) on it before use.
    pub(crate) async fn connect(addr: &NetAddr, timeout: Duration) -> Result<Conn, Transport> {
        let connect = async {
            match addr {
                NetAddr::Tcp { host, port } => {
                    let s = TcpStream::connect((host.as_str(), *port))
                        .await
                        .map_err(Transport::Connect)?;
                    // Our side sends each request in one go; do not let Nagle
                    // hold the tail of a large value back.
                    s.set_nodelay(true).map_err(Transport::Connect)?;
                    Self::wrap(s).await
                }
                NetAddr::Unix(path) => {
                    let s = UnixStream::connect(path).await.map_err(Transport::Connect)?;
                    Self::wrap(s).await
                }
            }
        };
        tokio::time::timeout(timeout, connect).await.map_err(|_| Transport::Timeout(timeout))?
    }

    async fn wrap<S>(stream: S) -> Result<Conn, Transport>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        // No password, db 0, RESP2, no CLIENT SETINFO: the redis crate sends
        // nothing on its own, so the session setup is ours alone (0-db knows
        // neither HELLO nor CLIENT).
        let info = RedisConnectionInfo::default().set_skip_set_lib_name();
        // Timeouts are applied per request by the caller.
        let cfg = AsyncConnectionConfig::new().set_response_timeout(None);
        let (inner, driver) = MultiplexedConnection::new_with_config(&info, stream, cfg)
            .await
            .map_err(Transport::Broken)?;
        // The driver ends when `inner` (its only sender) is dropped.
        tokio::spawn(driver);
        Ok(Conn { inner })
    }

    /// Send one command and wait for its reply. Server error replies come
    /// back as `Ok(Value::ServerError)`.
    pub(crate) async fn call(&mut self, cmd: &Cmd, timeout: Duration) -> Result<Value, Transport> {
        match tokio::time::timeout(timeout, self.inner.send_packed_command(cmd)).await {
            Err(_) => Err(Transport::Timeout(timeout)),
            Ok(Err(e)) => Err(Transport::Broken(e)),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// Send several commands in one write and collect their replies (only
    /// used against servers that set TCP_NODELAY, i.e. Redis, or over unix
    /// sockets).
    pub(crate) async fn call_many(
        &mut self,
        pipe: &Pipeline,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<Value>, Transport> {
        match tokio::time::timeout(timeout, self.inner.send_packed_commands(pipe, 0, count)).await {
            Err(_) => Err(Transport::Timeout(timeout)),
            Ok(Err(e)) => Err(Transport::Broken(e)),
            Ok(Ok(v)) => Ok(v),
        }
    }
}

/// The text of a server error reply, as the server wrote it (without `-`).
pub(crate) fn server_error_text(e: &redis::ServerError) -> String {
    match e.details() {
        Some(d) => format!("{} {d}", e.code()),
        None => e.code().to_string(),
    }
}
