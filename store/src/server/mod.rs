//! A 0-db-compatible server (`chunkstore serve`): the 0-db dialect of RESP
//! over TCP and a unix socket, data kept in a zosfs value store.
//!
//! Layers, each a module:
//!
//! * [`wire`] — RESP framing: incremental request parser, reply encoder
//!   (big values are never copied);
//! * [`dialect`] — the command table with 0-db's prefix matching, sessions
//!   (namespace, admin, nonce) and 0-db's exact replies;
//! * [`ns`] — namespaces: in-memory index rebuilt from a CRC-framed
//!   metadata journal per namespace; values in a [`DynStore`];
//! * [`metrics`] — the counters as Prometheus text (`--metrics`);
//! * [`conn`] — one task per connection; this module binds listeners,
//!   accepts (at most [`ServerConfig::max_connections`] at once), syncs
//!   periodically and shuts down cleanly.
//!
//! Behaviour follows a transcript recorded from a real 0-db v2.0.7
//! (`tests/fixtures/zdb/`). Known differences: values live in a zosfs store
//! rather than 0-db data files, so DATA RAW, HISTORY, WAIT, MIRROR and
//! MASTER answer "Command not supported"; the server sets TCP_NODELAY.

pub mod conn;
pub mod dialect;
pub mod metrics;
pub mod ns;
pub mod wire;

use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::backend::{DynStore, OpenOptions, SyncPolicy};
use crate::error::{Error, ErrorKind, Result};
use crate::open::open_backend;
use crate::url::StoreUrl;
pub use dialect::{DialectConfig, ServerMode, Shared};
pub use ns::Password;
use ns::{Context, IoStats, Namespaces};

/// How `chunkstore serve` was asked to run.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// TCP address (None: unix socket only).
    pub listen: Option<SocketAddr>,
    pub unix: Option<PathBuf>,
    /// Data directory: namespace journals, and values unless `values` is set.
    pub data: PathBuf,
    /// Value store; default `local://<data>/chunks`.
    pub values: Option<StoreUrl>,
    pub mode: ServerMode,
    pub admin: Option<Password>,
    pub protect: bool,
    /// fsync before acknowledging every write.
    pub sync_writes: bool,
    /// fsync journals and the value store this often.
    pub sync_interval: Duration,
    /// Connections served at once (TCP and unix together); more are sent
    /// an error line and closed.
    pub max_connections: usize,
    /// Longest a request may take to arrive, and a reply may wait for the
    /// client to read it, before the connection is closed.
    pub request_timeout: Duration,
    /// Allow a non-loopback TCP address without an admin password.
    pub insecure_no_auth: bool,
}

/// Default of [`ServerConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default of [`ServerConfig::request_timeout`]: an 8 MiB value at 140 kB/s.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

impl ServerConfig {
    pub fn new(data: impl Into<PathBuf>) -> Self {
        ServerConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9900))),
            unix: None,
            data: data.into(),
            values: None,
            mode: ServerMode::Mixed,
            admin: None,
            protect: false,
            sync_writes: false,
            sync_interval: Duration::from_secs(5),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            insecure_no_auth: false,
        }
    }
}

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    shared: Arc<Shared>,
    tcp: Option<TcpListener>,
    unix: Option<(UnixListener, PathBuf)>,
    sync_interval: Duration,
    max_connections: usize,
    limits: conn::ConnLimits,
    _lock: File,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("tcp", &self.local_addr()).finish()
    }
}

/// Take an exclusive lock on the data directory so two servers never
/// share one set of journals.
fn lock_data_dir(data: &Path) -> Result<File> {
    use std::os::fd::AsRawFd;
    let path = data.join("LOCK");
    let f = File::create(&path).map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    // SAFETY: flock on a file descriptor we own and keep open.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(Error::new(
            ErrorKind::Unavailable,
            format!("{} is in use by another server", data.display()),
        ));
    }
    Ok(f)
}

/// Where values go unless `--values` says otherwise: the node's local
/// store, fsynced like 0-db (periodically, or on every write with --sync).
pub const DEFAULT_VALUES_DIR: &str = "chunks";

async fn open_values(cfg: &ServerConfig) -> Result<DynStore> {
    let url = match &cfg.values {
        Some(u) => u.clone(),
        None => {
            // The first layout kept values in dir://DATA/values: never
            // silently start without them.
            let old = cfg.data.join("values");
            if old.is_dir() {
                return Err(crate::error::invalid(format!(
                    "{} holds values of the earlier dir:// layout; start with --values dir://{}",
                    old.display(),
                    old.display()
                )));
            }
            let dir = cfg.data.join(DEFAULT_VALUES_DIR);
            StoreUrl::parse(&format!("local://{}", dir.display()))?
        }
    };
    let sync = if cfg.sync_writes {
        SyncPolicy::EveryPut
    } else {
        SyncPolicy::Periodic(cfg.sync_interval)
    };
    let opts = OpenOptions { sync, ..OpenOptions::default() };
    match &url.backend {
        // The server's values are its own, not a shared node store: opening
        // drops values no key refers to, which only the sole user may do.
        crate::url::Backend::Local { path } => {
            Ok(Arc::new(crate::local::LocalStore::open(path, &opts)?) as DynStore)
        }
        _ => open_backend(&url, &opts).await,
    }
}

fn bind_unix(path: &Path) -> Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    // A socket file left by an earlier run that did not exit cleanly.
    if let Ok(md) = std::fs::symlink_metadata(path) {
        if md.file_type().is_socket() {
            let _ = std::fs::remove_file(path);
        }
    }
    UnixListener::bind(path).map_err(|e| Error::io(format!("listen on {}", path.display()), e))
}

/// Without an admin password every client may create, change and delete
/// namespaces: such a server only listens where no one else can reach it,
/// unless told otherwise.
fn check_exposure(cfg: &ServerConfig) -> Result<()> {
    let Some(addr) = cfg.listen else { return Ok(()) };
    if cfg.admin.is_some() || addr.ip().is_loopback() {
        return Ok(());
    }
    if cfg.insecure_no_auth {
        eprintln!(
            "chunkstore serve: WARNING: listening on {addr} without an admin password \
             (--insecure-no-auth): anyone who reaches it is admin (NSNEW, NSDEL, NSSET, \
             FLUSH) and can read and write the default namespace"
        );
        return Ok(());
    }
    Err(crate::error::invalid(format!(
        "refusing to listen on {addr} (not a loopback address) without an admin password: \
         give --admin-file, CHUNKSTORE_ADMIN or --admin, or --insecure-no-auth to run open"
    )))
}

impl Server {
    /// Open the data directory, replay every namespace and bind the sockets.
    pub async fn bind(cfg: ServerConfig) -> Result<Server> {
        check_exposure(&cfg)?;
        if cfg.max_connections == 0 {
            return Err(crate::error::invalid("--max-connections must be at least 1"));
        }
        if cfg.protect && cfg.admin.is_none() {
            return Err(crate::error::invalid("--protect needs an admin password (--admin)"));
        }
        if cfg.listen.is_none() && cfg.unix.is_none() {
            return Err(crate::error::invalid(
                "nothing to listen on (no TCP address, no unix socket)",
            ));
        }
        std::fs::create_dir_all(&cfg.data)
            .map_err(|e| Error::io(format!("create {}", cfg.data.display()), e))?;
        let lock = lock_data_dir(&cfg.data)?;
        let ctx = Arc::new(Context {
            values: open_values(&cfg).await?,
            stats: IoStats::default(),
            sync_writes: cfg.sync_writes,
        });
        let (data, mode) = (cfg.data.clone(), cfg.mode);
        let (namespaces, trash) = tokio::task::spawn_blocking(move || {
            Namespaces::load(&data, ctx, mode.new_namespace_mode(), mode.forced())
        })
        .await
        .expect("namespace load task panicked")?;
        namespaces.purge(trash).await;
        if cfg.values.is_none() {
            // The default store is ours alone: drop values a crash orphaned.
            match namespaces.collect_garbage().await {
                Ok(0) => {}
                Ok(n) => tracing::info!("removed {n} values no key refers to (left by a crash)"),
                Err(e) => tracing::warn!("value garbage collection: {}", e.chain()),
            }
        }
        let dcfg = DialectConfig {
            mode: cfg.mode,
            admin: cfg.admin.clone(),
            protect: cfg.protect,
            data_dir: cfg.data.clone(),
        };
        let tcp = match cfg.listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| Error::io(format!("listen on {addr}"), e))?,
            ),
            None => None,
        };
        let unix = match &cfg.unix {
            Some(p) => Some((bind_unix(p)?, p.clone())),
            None => None,
        };
        Ok(Server {
            shared: Arc::new(Shared::new(dcfg, namespaces)),
            tcp,
            unix,
            sync_interval: cfg.sync_interval,
            max_connections: cfg.max_connections,
            limits: conn::ConnLimits { stall: cfg.request_timeout },
            _lock: lock,
        })
    }

    /// The bound TCP address (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Serve until `stop` completes, then stop accepting, let connections
    /// finish the request they are executing (up to 10 s), write and fsync
    /// every journal and sync the value store.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) -> Result<()> {
        let (down_tx, down_rx) = watch::channel(false);
        // Every connection task holds a sender; recv() returns None once all are gone.
        let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
        let shared = self.shared.clone();
        let spawner = Spawner {
            shared: shared.clone(),
            down: down_rx.clone(),
            alive: alive_tx.clone(),
            slots: Arc::new(Semaphore::new(self.max_connections)),
            max: self.max_connections,
            limits: self.limits,
        };
        let accept_tcp = {
            let spawner = &spawner;
            let listener = self.tcp;
            async move {
                let Some(l) = listener else { return std::future::pending::<()>().await };
                loop {
                    match l.accept().await {
                        Ok((s, peer)) => {
                            let _ = s.set_nodelay(true);
                            spawner.spawn(s, Some(peer.ip()));
                        }
                        Err(e) => accept_error(e).await,
                    }
                }
            }
        };
        let accept_unix = {
            let spawner = &spawner;
            let listener = self.unix.as_ref().map(|(l, _)| l);
            async move {
                let Some(l) = listener else { return std::future::pending::<()>().await };
                loop {
                    match l.accept().await {
                        Ok((s, _)) => spawner.spawn(s, None),
                        Err(e) => accept_error(e).await,
                    }
                }
            }
        };
        let periodic = async {
            let mut tick = tokio::time::interval(self.sync_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = sync_all(&shared).await {
                    tracing::error!("periodic sync: {}", e.chain());
                }
            }
        };
        tokio::select! {
            _ = stop => {}
            _ = accept_tcp => {}
            _ = accept_unix => {}
            _ = periodic => {}
        }
        let _ = down_tx.send(true);
        drop(spawner);
        drop(alive_tx);
        if tokio::time::timeout(Duration::from_secs(10), alive_rx.recv()).await.is_err() {
            tracing::warn!("connections still busy after 10 s; syncing anyway");
        }
        let res = sync_all(&shared).await;
        if let Some((_, path)) = &self.unix {
            let _ = std::fs::remove_file(path);
        }
        res
    }
}

/// Starts connection tasks, at most `max` at once.
struct Spawner {
    shared: Arc<Shared>,
    down: watch::Receiver<bool>,
    /// Every connection task holds a clone (see [`Server::run`]).
    alive: mpsc::Sender<()>,
    slots: Arc<Semaphore>,
    max: usize,
    limits: conn::ConnLimits,
}

/// Sent to a connection over [`ServerConfig::max_connections`] before it is closed.
const TOO_MANY: &str = "-Too many connections (--max-connections)\r\n";

impl Spawner {
    fn spawn<S>(&self, mut stream: S, peer: Option<IpAddr>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            tracing::debug!("refusing a connection: {} are open", self.max);
            self.shared.stats.connections_refused.fetch_add(1, Ordering::Relaxed);
            // Its own short-lived task: a client that does not read must not
            // hold up accepting.
            tokio::spawn(async move {
                let say = async {
                    let _ = stream.write_all(TOO_MANY.as_bytes()).await;
                    let _ = stream.shutdown().await;
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), say).await;
            });
            return;
        };
        let (shared, down, alive) = (self.shared.clone(), self.down.clone(), self.alive.clone());
        let limits = self.limits;
        tokio::spawn(async move {
            shared.stats.connections_open.fetch_add(1, Ordering::Relaxed);
            conn::serve(stream, shared.clone(), down, peer, limits).await;
            shared.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
            drop::<OwnedSemaphorePermit>(slot);
            drop(alive);
        });
    }
}

/// Out of file descriptors and the like: wait a little instead of spinning.
async fn accept_error(e: std::io::Error) {
    tracing::warn!("accept: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn sync_all(shared: &Shared) -> Result<()> {
    shared.namespaces.sync_all().await?;
    shared.namespaces.context().values.sync().await
}
