//! The fsmount server: one process per (state directory, node cache)
//! serves every mount that uses that cache.
//!
//! Why one process: the node cache keeps one LazyFile per distinct file
//! content, owned exclusively by one process (flock'ed). Two mounts of the
//! same flist share those files only if the same process serves both. (The
//! node's chunk store, `local://`, is shared by every process on the node
//! through its owner: zosfs_store::node.) So `fsmount FLIST MNT`
//! first asks a running server (RUN/servers/<server-id>.sock, see
//! [`registry`](crate::registry)) to add the mount, and becomes the server
//! itself only when none runs. The server exits when its last mount is
//! unmounted; its status file (RUN/servers/<server-id>.toml) says what it
//! is doing meanwhile, so `fsmount list` can tell why it is still alive.
//!
//! Everything that changes mounts runs in [`Server::run`]'s loop, one event
//! at a time: requests from the socket ([`listener`]), termination
//! signals, and FUSE sessions that ended from outside.

pub mod client;
pub mod listener;
pub mod protocol;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use zosfs_flist::stores::RoutePolicy;

use crate::cache::ContentCache;
use crate::daemon::PidFile;
use crate::error::{Error, ErrorKind, Result};
use crate::lifecycle::{self, MountSpec, MountView, Mounted, ServerFiles};
use crate::records::{FORMAT_VERSION, now_secs, read_toml, remove_file, write_toml};
use crate::registry::{Phase, ServerStatus};
use crate::state::StateDir;
use crate::stats::{Counters, http, prometheus};
use crate::tree::{self, Tree};
use listener::Listener;
use protocol::{Answer, Request};

/// Settings of the serving process (taken from the mount that starts it).
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// The node cache (LazyFiles, flist unpack cache, local chunk store).
    pub cache_dir: PathBuf,
    /// Byte budget of the node cache.
    pub cache_size: Option<u64>,
    /// How long reads wait out an unreachable store before EIO.
    pub outage_wait: std::time::Duration,
    pub metrics: Option<SocketAddr>,
    pub pid_file: Option<PathBuf>,
    pub log_file: Option<PathBuf>,
}

/// What the serving loop acts on.
pub enum Event {
    Signal(i32),
    Request {
        req: Request,
        reply: Sender<Answer>,
    },
    /// A FUSE session ended (unmounted or aborted from outside).
    SessionEnded {
        mountpoint: PathBuf,
    },
}

type Views = Arc<RwLock<BTreeMap<PathBuf, MountView>>>;

pub struct Server {
    state: StateDir,
    opts: ServerOptions,
    files: ServerFiles,
    mounts: BTreeMap<PathBuf, Mounted>,
    views: Views,
    events: Receiver<Event>,
    tx: Sender<Event>,
    listener: Listener,
    metrics: Option<SocketAddr>,
    /// File contents of every flist mount; owns the I/O runtime.
    cache: Arc<ContentCache>,
    _pid_file: Option<PidFile>,
    /// Signals received (a second one detaches busy mounts).
    signals: usize,
    /// Last: removed only once everything else is released.
    status: StatusFile,
}

/// Once the last mount is gone, the process exits within this time even if
/// releasing something (a prefetch task, the I/O runtime) hangs: nothing
/// is mounted by then, and every file it keeps is crash-safe.
const EXIT_GRACE: Duration = Duration::from_secs(10);

/// This process's status file in the run directory; removed on drop if it
/// still names this process.
struct StatusFile {
    path: PathBuf,
    status: ServerStatus,
    written: bool,
}

impl StatusFile {
    /// Write the status (only when it changed: `list` asks every server
    /// for stats, which must not cost a file write each).
    fn set(&mut self, phase: Phase, mounts: Vec<PathBuf>, why: String) {
        let s = &self.status;
        if self.written && s.phase == phase && s.mounts == mounts && s.why == why {
            return;
        }
        self.written = true;
        if phase != self.status.phase {
            self.status.since = now_secs();
        }
        self.status.phase = phase;
        self.status.mounts = mounts;
        self.status.why = why;
        if let Err(e) = write_toml(&self.path, &self.status, "server status") {
            tracing::warn!("cannot write the server status: {e}");
        }
    }
}

impl Drop for StatusFile {
    fn drop(&mut self) {
        let ours = read_toml::<ServerStatus>(&self.path, "server status")
            .ok()
            .flatten()
            .is_some_and(|s| s.pid == self.status.pid);
        if ours {
            let _ = remove_file(&self.path);
        }
    }
}

fn mounts_word(n: usize) -> String {
    if n == 1 { "1 mount".into() } else { format!("{n} mounts") }
}

impl Server {
    /// Become the server for this state directory and cache.
    /// Err(Busy) when one already answers on its socket.
    pub fn bind(state: &StateDir, opts: ServerOptions) -> Result<Server> {
        let node = state.node();
        node.prepare_run()?;
        let socket = node.server_socket(state.root(), &opts.cache_dir);
        let (tx, events) = channel();
        let (listener, mut status) = {
            let _lock = state.lock()?;
            if let Ok(Answer::Ok(_)) = client::call(&socket, &Request::Ping, Duration::from_secs(5))
            {
                return Err(Error::new(
                    ErrorKind::Busy,
                    format!("an fsmount server already serves {}", socket.display()),
                ));
            }
            let listener = Listener::start(&socket, tx.clone())?;
            let status = StatusFile {
                path: node.server_status_path(state.root(), &opts.cache_dir),
                status: ServerStatus {
                    version: FORMAT_VERSION,
                    pid: std::process::id(),
                    state: state.root().to_path_buf(),
                    cache: opts.cache_dir.clone(),
                    socket: socket.clone(),
                    started: now_secs(),
                    phase: Phase::Starting,
                    since: now_secs(),
                    mounts: Vec::new(),
                    why: String::new(),
                },
                written: false,
            };
            (listener, status)
        };
        status.set(Phase::Starting, Vec::new(), "setting up its first mount".into());
        let views: Views = Arc::default();
        let metrics = match opts.metrics {
            Some(addr) => {
                let v = views.clone();
                let render = move || {
                    let snaps: Vec<_> = v.read().values().map(MountView::snapshot).collect();
                    prometheus(&snaps)
                };
                Some(http::serve(addr, Arc::new(render))?)
            }
            None => None,
        };
        let pid_file = opts.pid_file.as_deref().map(PidFile::create).transpose()?;
        let mut cache = ContentCache::open(&opts.cache_dir, opts.cache_size)?;
        cache.set_outage_wait(opts.outage_wait);
        let cache = Arc::new(cache);
        Ok(Server {
            state: state.clone(),
            files: ServerFiles {
                control: socket,
                pid_file: opts.pid_file.clone(),
                log_file: opts.log_file.clone(),
                cache: Some(opts.cache_dir.clone()),
            },
            opts,
            mounts: BTreeMap::new(),
            views,
            events,
            tx,
            listener,
            metrics,
            cache,
            _pid_file: pid_file,
            signals: 0,
            status,
        })
    }

    pub fn socket(&self) -> &Path {
        self.listener.path()
    }

    /// Where `--metrics` listens (the bound port when 0 was asked).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// A sender for events (the signal thread uses it).
    pub fn events(&self) -> Sender<Event> {
        self.tx.clone()
    }

    pub fn options(&self) -> &ServerOptions {
        &self.opts
    }

    /// Open what a mount shows, lowest layer first: local directories as
    /// they are, anything else as an flist file.
    /// Also returns warnings for the terminal (stores not answering).
    fn open_tree(
        &self,
        spec: &MountSpec,
        counters: &Arc<Counters>,
    ) -> Result<(Arc<dyn Tree>, Vec<String>)> {
        let mut layers: Vec<Arc<dyn Tree>> = Vec::new();
        let mut warnings = Vec::new();
        for s in &spec.sources {
            if s.is_dir() {
                layers.push(Arc::new(tree::dir::DirTree::open(s)?));
                continue;
            }
            let t = Arc::new(tree::flist::FlistTree::open(
                s,
                &spec.stores,
                route_policy(spec),
                self.cache.clone(),
                counters.clone(),
            )?);
            if spec.prefetch_all {
                t.start_prefetch(spec.prefetch_bandwidth)?;
            }
            warnings.extend(t.probe_stores());
            layers.push(t);
        }
        warnings.dedup();
        if layers.len() == 1 {
            return Ok((layers.pop().expect("one layer"), warnings));
        }
        Ok((Arc::new(tree::union::UnionTree::new(layers)?), warnings))
    }

    /// Set up one mount; returns a line describing it.
    pub fn mount(&mut self, spec: &MountSpec) -> Result<String> {
        let counters = Arc::new(Counters::default());
        let (tree, warnings) = self.open_tree(spec, &counters)?;
        let tx = self.tx.clone();
        let mp = std::fs::canonicalize(&spec.mountpoint).unwrap_or(spec.mountpoint.clone());
        let on_end = Box::new(move |r: std::io::Result<()>| {
            if let Err(e) = r {
                tracing::warn!("FUSE session of {} ended: {e}", mp.display());
            }
            let _ = tx.send(Event::SessionEnded { mountpoint: mp });
        });
        let m = lifecycle::setup(&self.state, spec, tree, counters, &self.files, on_end)?;
        let mp = m.mountpoint().to_path_buf();
        let what = match &spec.rw {
            Some(rw) if spec.read_only => {
                format!("mounted at {} (rw layer {rw}, read-only)", mp.display())
            }
            Some(rw) => format!("mounted at {} (rw layer {rw})", mp.display()),
            None => format!("mounted at {} (read-only)", mp.display()),
        };
        tracing::info!("{what}");
        for w in &warnings {
            tracing::warn!("{}: {w}", mp.display());
        }
        // The caller prints the answer: the warnings reach the terminal.
        let what = std::iter::once(what).chain(warnings).collect::<Vec<_>>().join("\n");
        self.views.write().insert(mp.clone(), m.view().clone());
        self.mounts.insert(mp, m);
        Ok(what)
    }

    fn unmount(&mut self, mp: &Path, lazy: bool) -> Result<()> {
        let m = self.mounts.get(mp).ok_or_else(|| {
            Error::new(ErrorKind::NotFound, format!("{} is not served here", mp.display()))
        })?;
        m.stop(&self.state, lazy)?;
        tracing::info!("unmounted {}", mp.display());
        self.views.write().remove(mp);
        self.mounts.remove(mp);
        zosfs_store::malloc::give_back();
        Ok(())
    }

    fn handle(&mut self, req: Request) -> Answer {
        let res = match req {
            Request::Ping => Ok("pong".to_string()),
            Request::Mount { spec } => self.mount(&spec),
            Request::Umount { mountpoint, lazy } => self
                .unmount(&mountpoint, lazy)
                .map(|()| format!("unmounted {}", mountpoint.display())),
            Request::Stats { mountpoint } => match self.views.read().get(&mountpoint) {
                Some(v) => toml::to_string(&v.snapshot())
                    .map_err(|e| Error::new(ErrorKind::Io, format!("encode stats: {e}"))),
                None => Err(Error::new(
                    ErrorKind::NotFound,
                    format!("{} is not served here", mountpoint.display()),
                )),
            },
            Request::Metrics => {
                let snaps: Vec<_> = self.views.read().values().map(MountView::snapshot).collect();
                Ok(prometheus(&snaps))
            }
        };
        match res {
            Ok(body) => Answer::Ok(body),
            Err(e) => Answer::Error(e.chain()),
        }
    }

    /// Unmount everything (on a signal). Mounts that are busy stay and
    /// keep being served; `lazy` detaches them instead.
    fn stop_all(&mut self, lazy: bool) {
        let mps: Vec<PathBuf> = self.mounts.keys().cloned().collect();
        for mp in mps {
            if let Err(e) = self.unmount(&mp, lazy) {
                tracing::error!("cannot unmount {}: {e}; still serving it", mp.display());
            }
        }
    }

    /// Say in the status file what this process serves, and why.
    fn refresh_status(&mut self) {
        let mps: Vec<PathBuf> = self.mounts.keys().cloned().collect();
        let n = mps.len();
        if n == 0 {
            return;
        }
        if self.signals > 0 {
            let why = format!(
                "got a signal, but {} busy: serving until unmounted (`fsmount umount --lazy` detaches)",
                if n == 1 { "1 mount is".to_string() } else { format!("{n} mounts are") }
            );
            self.status.set(Phase::Stopping, mps, why);
        } else {
            self.status.set(Phase::Serving, mps, format!("serving {}", mounts_word(n)));
        }
    }

    /// Serve until no mount is left.
    pub fn run(mut self) -> Result<()> {
        self.refresh_status();
        while !self.mounts.is_empty() {
            let Ok(ev) = self.events.recv() else { break };
            match ev {
                Event::Signal(sig) => {
                    self.signals += 1;
                    tracing::info!("signal {sig}: unmounting everything");
                    // A second signal detaches what is still busy.
                    self.stop_all(self.signals > 1);
                }
                Event::Request { req, reply } => {
                    let a = self.handle(req);
                    let _ = reply.send(a);
                }
                Event::SessionEnded { mountpoint } => {
                    if let Some(m) = self.mounts.remove(&mountpoint) {
                        tracing::warn!(
                            "{} lost its FUSE session; cleaning up",
                            mountpoint.display()
                        );
                        self.views.write().remove(&mountpoint);
                        if let Err(e) = m.stop(&self.state, true) {
                            tracing::error!("clean up {}: {e}", mountpoint.display());
                        }
                    }
                }
            }
            self.refresh_status();
        }
        self.finish();
        // Dropping `self` releases the cache, the stores and the I/O
        // runtime; bounded, so `fsmount umount` (which waits for this
        // process) and the next server never wait for ever.
        let spawned = std::thread::Builder::new().name("fsmount-exit".into()).spawn(|| {
            std::thread::sleep(EXIT_GRACE);
            tracing::warn!(
                "still releasing resources {EXIT_GRACE:?} after the last unmount; exiting"
            );
            std::process::exit(0);
        });
        if spawned.is_err() {
            tracing::warn!("cannot start the exit watchdog");
        }
        Ok(())
    }

    /// No mount left: stop taking requests (new clients then start a new
    /// server), tell queued ones to retry, and let answers be written.
    fn finish(&mut self) {
        self.status.set(
            Phase::Exiting,
            Vec::new(),
            "its last mount is gone: answering queued requests, then releasing the cache".into(),
        );
        {
            // Under the lock: a new server binds the path under it too.
            let _lock = self.state.lock();
            self.listener.unlink();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.events.recv_timeout(Duration::from_millis(20)) {
                Ok(Event::Request { reply, .. }) => {
                    let _ = reply.send(Answer::Retry);
                }
                Ok(_) => {}
                Err(_) if self.listener.idle() || Instant::now() > deadline => break,
                Err(_) => {}
            }
        }
        self.listener.drain(Duration::from_secs(5));
    }
}

/// Whether a mount may read from the stores its flists record.
fn route_policy(spec: &MountSpec) -> RoutePolicy {
    if spec.use_flist_routes { RoutePolicy::Remote } else { RoutePolicy::Refuse }
}
