//! The transmission phase of one connection.
//!
//! One reader loop parses and validates requests and spawns a task per
//! command, so pipelined requests run concurrently and are answered in
//! completion order. A single writer task owns the socket's write half and
//! writes whole reply frames, so replies never interleave mid-frame.
//!
//! Memory is bounded: every request, refused ones included, holds a share
//! of a per-connection byte budget (the larger of its payload and the
//! largest reply it can get) from before its payload is read until its
//! reply has been written to the socket. When the budget is spent the
//! reader stops reading, which pushes back on the client through TCP: a
//! client that sends requests and never reads the replies holds at most
//! the budget, however many requests it sends.

use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::execute::{error_reply, execute, execute_now};
use super::export::Export;
use super::sink::{Part, ReplySink};
use crate::device::MAX_EXTENTS;
use crate::proto::consts::{MAX_STRING, REQUEST_HEADER_LEN, STRUCTURED_HEADER_LEN};
use crate::proto::request::Rejection;
use crate::proto::{Command, Session, Verdict, parse_request};

/// Budget unit: 4 KiB.
const UNIT: u64 = 4096;

/// Knobs of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of payloads and replies in flight per connection (≥ the max
    /// payload).
    pub inflight_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { inflight_bytes: 128 << 20 }
    }
}

/// One reply, written as a whole; dropping it releases its budget.
struct Frame {
    parts: Vec<Part>,
    _permit: OwnedSemaphorePermit,
}

/// Why the loop ended.
#[derive(Debug)]
pub enum End {
    /// NBD_CMD_DISC, or the client closed the socket between requests.
    Disconnect,
    /// The server is shutting down.
    Shutdown,
    /// A frame the protocol cannot recover from (bad magic, oversized write).
    Violation(String),
    /// The socket failed.
    Io(io::Error),
    /// A request task failed without replying (a bug; logged).
    Internal(String),
}

/// The largest error reply (structured, with a message of the longest
/// string the protocol allows): what any request may get back.
const MAX_ERROR_REPLY: u64 = (STRUCTURED_HEADER_LEN + 6 + MAX_STRING) as u64;

/// The largest BLOCK_STATUS reply: one chunk per context, each with at
/// most [`MAX_EXTENTS`] descriptors.
fn block_status_reply_max(session: &Session) -> u64 {
    let chunk = STRUCTURED_HEADER_LEN as u64 + 4 + 8 * MAX_EXTENTS as u64;
    chunk * session.contexts.len() as u64
}

/// Budget units a request holds: its payload (WRITE), the largest reply it
/// can get (READ data, BLOCK_STATUS descriptors), never less than an error
/// reply.
fn cost(cmd: &Command, session: &Session) -> u32 {
    let bytes = match cmd {
        Command::Read { length, .. } | Command::Write { length, .. } => u64::from(*length),
        Command::BlockStatus { .. } => block_status_reply_max(session),
        _ => 0,
    };
    bytes.max(MAX_ERROR_REPLY).div_ceil(UNIT) as u32
}

/// Budget units of the error reply to a refused request.
fn refusal_cost() -> u32 {
    MAX_ERROR_REPLY.div_ceil(UNIT) as u32
}

/// Take `units` of the budget, waiting (and counted as stalled) while the
/// client has not read enough replies to free them. None: shutdown.
async fn reserve(
    budget: &Arc<Semaphore>,
    units: u32,
    export: &Export,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(p) = budget.clone().try_acquire_many_owned(units) {
        return Some(p);
    }
    let _stalled = export.counters.stalled();
    tokio::select! {
        biased;
        _ = shutdown.wait_for(|s| *s) => None,
        // The semaphore is never closed, so Err cannot happen.
        p = budget.clone().acquire_many_owned(units) => p.ok(),
    }
}

/// Replies gathered into one write at most (bytes; a single bigger reply
/// still goes whole).
const BATCH_BYTES: usize = 4 << 20;
/// Slices per vectored write (Linux's IOV_MAX is 1024).
const BATCH_SLICES: usize = 512;

/// Write replies as they come, every reply already queued going out with
/// it in one vectored write (one syscall for a burst of small replies, and
/// no separate send of a header in front of its data); file parts go by
/// `sendfile`. Writers that cannot write vectored get the same bytes
/// through a buffer.
async fn write_loop<W: ReplySink>(wr: W, mut rx: mpsc::UnboundedReceiver<Frame>) -> io::Result<()> {
    let vectored = wr.is_write_vectored();
    let mut w = BufWriter::with_capacity(if vectored { 0 } else { 256 * 1024 }, wr);
    let mut batch: Vec<Frame> = Vec::new();
    while let Some(frame) = rx.recv().await {
        let mut bytes = frame_len(&frame);
        let mut slices = frame.parts.len();
        batch.push(frame);
        while bytes < BATCH_BYTES && slices < BATCH_SLICES {
            let Ok(frame) = rx.try_recv() else { break };
            bytes += frame_len(&frame);
            slices += frame.parts.len();
            batch.push(frame);
        }
        write_batch(&mut w, &batch, vectored).await?;
        // Dropping the frames gives their budget back.
        batch.clear();
    }
    w.shutdown().await
}

fn frame_len(f: &Frame) -> usize {
    f.parts.iter().map(Part::len).sum()
}

async fn write_batch<W: ReplySink>(
    w: &mut BufWriter<W>,
    batch: &[Frame],
    vectored: bool,
) -> io::Result<()> {
    let mut mem: Vec<&Bytes> = Vec::new();
    for part in batch.iter().flat_map(|f| &f.parts) {
        match part {
            Part::Mem(b) => mem.push(b),
            Part::File(r) => {
                write_mem(w, &mem, vectored).await?;
                mem.clear();
                // Whatever is buffered goes before the file's bytes.
                w.flush().await?;
                w.get_mut().send_file(r).await?;
            }
        }
    }
    write_mem(w, &mem, vectored).await?;
    w.flush().await
}

async fn write_mem<W: ReplySink>(
    w: &mut BufWriter<W>,
    mem: &[&Bytes],
    vectored: bool,
) -> io::Result<()> {
    if !vectored {
        for b in mem {
            w.write_all(b).await?;
        }
        return Ok(());
    }
    let mut slices: Vec<io::IoSlice<'_>> =
        mem.iter().filter(|b| !b.is_empty()).map(|b| io::IoSlice::new(b)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = w.get_mut().write_vectored(rest).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        io::IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// Read and drop `n` payload bytes of a refused request.
async fn discard<R: AsyncRead + Unpin>(rd: &mut R, n: u32) -> io::Result<()> {
    let copied = tokio::io::copy(&mut rd.take(u64::from(n)), &mut tokio::io::sink()).await?;
    if copied < u64::from(n) {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Serve requests until the client disconnects, breaks the protocol, or
/// `shutdown` turns true. In-flight requests are always answered first.
pub async fn run<R, W>(
    mut rd: R,
    wr: W,
    export: Arc<Export>,
    session: Session,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) -> End
where
    R: AsyncRead + Unpin + Send + 'static,
    W: ReplySink,
{
    let zero_copy = wr.can_send_file();
    let (tx, rx) = mpsc::unbounded_channel::<Frame>();
    let writer = tokio::spawn(write_loop(wr, rx));
    let most = u64::from(session.max_payload).max(block_status_reply_max(&session));
    let units = limits.inflight_bytes.max(most).max(MAX_ERROR_REPLY).div_ceil(UNIT);
    let budget = Arc::new(Semaphore::new(units as usize));
    let session = Arc::new(session);
    let mut tasks = JoinSet::new();

    let end = 'serve: loop {
        while let Some(res) = tasks.try_join_next() {
            if let Err(e) = res {
                // A request task died without replying: the client would
                // wait forever for that reply, so end the connection.
                break 'serve End::Internal(e.to_string());
            }
        }
        if tx.is_closed() {
            break End::Io(io::Error::new(io::ErrorKind::BrokenPipe, "reply writer stopped"));
        }
        let mut hbuf = [0u8; REQUEST_HEADER_LEN];
        let read = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => break End::Shutdown,
            r = rd.read_exact(&mut hbuf) => r,
        };
        match read {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break End::Disconnect,
            Err(e) => break End::Io(e),
        }
        let (header, verdict) = match parse_request(&hbuf, &session) {
            Ok(parsed) => parsed,
            Err(e) => break End::Violation(e.to_string()),
        };
        let cmd = match verdict {
            Verdict::Run(Command::Disconnect) => break End::Disconnect,
            Verdict::Run(cmd) => cmd,
            Verdict::Reject(Rejection { error, message, discard: n }) => {
                tracing::debug!("request {:#x} refused: {message}", header.cookie);
                export.counters.error();
                // The error reply waits in memory like any other reply.
                let Some(permit) = reserve(&budget, refusal_cost(), &export, &mut shutdown).await
                else {
                    break End::Shutdown;
                };
                let skipped = tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|s| *s) => break End::Shutdown,
                    r = discard(&mut rd, n) => r,
                };
                if let Err(e) = skipped {
                    break End::Io(e);
                }
                let parts = Part::mem_all(error_reply(&session, header.cookie, error, &message));
                let _ = tx.send(Frame { parts, _permit: permit });
                continue;
            }
        };
        let Some(permit) = reserve(&budget, cost(&cmd, &session), &export, &mut shutdown).await
        else {
            break End::Shutdown;
        };
        let payload = match cmd {
            Command::Write { length, .. } => {
                let mut buf = BytesMut::zeroed(length as usize);
                // A client that stalls mid-payload must not hold up shutdown;
                // the unfinished write was never acknowledged.
                let read = tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|s| *s) => break End::Shutdown,
                    r = rd.read_exact(&mut buf) => r,
                };
                if let Err(e) = read {
                    break End::Io(e);
                }
                buf.freeze()
            }
            _ => Bytes::new(),
        };
        let cookie = header.cookie;
        // Warm reads are answered in place: no task, no hop between threads.
        if let Some(parts) = execute_now(&export, &session, cookie, &cmd, zero_copy) {
            let _ = tx.send(Frame { parts, _permit: permit });
            continue;
        }
        let (tx, export, session) = (tx.clone(), export.clone(), session.clone());
        tasks.spawn(async move {
            let parts = Part::mem_all(execute(&export, &session, cookie, cmd, payload).await);
            let _ = tx.send(Frame { parts, _permit: permit });
        });
    };
    // Answer everything already accepted before closing.
    while let Some(res) = tasks.join_next().await {
        if let Err(e) = res {
            tracing::error!("request task failed: {e}");
        }
    }
    drop(tx);
    let written = writer.await;
    if matches!(end, End::Violation(_)) {
        // The writer sent FIN after the last reply; what the client still
        // sends must be read, or closing would reset the connection and
        // lose those replies (see `linger`).
        super::drain_input(&mut rd).await;
    }
    match written {
        Ok(Ok(())) => end,
        Ok(Err(e)) => match end {
            End::Disconnect | End::Shutdown => End::Io(e),
            other => other,
        },
        Err(e) => End::Io(io::Error::other(e)),
    }
}
