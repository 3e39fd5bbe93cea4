//! `fsmount [mount] FLIST MOUNTPOINT`: set up and serve one mount.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use crate::daemon::{self, Readiness};
use crate::fuse::FuseOptions;
use crate::lifecycle::{self, Event, MountSpec};
use crate::size::parse_size;
use crate::state::StateDir;
use crate::stats::{Counters, http};
use crate::tree::{self, Tree};
use crate::volume::{DEFAULT_IMAGE_SIZE, VolumeSpec};

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
        Ok(VolumeSpec::resolve(self.volume.as_deref(), size, state)?)
    }
}

fn parse_size_arg(s: &str) -> std::result::Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
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
    #[arg(long = "store", value_name = "URL", env = "ZOSFS_STORE", value_delimiter = ',')]
    pub stores: Vec<String>,
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
    /// Serve Prometheus text at ADDR (PORT, :PORT or HOST:PORT; host
    /// defaults to 127.0.0.1).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Detach once the mount is ready; the exact error otherwise.
    #[arg(short, long)]
    pub daemon: bool,
    /// Pid file (default with -d: STATE/mounts/<id>/fsmount.pid).
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Log file (default with -d: STATE/mounts/<id>/fsmount.log).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// FUSE worker threads.
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

/// Open the layers, lowest first.
fn open_tree(sources: &[PathBuf], _a: &MountArgs) -> Result<Arc<dyn Tree>> {
    let mut layers: Vec<Arc<dyn Tree>> = Vec::new();
    for s in sources {
        if s.is_dir() {
            layers.push(Arc::new(tree::dir::DirTree::open(s)?));
        } else {
            bail!("{}: flist files are served once the flist reader is in place", s.display());
        }
    }
    if layers.len() == 1 {
        return Ok(layers.pop().expect("one layer"));
    }
    Ok(Arc::new(tree::union::UnionTree::new(layers)?))
}

pub fn run(a: MountArgs, state_root: &Path) -> Result<ExitCode> {
    // Validate everything that can be checked before detaching.
    let (sources, mountpoint) = split_paths(&a)?;
    let sources = sources.iter().map(|s| absolute(s)).collect::<Result<Vec<_>>>()?;
    let mountpoint = absolute(&mountpoint).context("mountpoint")?;
    if let Some(n) = &a.rw {
        crate::naming::check_rw_name(n)?;
    }
    let metrics = a.metrics.as_deref().map(http::parse_addr).transpose()?;
    let state = StateDir::open(state_root)?;
    let volume = match &a.rw {
        Some(_) => Some(a.volume.spec(&state)?),
        None => None,
    };
    let mdir = state.mount_dir(&mountpoint);
    std::fs::create_dir_all(&mdir).with_context(|| format!("create {}", mdir.display()))?;
    let (pid_file, log_file) = if a.daemon {
        (
            Some(a.pid_file.clone().unwrap_or_else(|| mdir.join("fsmount.pid"))),
            Some(a.log_file.clone().unwrap_or_else(|| mdir.join("fsmount.log"))),
        )
    } else {
        (a.pid_file.clone(), a.log_file.clone())
    };

    let readiness = match (&log_file, a.daemon) {
        (Some(log), true) => daemon::daemonize(log)?,
        (Some(log), false) => {
            redirect_stderr(log)?;
            Readiness::foreground()
        }
        _ => Readiness::foreground(),
    };
    super::init_logging();
    daemon::block_signals();

    let spec = MountSpec {
        sources: sources.iter().map(|s| s.display().to_string()).collect(),
        mountpoint: mountpoint.clone(),
        rw: a.rw.clone(),
        read_only: a.ro,
        volume,
        quota: a.quota,
        metrics,
        fuse: FuseOptions { passthrough: !a.no_passthrough },
        threads: a.threads,
        pid_file,
        log_file,
    };
    let counters = Arc::new(Counters::default());
    let mounted = match open_tree(&sources, &a)
        .and_then(|t| Ok(lifecycle::setup(&state, &spec, t, counters)?))
    {
        Ok(m) => m,
        Err(e) => {
            let msg = format!("{e:#}");
            tracing::error!("mount {} failed: {msg}", mountpoint.display());
            readiness.failed(&msg);
            return Err(e);
        }
    };
    let what = match &spec.rw {
        Some(rw) => format!("mounted at {} (rw layer {rw})", mountpoint.display()),
        None => format!("mounted at {} (read-only)", mountpoint.display()),
    };
    tracing::info!("{what}");
    if let Some(addr) = mounted.metrics_addr() {
        tracing::info!("metrics on http://{addr}/metrics");
    }
    if a.daemon {
        readiness.ready(&what);
    } else {
        println!("fsmount: {what}");
    }

    let tx = mounted.events();
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
    mounted.run()?;
    tracing::info!("unmounted {}", mountpoint.display());
    Ok(ExitCode::SUCCESS)
}

/// Foreground with --log-file: send our stderr (the log) there.
fn redirect_stderr(log: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open log file {}", log.display()))?;
    // SAFETY: dup2 of a descriptor we own onto stderr.
    if unsafe { libc::dup2(f.as_raw_fd(), 2) } < 0 {
        return Err(std::io::Error::last_os_error()).context("redirect stderr");
    }
    Ok(())
}
