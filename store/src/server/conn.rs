//! One client connection: read, parse (wire), execute (dialect), reply.
//!
//! Requests of one connection run one after the other and are answered in
//! order; pipelined requests are answered in one write. A client that sends
//! garbage or vanishes mid-request only ever affects its own connection.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::dialect::{self, After, Shared};
use super::wire::{Parser, ReplyBuf, WireError};

/// Read size when no big payload is announced.
const READ_CHUNK: usize = 16 * 1024;
/// Replies queued beyond this are written before parsing more.
const FLUSH_AT: usize = 1 << 20;
/// A stuck connection (see [`WireError`]) is dropped after this many more
/// bytes: 0-db's 8 KiB request buffer fills up and it disconnects.
const STUCK_LIMIT: usize = 8192;
/// After an error that closes the connection, the rest of what the client
/// is still sending is read and dropped for at most this long (and at most
/// [`LINGER_BYTES`]) so the error line is not lost to a TCP reset.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 << 20;

/// Serve one connection until the client leaves, an error closes it, or
/// `shutdown` turns true (then the connection ends between requests).
pub async fn serve<S>(mut stream: S, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut session = shared.session();
    let mut parser = Parser::new();
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut out = ReplyBuf::new();
    let mut stuck: Option<(WireError, usize)> = None;
    loop {
        let want = parser.wanted().saturating_sub(buf.len()).max(READ_CHUNK);
        buf.reserve(want);
        let n = tokio::select! {
            _ = shutdown.wait_for(|down| *down) => return,
            r = stream.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => {
                    if parser.in_frame() || !buf.is_empty() {
                        tracing::debug!("client left in the middle of a request");
                    }
                    return;
                }
                Ok(n) => n,
            },
        };
        shared.stats.network_rx.fetch_add(n as u64, Ordering::Relaxed);

        // 0-db never consumes the bad bytes of a stuck connection: every
        // read gets the same error once, until its buffer would overflow.
        if let Some((err, seen)) = &mut stuck {
            *seen += n;
            buf.clear();
            if *seen > STUCK_LIMIT {
                return;
            }
            out.error(err.message());
            if write_out(&mut stream, &mut out, &shared).await.is_err() {
                return;
            }
            continue;
        }

        let mut close = false;
        loop {
            match parser.parse(&mut buf) {
                Ok(Some(args)) => {
                    if dialect::execute(&shared, &mut session, &args, &mut out).await
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
            if out.len() >= FLUSH_AT && write_out(&mut stream, &mut out, &shared).await.is_err() {
                return;
            }
        }
        if write_out(&mut stream, &mut out, &shared).await.is_err() {
            return;
        }
        if close {
            linger_close(stream).await;
            return;
        }
    }
}

/// Write every queued reply segment.
async fn write_out<S: AsyncWrite + Unpin>(
    stream: &mut S,
    out: &mut ReplyBuf,
    shared: &Shared,
) -> std::io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    for seg in out.take() {
        stream.write_all(&seg).await?;
        shared.stats.network_tx.fetch_add(seg.len() as u64, Ordering::Relaxed);
    }
    stream.flush().await
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
