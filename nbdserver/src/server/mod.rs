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

use tokio::io::{AsyncRead, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
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

/// Server knobs.
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    /// A client must finish option haggling within this time.
    pub handshake_timeout: Duration,
    /// How long shutdown waits for connections to answer in-flight requests.
    pub drain_timeout: Duration,
    pub limits: Limits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            handshake_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
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

    pub fn control(path: &Path) -> Result<Self> {
        Ok(Listener::Control(bind_unix(path)?, path.to_path_buf()))
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
}

fn bind_unix(path: &Path) -> Result<UnixListener> {
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
        Server { shared: Arc::new(Shared { exports, cfg, tls }) }
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
        match accepted {
            Ok(Conn::Tcp(stream, peer)) => {
                // Replies are written whole; Nagle would only add latency.
                let _ = stream.set_nodelay(true);
                tokio::spawn(tcp_connection(stream, peer.to_string(), shared, stop, drain));
            }
            Ok(Conn::Unix(stream)) => {
                tokio::spawn(unix_connection(stream, shared, stop, drain));
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!("accept on {}: {e}", listener.describe());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

enum Conn {
    Tcp(TcpStream, SocketAddr),
    Unix(UnixStream),
}

async fn accept(l: &Listener) -> std::io::Result<Conn> {
    match l {
        Listener::Tcp(l) => l.accept().await.map(|(s, a)| Conn::Tcp(s, a)),
        Listener::Unix(l, _) => l.accept().await.map(|(s, _)| Conn::Unix(s)),
        // Served by their own loops (see `Server::run`).
        Listener::Control(..) | Listener::Metrics(_) => std::future::pending().await,
    }
}

/// Run one handshake step before `deadline`, unless the server stops;
/// `None` (logged) when it failed or the client left.
async fn in_time<T>(
    step: impl Future<Output = Result<Option<T>>>,
    deadline: Instant,
    peer: &str,
    stop: &mut watch::Receiver<bool>,
) -> Option<T> {
    let r = tokio::select! {
        r = tokio::time::timeout_at(deadline, step) => r,
        _ = stop.wait_for(|s| *s) => return None,
    };
    match r {
        Err(_) => tracing::debug!("{peer}: handshake timed out"),
        Ok(Err(e)) => tracing::info!("{peer}: handshake ended: {}", e.chain()),
        Ok(Ok(None)) => tracing::debug!("{peer}: left during the handshake"),
        Ok(Ok(Some(v))) => return Some(v),
    }
    None
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
    _drain: mpsc::Sender<()>,
) {
    let (r, mut wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(READ_BUF, r);
    let deadline = Instant::now() + shared.cfg.handshake_timeout;
    let step = async {
        let Some(flags) = negotiate::greet(&mut rd, &mut wr).await? else { return Ok(None) };
        let o = negotiate::haggle(&mut rd, &mut wr, flags, &shared.exports, TlsState::Unavailable);
        Ok(transmit_or_close(o.await?))
    };
    if let Some(n) = in_time(step, deadline, "unix", &mut stop).await {
        transmit(rd, wr, n, "unix", &shared, stop).await;
    }
}

/// A TCP client: plain, or upgraded by STARTTLS when the server has TLS.
/// The handshake timeout covers the TLS handshake too.
async fn tcp_connection(
    stream: TcpStream,
    peer: String,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    _drain: mpsc::Sender<()>,
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
    let Some((flags, outcome)) = in_time(step, deadline, &peer, &mut stop).await else { return };
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
        return tracing::info!("{peer}: data before the TLS handshake; closing");
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
    if let Some((rd, wr, n)) = in_time(step, deadline, &peer, &mut stop).await {
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
