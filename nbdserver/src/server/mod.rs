//! The NBD server: listeners, one task per connection (handshake, then
//! transmission), and a clean shutdown that answers in-flight requests and
//! flushes every device before returning.
//!
//! Layers: [`negotiate`] (handshake phase), [`transmission`] (request loop
//! and reply writer), [`execute`] (command → device → reply), [`export`]
//! (the export table), [`counters`] and their renderings in [`stats`].
//! Wire formats are in `crate::proto`.

pub mod control;
pub mod counters;
pub mod execute;
pub mod export;
pub mod negotiate;
pub mod sink;
pub mod stats;
pub mod tls;
pub mod transmission;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Instant;

pub use export::{Export, ExportTable, Opener};
pub use transmission::Limits;

use crate::device::BlockDevice;
use crate::error::{Error, Result, invalid};
use negotiate::{Negotiated, Outcome, TlsState};
use tls::Tls;
use transmission::End;

/// Read buffer of a connection (a whole 256 KiB write payload fits).
const READ_BUF: usize = 256 * 1024;

/// Default of [`ServerConfig::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default of [`ServerConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// Server knobs.
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    /// A client must finish the handshake (greeting, options, the TLS
    /// handshake) within this time, or it is disconnected.
    pub handshake_timeout: Duration,
    /// How long shutdown waits for connections to answer in-flight requests.
    pub drain_timeout: Duration,
    /// NBD connections (TCP and unix, in handshake or transmission) open
    /// at once; the next ones are closed as soon as they are accepted.
    pub max_connections: usize,
    pub limits: Limits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            drain_timeout: Duration::from_secs(30),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            limits: Limits::default(),
        }
    }
}

/// A bound listening socket.
pub enum Listener {
    /// NBD over TCP.
    Tcp(TcpListener),
    /// NBD over a unix socket.
    Unix(UnixListener, PathBuf),
    /// The control socket (`nbdserver stats`).
    Control(UnixListener, PathBuf),
    /// Prometheus metrics over HTTP.
    Metrics(TcpListener),
}

impl Listener {
    pub async fn tcp(addr: &str) -> Result<Self> {
        let l =
            TcpListener::bind(addr).await.map_err(|e| Error::io(format!("listen on {addr}"), e))?;
        Ok(Listener::Tcp(l))
    }

    /// Bind a unix socket; a stale socket file nobody listens on is replaced.
    pub fn unix(path: &Path) -> Result<Self> {
        Ok(Listener::Unix(bind_unix(path)?, path.to_path_buf()))
    }

    /// The control socket: owner-only, in an owner-only directory.
    pub fn control(path: &Path) -> Result<Self> {
        Ok(Listener::Control(control::bind_private(path)?, path.to_path_buf()))
    }

    pub async fn metrics(addr: &str) -> Result<Self> {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io(format!("listen on {addr} for metrics"), e))?;
        Ok(Listener::Metrics(l))
    }

    /// Where it listens, for logs (the real port when bound to port 0).
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => {
                l.local_addr().map_or("tcp:?".into(), |a: SocketAddr| a.to_string())
            }
            Listener::Unix(_, p) => format!("unix:{}", p.display()),
            Listener::Control(_, p) => format!("control socket {}", p.display()),
            Listener::Metrics(l) => {
                l.local_addr().map_or("metrics:?".into(), |a| format!("http://{a}/metrics"))
            }
        }
    }

    fn socket_path(&self) -> Option<&Path> {
        match self {
            Listener::Unix(_, p) | Listener::Control(_, p) => Some(p),
            _ => None,
        }
    }

    /// The address of an NBD TCP listener that is not a loopback address
    /// (reachable from other hosts).
    pub fn exposed_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok().filter(|a| !a.ip().is_loopback()),
            _ => None,
        }
    }
}

pub(crate) fn bind_unix(path: &Path) -> Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(invalid(format!("{} is in use by a server", path.display())));
        }
        std::fs::remove_file(path)
            .map_err(|e| Error::io(format!("remove stale {}", path.display()), e))?;
    }
    UnixListener::bind(path).map_err(|e| Error::io(format!("listen on {}", path.display()), e))
}

struct Shared {
    exports: Arc<ExportTable>,
    cfg: ServerConfig,
    /// STARTTLS on TCP connections (None: plain only).
    tls: Option<Tls>,
    /// One permit per open NBD connection.
    slots: Arc<Semaphore>,
    refusals: Refusals,
}

/// Connections refused for the connection limit: counted, and logged at
/// most once a second so a flood of them does not flood the log.
#[derive(Default)]
struct Refusals {
    count: std::sync::atomic::AtomicU64,
    logged: Mutex<Option<Instant>>,
}

impl Refusals {
    fn note(&self, peer: &str, max: usize) {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let mut logged = self.logged.lock();
        if logged.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        *logged = Some(Instant::now());
        tracing::warn!(
            "{peer}: closed: {max} connections are open (--max-connections); \
             {n} refused since start"
        );
    }
}

pub struct Server {
    shared: Arc<Shared>,
}

impl Server {
    pub fn new(exports: Arc<ExportTable>, cfg: ServerConfig) -> Self {
        Self::with_tls(exports, cfg, None)
    }

    /// A server whose TCP listeners offer (or require) STARTTLS.
    pub fn with_tls(exports: Arc<ExportTable>, cfg: ServerConfig, tls: Option<Tls>) -> Self {
        let slots = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
        let refusals = Refusals::default();
        Server { shared: Arc::new(Shared { exports, cfg, tls, slots, refusals }) }
    }

    pub fn exports(&self) -> &Arc<ExportTable> {
        &self.shared.exports
    }

    /// Serve until `stop` completes; then stop accepting, let every
    /// connection answer what it already accepted, and flush all devices.
    pub async fn run(
        &self,
        listeners: Vec<Listener>,
        stop: impl Future<Output = ()>,
    ) -> Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        // Each connection holds a clone; recv() returns None once all are gone.
        let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);
        let mut accept_tasks = Vec::new();
        let mut sockets = Vec::new();
        for l in listeners {
            if let Some(p) = l.socket_path() {
                sockets.push(p.to_path_buf());
            }
            let (shared, stop, drain) = (self.shared.clone(), stop_rx.clone(), drain_tx.clone());
            let exports = self.shared.exports.clone();
            accept_tasks.push(match l {
                Listener::Control(l, _) => tokio::spawn(control::serve_control(l, exports, stop)),
                Listener::Metrics(l) => tokio::spawn(control::serve_metrics(l, exports, stop)),
                l => tokio::spawn(accept_loop(l, shared, stop, drain)),
            });
        }
        drop(drain_tx);
        stop.await;
        tracing::info!("shutting down: answering in-flight requests");
        let _ = stop_tx.send(true);
        for t in accept_tasks {
            let _ = t.await;
        }
        for p in sockets {
            let _ = std::fs::remove_file(p);
        }
        let drained = tokio::time::timeout(self.shared.cfg.drain_timeout, drain_rx.recv()).await;
        if drained.is_err() {
            tracing::warn!(
                "some connections did not finish within {:?}",
                self.shared.cfg.drain_timeout
            );
        }
        self.flush_all().await
    }

    /// Flush every export's device; the first failure is returned after all
    /// were tried.
    pub async fn flush_all(&self) -> Result<()> {
        let mut first = None;
        for e in self.shared.exports.all() {
            if let Err(err) = e.device.flush().await {
                tracing::error!("flush {}: {}", e.name, err.chain());
                first.get_or_insert(err);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

async fn accept_loop(
    listener: Listener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    drain: mpsc::Sender<()>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            a = accept(&listener) => a,
        };
        let (shared, stop, drain) = (shared.clone(), stop.clone(), drain.clone());
        let conn = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!("accept on {}: {e}", listener.describe());
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over the limit: closed at once, before the greeting (nothing was
        // read or sent, so the client sees a plain end of stream).
        let Ok(slot) = shared.slots.clone().try_acquire_owned() else {
            shared.refusals.note(&conn.peer(), shared.cfg.max_connections);
            continue;
        };
        let held = Held { _slot: slot, _drain: drain };
        match conn {
            Conn::Tcp(stream, peer) => {
                // Replies are written whole; Nagle would only add latency.
                let _ = stream.set_nodelay(true);
                tokio::spawn(tcp_connection(stream, peer.to_string(), shared, stop, held));
            }
            Conn::Unix(stream) => {
                tokio::spawn(unix_connection(stream, shared, stop, held));
            }
        }
    }
}

/// What a connection holds while it lives: its slot under the connection
/// limit, and the shutdown's drain channel (see [`Server::run`]).
struct Held {
    _slot: OwnedSemaphorePermit,
    _drain: mpsc::Sender<()>,
}

enum Conn {
    Tcp(TcpStream, SocketAddr),
    Unix(UnixStream),
}

impl Conn {
    fn peer(&self) -> String {
        match self {
            Conn::Tcp(_, a) => a.to_string(),
            Conn::Unix(_) => "unix".into(),
        }
    }
}

async fn accept(l: &Listener) -> std::io::Result<Conn> {
    match l {
        Listener::Tcp(l) => l.accept().await.map(|(s, a)| Conn::Tcp(s, a)),
        Listener::Unix(l, _) => l.accept().await.map(|(s, _)| Conn::Unix(s)),
        // Served by their own loops (see `Server::run`).
        Listener::Control(..) | Listener::Metrics(_) => std::future::pending().await,
    }
}

/// How a handshake step ended without its result.
#[derive(Debug, PartialEq, Eq)]
enum Unfinished {
    /// The server refused the client (a protocol error, answered or not):
    /// close with [`linger`].
    Refused,
    /// Timed out, the client left, or the server stops: just close.
    Dropped,
}

/// Run one handshake step before `deadline`, unless the server stops.
async fn in_time<T>(
    step: impl Future<Output = Result<Option<T>>>,
    deadline: Instant,
    peer: &str,
    stop: &mut watch::Receiver<bool>,
) -> Result<T, Unfinished> {
    let r = tokio::select! {
        r = tokio::time::timeout_at(deadline, step) => r,
        _ = stop.wait_for(|s| *s) => return Err(Unfinished::Dropped),
    };
    match r {
        Err(_) => tracing::debug!("{peer}: handshake timed out"),
        Ok(Err(e)) => {
            tracing::info!("{peer}: handshake ended: {}", e.chain());
            return Err(Unfinished::Refused);
        }
        Ok(Ok(None)) => tracing::debug!("{peer}: left during the handshake"),
        Ok(Ok(Some(v))) => return Ok(v),
    }
    Err(Unfinished::Dropped)
}

/// Most a closing connection reads and drops, and for how long.
const LINGER_BYTES: u64 = 1 << 20;
const LINGER_TIME: Duration = Duration::from_secs(2);

/// Close a connection the server gives up on without losing what it last
/// wrote (an error reply): send FIN after it, then read and drop what the
/// client still sends until it closes too (bounded in bytes and time).
/// Closing a socket with unread received data makes the kernel send a
/// reset at once, which throws away replies not yet delivered; the client
/// would see "connection reset" instead of the server's answer.
pub(crate) async fn linger<R, W>(rd: &mut R, wr: &mut W)
where
    R: AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let _ = wr.shutdown().await;
    drain_input(rd).await;
}

/// Read and drop what the client sends until it closes (bounded in bytes
/// and time): the second half of [`linger`].
pub(crate) async fn drain_input<R: AsyncRead + Unpin>(rd: &mut R) {
    use tokio::io::AsyncReadExt;
    let (mut limited, mut sink) = (rd.take(LINGER_BYTES), tokio::io::sink());
    let _ = tokio::time::timeout(LINGER_TIME, tokio::io::copy(&mut limited, &mut sink)).await;
}

fn transmit_or_close(o: Outcome) -> Option<Negotiated> {
    match o {
        Outcome::Transmit(n) => Some(n),
        Outcome::Closed | Outcome::StartTls => None,
    }
}

/// A unix socket client: local, so never TLS.
async fn unix_connection(
    stream: UnixStream,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    _held: Held,
) {
    let (r, mut wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(READ_BUF, r);
    let deadline = Instant::now() + shared.cfg.handshake_timeout;
    let step = async {
        let Some(flags) = negotiate::greet(&mut rd, &mut wr).await? else { return Ok(None) };
        let o = negotiate::haggle(&mut rd, &mut wr, flags, &shared.exports, TlsState::Unavailable);
        Ok(transmit_or_close(o.await?))
    };
    match in_time(step, deadline, "unix", &mut stop).await {
        Ok(n) => transmit(rd, wr, n, "unix", &shared, stop).await,
        Err(Unfinished::Refused) => linger(&mut rd, &mut wr).await,
        Err(Unfinished::Dropped) => {}
    }
}

/// A TCP client: plain, or upgraded by STARTTLS when the server has TLS.
/// The handshake timeout covers the TLS handshake too.
async fn tcp_connection(
    stream: TcpStream,
    peer: String,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    _held: Held,
) {
    let deadline = Instant::now() + shared.cfg.handshake_timeout;
    let tls_state = match &shared.tls {
        None => TlsState::Unavailable,
        Some(t) if t.required => TlsState::Required,
        Some(_) => TlsState::Offered,
    };
    let (r, mut wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(READ_BUF, r);
    let step = async {
        let Some(flags) = negotiate::greet(&mut rd, &mut wr).await? else { return Ok(None) };
        let o = negotiate::haggle(&mut rd, &mut wr, flags, &shared.exports, tls_state).await?;
        Ok(Some((flags, o)))
    };
    let (flags, outcome) = match in_time(step, deadline, &peer, &mut stop).await {
        Ok(v) => v,
        Err(Unfinished::Refused) => return linger(&mut rd, &mut wr).await,
        Err(Unfinished::Dropped) => return,
    };
    let tls = match (outcome, &shared.tls) {
        (Outcome::StartTls, Some(tls)) => tls.clone(),
        (o, _) => {
            if let Some(n) = transmit_or_close(o) {
                transmit(rd, wr, n, &peer, &shared, stop).await;
            }
            return;
        }
    };
    // The client waits for the STARTTLS ack before its ClientHello, so
    // nothing may be buffered yet; anything there was sent out of turn.
    if !rd.buffer().is_empty() {
        tracing::info!("{peer}: data before the TLS handshake; closing");
        return linger(&mut rd, &mut wr).await;
    }
    let Ok(stream) = rd.into_inner().reunite(wr) else { return };
    let step = async {
        let stream =
            tls.acceptor.accept(stream).await.map_err(|e| Error::io("TLS handshake", e))?;
        let (r, mut wr) = tokio::io::split(stream);
        let mut rd = BufReader::with_capacity(READ_BUF, r);
        let o = negotiate::haggle(&mut rd, &mut wr, flags, &shared.exports, TlsState::Active);
        Ok(transmit_or_close(o.await?).map(|n| (rd, wr, n)))
    };
    if let Ok((rd, wr, n)) = in_time(step, deadline, &peer, &mut stop).await {
        transmit(rd, wr, n, &format!("{peer} (TLS)"), &shared, stop).await;
    }
}

/// The transmission phase of a negotiated connection, counted per export.
async fn transmit<R, W>(
    rd: BufReader<R>,
    wr: W,
    n: Negotiated,
    peer: &str,
    shared: &Shared,
    stop: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: sink::ReplySink,
{
    tracing::debug!(
        "{peer}: export {:?}, structured replies {}, contexts {:?}",
        n.export.name,
        n.session.structured,
        n.session.contexts
    );
    let name = n.export.name.clone();
    let export = n.export.clone();
    export.counters.connections.fetch_add(1, Ordering::Relaxed);
    export.counters.connections_total.fetch_add(1, Ordering::Relaxed);
    let end = transmission::run(rd, wr, n.export, n.session, shared.cfg.limits, stop).await;
    export.counters.connections.fetch_sub(1, Ordering::Relaxed);
    match end {
        End::Disconnect | End::Shutdown => tracing::debug!("{peer}: {name}: closed"),
        End::Violation(why) => tracing::warn!("{peer}: {name}: closing: {why}"),
        End::Io(e) => tracing::info!("{peer}: {name}: connection lost: {e}"),
        End::Internal(e) => tracing::error!("{peer}: {name}: internal error: {e}"),
    }
}
