//! One client connection: read, parse (wire), execute (dialect), reply.
//!
//! Requests of one connection run one after the other and are answered in
//! order; pipelined requests are answered in one write. A client that sends
//! garbage or vanishes mid-request only ever affects its own connection.
//!
//! What a connection holds is bounded whatever its client does: one request
//! at most [`MAX_REQUEST`](super::wire::MAX_REQUEST) bytes of arguments;
//! replies at most [`FLUSH_AT`](super::wire::FLUSH_AT) plus one value
//! before they are written out, and nothing more is read or produced while
//! the client does not take them. A request that is not complete, or a
//! write the client does not take, within [`ConnLimits::stall`] ends the
//! connection, so slow clients cannot keep connection slots for ever.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::dialect::{self, After, Shared};
use super::wire::{Drain, Parser, ReplyBuf, WireError};

/// Read size when no big payload is announced.
const READ_CHUNK: usize = 16 * 1024;
/// A stuck connection (see [`WireError`]) is dropped after this many more
/// bytes: 0-db's 8 KiB request buffer fills up and it disconnects.
const STUCK_LIMIT: usize = 8192;
/// After an error that closes the connection, the rest of what the client
/// is still sending is read and dropped for at most this long (and at most
/// [`LINGER_BYTES`]) so the error line is not lost to a TCP reset.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 << 20;
/// Sent before closing a connection whose request took too long.
pub const REQUEST_TIMEOUT_MSG: &str = "Request timeout (not complete within --request-timeout)";

/// Per-connection limits (`chunkstore serve --request-timeout`).
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Longest a request may take to arrive from its first byte, and
    /// longest a reply write may wait for the client to read.
    pub stall: Duration,
}

/// Serve one connection until the client leaves, an error closes it, or
/// `shutdown` turns true (then the connection ends between requests).
/// `peer` is the client's address (TCP), for the AUTH throttle.
pub async fn serve<S>(
    mut stream: S,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    peer: Option<IpAddr>,
    limits: ConnLimits,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut session = shared.session(peer);
    let mut parser = Parser::new();
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut out = ReplyBuf::new();
    let mut stuck: Option<(WireError, usize)> = None;
    // When the first byte of the request still being received arrived.
    let mut started: Option<Instant> = None;
    loop {
        let want = parser.wanted().saturating_sub(buf.len()).max(READ_CHUNK);
        buf.reserve(want);
        let deadline = started.map(|t| t + limits.stall);
        let read = tokio::select! {
            _ = shutdown.wait_for(|down| *down) => return,
            _ = until(deadline) => None,
            r = stream.read_buf(&mut buf) => Some(r),
        };
        let n = match read {
            None => {
                tracing::debug!("request not complete within {:?}; closing", limits.stall);
                out.error(REQUEST_TIMEOUT_MSG);
                let mut w = Writer { stream: &mut stream, shared: &shared, stall: limits.stall };
                if w.drain(&mut out).await.is_ok() {
                    linger_close(stream).await;
                }
                return;
            }
            Some(Ok(0) | Err(_)) => {
                if parser.in_frame() || !buf.is_empty() {
                    tracing::debug!("client left in the middle of a request");
                }
                return;
            }
            Some(Ok(n)) => n,
        };
        shared.stats.network_rx.fetch_add(n as u64, Ordering::Relaxed);
        let mut w = Writer { stream: &mut stream, shared: &shared, stall: limits.stall };

        // 0-db never consumes the bad bytes of a stuck connection: every
        // read gets the same error once, until its buffer would overflow.
        if let Some((err, seen)) = &mut stuck {
            *seen += n;
            buf.clear();
            if *seen > STUCK_LIMIT {
                return;
            }
            out.error(err.message());
            if w.drain(&mut out).await.is_err() {
                return;
            }
            continue;
        }

        let arrived = Instant::now();
        let mut completed = false;
        let mut close = false;
        loop {
            match parser.parse(&mut buf) {
                Ok(Some(args)) => {
                    completed = true;
                    if dialect::execute(&shared, &mut session, &args, &mut out, &mut w).await
                        == After::Close
                    {
                        close = true;
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    out.error(e.message());
                    if e.closes() {
                        close = true;
                    } else {
                        stuck = Some((e, 0));
                        buf.clear();
                    }
                    break;
                }
            }
            if out.is_full() && w.drain(&mut out).await.is_err() {
                return;
            }
        }
        if w.drain(&mut out).await.is_err() {
            return;
        }
        if close {
            linger_close(stream).await;
            return;
        }
        started = match (parser.in_frame() || !buf.is_empty(), completed) {
            (false, _) => None,
            (true, true) => Some(arrived),
            (true, false) => started.or(Some(arrived)),
        };
    }
}

/// Resolves at `t`; never without one.
async fn until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Writes queued replies to the client.
struct Writer<'a, S> {
    stream: &'a mut S,
    shared: &'a Shared,
    stall: Duration,
}

#[async_trait::async_trait]
impl<S: AsyncWrite + Unpin + Send> Drain for Writer<'_, S> {
    /// Write every queued reply segment; a write the client leaves
    /// unread for `stall` fails.
    async fn drain(&mut self, out: &mut ReplyBuf) -> std::io::Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        let stalled = |_| std::io::Error::new(std::io::ErrorKind::TimedOut, "client does not read");
        for seg in out.take() {
            let mut done = 0;
            while done < seg.len() {
                let n = tokio::time::timeout(self.stall, self.stream.write(&seg[done..]))
                    .await
                    .map_err(stalled)??;
                if n == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                done += n;
            }
            self.shared.stats.network_tx.fetch_add(seg.len() as u64, Ordering::Relaxed);
        }
        tokio::time::timeout(self.stall, self.stream.flush()).await.map_err(stalled)?
    }
}

/// Send FIN, then swallow what the client still sends for a short while:
/// closing with unread data would make the kernel send a reset, which can
/// destroy the error line before the client reads it.
async fn linger_close<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let _ = stream.shutdown().await;
    let drain = async {
        let mut scratch = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        while total < LINGER_BYTES {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}
