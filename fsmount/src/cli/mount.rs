//! `fsmount [mount] FLIST MOUNTPOINT`: add the mount to the server of this
//! node cache, or become that server when none runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::Ctx;
use crate::daemon::{self, Readiness};
use crate::fuse::FuseOptions;
use crate::lifecycle::MountSpec;
use crate::naming::path_id;
use crate::records::fsmount_alive;
use crate::registry::Phase;
use crate::server::protocol::{Answer, Request};
use crate::server::{Event, Server, ServerOptions, client};
use crate::size::parse_size;
use crate::state::StateDir;
use crate::stats::http;
use crate::volume::{DEFAULT_IMAGE_SIZE, VolumeSpec};

/// Default node cache.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/zosfs";

/// Which btrfs volume holds rw layers.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct VolumeArgs {
    /// Volume for rw layers: an image file (created sparse when missing),
    /// a block device (formatted only when blank) or a directory on btrfs.
    /// Default: STATE/volume.img.
    #[arg(long, value_name = "PATH")]
    pub volume: Option<PathBuf>,
    /// Size of a volume image fsmount creates.
    #[arg(long, value_name = "SIZE", default_value = "10G", value_parser = parse_size_arg)]
    pub volume_size: u64,
}

impl VolumeArgs {
    pub fn spec(&self, state: &StateDir) -> Result<VolumeSpec> {
        let size = if self.volume_size == 0 { DEFAULT_IMAGE_SIZE } else { self.volume_size };
        Ok(VolumeSpec::resolve(self.volume.as_deref(), size, &state.default_image())?)
    }
}

fn parse_size_arg(s: &str) -> std::result::Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefetchMode {
    /// Fill every file of the mount in the background.
    All,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct MountArgs {
    /// [FLIST] MOUNTPOINT.
    #[arg(value_name = "FLIST MOUNTPOINT", num_args = 0..=2)]
    pub paths: Vec<PathBuf>,
    /// A layer to show (repeatable; later layers win). Taken after a
    /// positional FLIST.
    #[arg(long = "flist", value_name = "FLIST")]
    pub flists: Vec<PathBuf>,
    /// Chunk store URL (repeatable: replicas, routes).
    #[arg(
        long = "store",
        value_name = "URL",
        env = "ZOSFS_STORE",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub stores: Vec<String>,
    /// Without --store: read chunks from the stores the flist records,
    /// network ones (zdb://, redis://) only. Off by default: an flist is
    /// untrusted and could name any path or host.
    #[arg(long, env = "ZOSFS_USE_FLIST_ROUTES")]
    pub use_flist_routes: bool,
    /// Persistent read-write layer NAME (a btrfs subvolume).
    #[arg(long, value_name = "NAME")]
    pub rw: Option<String>,
    #[command(flatten)]
    pub volume: VolumeArgs,
    /// Limit the rw layer to SIZE (btrfs qgroup).
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg, requires = "rw")]
    pub quota: Option<u64>,
    /// Read-only: no writes (with --rw NAME, that layer is shown read-only).
    #[arg(long)]
    pub ro: bool,
    /// Node cache directory, shared by every mount using it (one serving
    /// process per cache): file contents in DIR/contents, unpacked flists
    /// in DIR/flists (fsmount does not use ZOSFS_FLIST_CACHE). Made 0700:
    /// it holds the images' files whatever their modes.
    #[arg(long, value_name = "DIR", env = "ZOSFS_CACHE", default_value = DEFAULT_CACHE_DIR)]
    pub cache: PathBuf,
    /// Byte budget of the node cache (least recently used content goes).
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    pub cache_size: Option<u64>,
    /// Seconds a read waits out an outage (no store reachable, or every
    /// replica hanging) before it fails with EIO, retrying meanwhile: the
    /// container sees a pause. 0: fail at once. Taken by the process that
    /// starts the server.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub outage_wait: u64,
    /// `all`: fill every file in the background.
    #[arg(long, value_name = "MODE")]
    pub prefetch: Option<PrefetchMode>,
    /// Bandwidth cap of --prefetch, bytes per second.
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size_arg)]
    pub prefetch_bandwidth: u64,
    /// Serve Prometheus text at ADDR (PORT, :PORT or HOST:PORT; host
    /// defaults to 127.0.0.1). Taken by the process that starts the server.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Detach once the mount is ready; the exact error otherwise.
    #[arg(short, long)]
    pub daemon: bool,
    /// Pid file of the serving process (default with -d: STATE/servers/<id>.pid).
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Log file of the serving process (default with -d: STATE/servers/<id>.log).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// FUSE worker threads per mount.
    #[arg(long, default_value_t = 8)]
    pub threads: usize,
    /// Never use FUSE passthrough (always serve reads in user space).
    #[arg(long)]
    pub no_passthrough: bool,
}

/// Mountpoint and sources from the positional and --flist arguments.
fn split_paths(a: &MountArgs) -> Result<(Vec<PathBuf>, PathBuf)> {
    let mut sources = Vec::new();
    let mountpoint = match a.paths.as_slice() {
        [mp] => mp.clone(),
        [src, mp] => {
            sources.push(src.clone());
            mp.clone()
        }
        _ => bail!("give FLIST MOUNTPOINT (or --flist FLIST … MOUNTPOINT)"),
    };
    sources.extend(a.flists.iter().cloned());
    if sources.is_empty() {
        bail!("no flist given: fsmount FLIST MOUNTPOINT");
    }
    Ok((sources, mountpoint))
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(p).with_context(|| format!("{}", p.display()))
}

fn build_spec(a: &MountArgs, state: &StateDir) -> Result<MountSpec> {
    let (sources, mountpoint) = split_paths(a)?;
    let sources = sources.iter().map(|s| absolute(s)).collect::<Result<Vec<_>>>()?;
    let mountpoint = absolute(&mountpoint).context("mountpoint")?;
    if let Some(n) = &a.rw {
        crate::naming::check_rw_name(n)?;
    }
    let volume = match &a.rw {
        Some(_) => Some(a.volume.spec(state)?),
        None => None,
    };
    Ok(MountSpec {
        sources,
        stores: a.stores.clone(),
        use_flist_routes: a.use_flist_routes,
        mountpoint,
        rw: a.rw.clone(),
        read_only: a.ro,
        volume,
        quota: a.quota,
        fuse: FuseOptions { passthrough: !a.no_passthrough },
        threads: a.threads.max(1),
        prefetch_all: a.prefetch == Some(PrefetchMode::All),
        prefetch_bandwidth: Some(a.prefetch_bandwidth).filter(|b| *b > 0),
    })
}

/// Ask a running server to mount. None: no server (start one).
fn try_join(socket: &Path, spec: &MountSpec) -> Result<Option<String>> {
    let req = Request::Mount { spec: spec.clone() };
    match client::call(socket, &req, Duration::from_secs(600)) {
        Ok(Answer::Ok(what)) => Ok(Some(what)),
        Ok(Answer::Error(msg)) => bail!("{msg}"),
        Ok(Answer::Retry) => Ok(None),
        Err(e) if e.kind() == crate::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A server of this state and cache that is exiting holds the cache and
/// the local stores until it is gone: wait for it (bounded) before
/// becoming the next server.
fn wait_exiting_server(state: &StateDir, cache: &Path) {
    let node = state.node();
    let Some(st) = node.server_status(state.root(), cache) else { return };
    if st.phase != Phase::Exiting || st.pid == std::process::id() {
        return;
    }
    let deadline = Instant::now() + EXITING_SERVER_WAIT;
    while fsmount_alive(st.pid) {
        if Instant::now() > deadline {
            eprintln!("fsmount: pid {} is still exiting; starting a new server anyway", st.pid);
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How long a new mount waits for an exiting server of its cache.
const EXITING_SERVER_WAIT: Duration = Duration::from_secs(30);

pub fn run(a: MountArgs, ctx: &Ctx) -> Result<ExitCode> {
    // Validate everything that can be checked before detaching.
    let state = ctx.open_state()?;
    let spec = build_spec(&a, &state)?;
    let metrics = a.metrics.as_deref().map(http::parse_addr).transpose()?;
    std::fs::create_dir_all(&a.cache)
        .with_context(|| format!("create cache directory {}", a.cache.display()))?;
    let cache_dir = absolute(&a.cache)?;
    let socket = state.node().server_socket(state.root(), &cache_dir);

    if let Some(what) = try_join(&socket, &spec)? {
        say(&what);
        if a.metrics.is_some() {
            eprintln!(
                "fsmount: --metrics ignored: this mount joined the running server of cache {} \
                 (its metrics are set when it starts; `fsmount list` shows it)",
                a.cache.display()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    wait_exiting_server(&state, &cache_dir);

    // No server for this cache: this process becomes it.
    let id = path_id(&cache_dir);
    let sdir = state.servers_dir();
    let (pid_file, log_file) = if a.daemon {
        (
            Some(a.pid_file.clone().unwrap_or_else(|| sdir.join(format!("{id}.pid")))),
            Some(a.log_file.clone().unwrap_or_else(|| sdir.join(format!("{id}.log")))),
        )
    } else {
        (a.pid_file.clone(), a.log_file.clone())
    };
    let readiness = match (&log_file, a.daemon) {
        (Some(log), true) => daemon::daemonize(log)?,
        (Some(log), false) => {
            daemon::redirect_stderr(log)?;
            Readiness::foreground()
        }
        _ => Readiness::foreground(),
    };
    super::init_logging();
    daemon::block_signals();
    let opts_log = log_file.clone();
    let opts = ServerOptions {
        cache_dir,
        cache_size: a.cache_size,
        outage_wait: std::time::Duration::from_secs(a.outage_wait),
        metrics,
        pid_file,
        log_file,
    };

    let mut server = match Server::bind(&state, opts) {
        Ok(s) => s,
        // Another process became the server meanwhile: join it.
        Err(e) if e.kind() == crate::ErrorKind::Busy => {
            return match try_join(&socket, &spec) {
                Ok(Some(what)) => {
                    readiness.ready(&what);
                    say(&what);
                    Ok(ExitCode::SUCCESS)
                }
                Ok(None) => {
                    readiness.failed("the fsmount server went away; try again");
                    bail!("the fsmount server went away; try again")
                }
                Err(e) => {
                    readiness.failed(&format!("{e:#}"));
                    Err(e)
                }
            };
        }
        Err(e) => {
            readiness.failed(&e.chain());
            return Err(e.into());
        }
    };
    let what = match server.mount(&spec) {
        Ok(w) => w,
        Err(e) => {
            let msg = e.chain();
            tracing::error!("mount {} failed: {msg}", spec.mountpoint.display());
            readiness.failed(&msg);
            bail!("{msg}");
        }
    };
    if let Some(addr) = server.metrics_addr() {
        tracing::info!("metrics on http://{addr}/metrics");
    }
    if a.daemon {
        // The terminal is gone from here on: say where the log goes.
        // The log note belongs to the first line; warnings follow it.
        let (first, warnings) = what.split_once('\n').unwrap_or((&what, ""));
        let note = server_log_note(opts_log.as_deref());
        readiness.ready(format!("{first}{note}\n{warnings}").trim_end());
    } else {
        say(&what);
    }

    let tx = server.events();
    std::thread::Builder::new()
        .name("fsmount-signals".into())
        .spawn(move || {
            loop {
                let sig = daemon::wait_signal();
                if tx.send(Event::Signal(sig)).is_err() {
                    return;
                }
            }
        })
        .context("spawn signal thread")?;
    server.run()?;
    tracing::info!("no mount left; exiting");
    Ok(ExitCode::SUCCESS)
}

/// ` (log PATH)` for the message of a daemon that logs to a file.
fn server_log_note(log: Option<&std::path::Path>) -> String {
    log.map(|l| format!(" (log {})", l.display())).unwrap_or_default()
}

/// Print a server's answer to a mount: what was mounted, then warnings.
fn say(what: &str) {
    zosfs_store::process::daemon::print_answer("fsmount", what, "");
}
