//! A pool of connections to one server, one request in flight per
//! connection.
//!
//! 0-db does not set TCP_NODELAY, so several requests pipelined on one
//! connection wait for delayed ACKs between replies; instead every
//! concurrent request gets its own connection. A semaphore bounds the
//! connections (`pool_size`); idle ones are kept for reuse.
//!
//! Retries: a request that fails in transport (cannot connect, timeout,
//! broken connection) is retried on a fresh connection with exponential
//! backoff, up to `attempts` tries in all. A reply from the server, even an
//! error reply, is never retried: it is the server's answer.

use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::{Cmd, Pipeline, Value};
use tokio::sync::Semaphore;

use super::conn::{Conn, Transport, server_error_text};
use crate::error::{Error, ErrorKind, Result};
use crate::url::NetAddr;

/// The session setup (AUTH / SELECT) every new connection runs before it
/// serves requests.
#[async_trait]
pub(crate) trait Session: Send + Sync + 'static {
    async fn setup(&self, conn: &mut Conn, timeout: Duration) -> SetupResult;

    /// Whether a connection that got this error reply is still usable
    /// (some servers close or wedge a connection after certain errors).
    fn keeps_connection(&self, _error: &str) -> bool {
        true
    }
}

/// A transport failure during setup is retried like any other; `Refused`
/// (wrong password, missing namespace) is final.
pub(crate) enum SetupResult {
    Ready,
    Transport(Transport),
    Refused(Error),
}

/// First retry delay; doubles per attempt up to [`BACKOFF_MAX`].
const BACKOFF_BASE: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

pub(crate) struct Pool {
    addr: NetAddr,
    /// Redacted URL, for messages.
    name: String,
    timeout: Duration,
    attempts: u32,
    idle: Mutex<Vec<Conn>>,
    slots: Semaphore,
    session: Box<dyn Session>,
}

impl Pool {
    pub(crate) fn new(
        addr: NetAddr,
        name: String,
        opts: &crate::backend::OpenOptions,
        session: Box<dyn Session>,
    ) -> Pool {
        let size = opts.pool_size.max(1);
        Pool {
            addr,
            name,
            timeout: opts.timeout,
            attempts: opts.attempts.max(1),
            idle: Mutex::new(Vec::with_capacity(size)),
            slots: Semaphore::new(size),
            session,
        }
    }

    /// Send one command; `what` names the operation for messages.
    pub(crate) async fn query(&self, what: &str, cmd: &Cmd) -> Result<Value> {
        let mut replies = self.send(what, Request::One(cmd), self.attempts).await?;
        Ok(replies.pop().unwrap_or(Value::Nil))
    }

    /// Like [`query`](Self::query) with a single attempt (probes at open).
    pub(crate) async fn query_once(&self, what: &str, cmd: &Cmd) -> Result<Value> {
        let mut replies = self.send(what, Request::One(cmd), 1).await?;
        Ok(replies.pop().unwrap_or(Value::Nil))
    }

    /// Send several commands in one write (servers with NODELAY only).
    pub(crate) async fn query_many(
        &self,
        what: &str,
        pipe: &Pipeline,
        count: usize,
    ) -> Result<Vec<Value>> {
        self.send(what, Request::Many(pipe, count), self.attempts).await
    }

    async fn send(&self, what: &str, req: Request<'_>, attempts: u32) -> Result<Vec<Value>> {
        let _slot = self.slots.acquire().await.expect("pool semaphore is never closed");
        let mut last = None;
        let mut attempt = 0;
        // An idle connection the server closed meanwhile (restart, idle
        // timeout) costs no attempt, once per request.
        let mut stale_forgiven = false;
        while attempt < attempts {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            let (mut conn, reused) = match self.checkout().await {
                Ok(c) => c,
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Transport(t)) => {
                    tracing::debug!("{}: {what}: attempt {}: {t}", self.name, attempt + 1);
                    last = Some(t);
                    attempt += 1;
                    continue;
                }
            };
            let sent = match req {
                Request::One(cmd) => conn.call(cmd, self.timeout).await.map(|v| vec![v]),
                Request::Many(pipe, n) => conn.call_many(pipe, n, self.timeout).await,
            };
            match sent {
                Ok(replies) => {
                    let keep = replies.iter().all(|v| match v {
                        Value::ServerError(e) => {
                            self.session.keeps_connection(&server_error_text(e))
                        }
                        _ => true,
                    });
                    if keep {
                        self.idle.lock().push(conn);
                    }
                    return Ok(replies);
                }
                Err(t) => {
                    tracing::debug!("{}: {what}: attempt {}: {t}", self.name, attempt + 1);
                    if reused && !stale_forgiven && matches!(t, Transport::Broken(_)) {
                        // The other idle connections are likely stale too.
                        self.idle.lock().clear();
                        stale_forgiven = true;
                    } else {
                        attempt += 1;
                    }
                    last = Some(t);
                }
            }
        }
        let t = last.expect("at least one attempt ran");
        Err(self.unavailable(what, t, attempts))
    }

    /// An idle connection (reused: true) or a new one with its session set up.
    async fn checkout(&self) -> Result<(Conn, bool), Failure> {
        if let Some(c) = self.idle.lock().pop() {
            return Ok((c, true));
        }
        let mut conn = Conn::connect(&self.addr, self.timeout).await.map_err(Failure::Transport)?;
        match self.session.setup(&mut conn, self.timeout).await {
            SetupResult::Ready => Ok((conn, false)),
            SetupResult::Transport(t) => Err(Failure::Transport(t)),
            SetupResult::Refused(e) => Err(Failure::Final(e)),
        }
    }

    /// The cause of a transport failure is its source, not in the context.
    fn unavailable(&self, what: &str, t: Transport, tries: u32) -> Error {
        let ctx = |how: &dyn std::fmt::Display| {
            format!("{}: {what}: {how} (after {tries} attempt{})", self.name, plural(tries))
        };
        match t {
            Transport::Connect(e) => {
                Error::with_source(ErrorKind::Unavailable, ctx(&"cannot connect"), e)
            }
            Transport::Broken(e) => {
                Error::with_source(ErrorKind::Unavailable, ctx(&"connection failed"), e)
            }
            Transport::Timeout(_) => Error::new(ErrorKind::Unavailable, ctx(&t)),
        }
    }
}

enum Failure {
    Transport(Transport),
    Final(Error),
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Delay before retry number `attempt` (1-based), with ±25 % jitter so that
/// many clients do not reconnect in lockstep.
fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1 << (attempt - 1).min(16)).min(BACKOFF_MAX);
    let jitter = rand::random::<f64>() * 0.5 + 0.75;
    exp.mul_f64(jitter)
}

#[derive(Clone, Copy)]
enum Request<'c> {
    One(&'c Cmd),
    Many(&'c Pipeline, usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 1..40 {
            let d = backoff(attempt);
            assert!(d <= BACKOFF_MAX.mul_f64(1.25), "{attempt}: {d:?}");
            assert!(d >= BACKOFF_BASE.mul_f64(0.75), "{attempt}: {d:?}");
        }
        assert!(backoff(4) > backoff(1));
    }
}
