//! The `fsmount` command line. Each subcommand lives in its own module;
//! this file only defines the argument tree and dispatches.
//!
//! This is the binary's side of the crate: it reports errors with anyhow.

mod layers;
mod list;
mod mount;
mod rm;
mod snapshot;
mod stats;
mod umount;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

pub use mount::MountArgs;

use crate::registry::{DEFAULT_REGISTRY_DIR, DEFAULT_RUN_DIR, Node};
use crate::state::{DEFAULT_STATE_DIR, StateDir};

/// Mount an flist lazily: the tree appears at once, file contents are
/// fetched from the chunk stores when read, and writes persist in a btrfs
/// rw layer.
///
/// `fsmount [OPTIONS] FLIST MOUNTPOINT` mounts (FLIST may also be a local
/// directory); `--flist A --flist B MOUNTPOINT` layers several, later wins.
/// A source literally named like a subcommand needs a path prefix (./list).
#[derive(Parser, Debug)]
#[command(name = "fsmount", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Option<Cmd>,

    #[command(flatten)]
    pub mount: MountArgs,

    /// State directory: mount records, volumes [default: /var/lib/zosfs].
    /// umount, list, stats, snapshot and rm also find mounts and rw layers
    /// of other state directories through the node registry.
    #[arg(long, global = true, value_name = "DIR", env = "ZOSFS_STATE")]
    pub state: Option<PathBuf>,

    /// Node registry: every mount and rw layer on this node (persistent).
    #[arg(long, global = true, value_name = "DIR", env = "ZOSFS_REGISTRY", default_value = DEFAULT_REGISTRY_DIR)]
    pub registry: PathBuf,

    /// Runtime directory: control sockets and status of serving processes.
    #[arg(long, global = true, value_name = "DIR", env = "ZOSFS_RUN_DIR", default_value = DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,
}

/// Flags of a mount that management commands accept too, so a script can
/// give every command the same flags. They are not needed: the mount is
/// found through the node registry whatever its cache or stores.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MountFlags {
    /// The node cache of the mount (accepted; not needed to find it).
    #[arg(long, value_name = "DIR", env = "ZOSFS_CACHE")]
    pub cache: Option<PathBuf>,
    /// The chunk stores of the mount (accepted; not needed).
    #[arg(
        long = "store",
        value_name = "URL",
        env = "ZOSFS_STORE",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub stores: Vec<String>,
}

/// Where a command looks: the node, and the state directory given.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub node: Node,
    /// --state / ZOSFS_STATE, when given.
    pub state: Option<PathBuf>,
}

impl Ctx {
    /// The state directory given, or the default one.
    pub fn state_root(&self) -> PathBuf {
        self.state.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
    }

    /// Open (creating) the state directory given, or the default one.
    pub fn open_state(&self) -> Result<StateDir> {
        Ok(StateDir::open(&self.state_root(), &self.node)?)
    }

    /// The state directory to look in first, if it exists (looking never
    /// creates one).
    pub fn hint_state(&self) -> Option<StateDir> {
        StateDir::existing(&self.state_root(), &self.node)
    }
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Mount (the same as giving FLIST MOUNTPOINT without a subcommand).
    Mount(MountArgs),
    /// Snapshot rw layer NAME as a new rw layer SNAP.
    Snapshot(snapshot::SnapshotArgs),
    /// Show mounts: flists, rw layer, bytes fetched, cache hit ratio.
    List(list::ListArgs),
    /// Unmount: overlay, FUSE, and the volume when no longer used.
    Umount(umount::UmountArgs),
    /// Delete rw layer NAME (it must not be mounted).
    Rm(rm::RmArgs),
    /// Counters of a mount (fetches, hits, latency histogram, opens).
    Stats(stats::StatsArgs),
}

/// Log to stderr (the log file in daemon mode); `RUST_LOG` overrides `info`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let ctx = Ctx { node: Node::new(&cli.registry, &cli.run_dir), state: cli.state };
    match cli.cmd {
        None => mount::run(cli.mount, &ctx),
        Some(Cmd::Mount(a)) => mount::run(a, &ctx),
        Some(Cmd::Snapshot(a)) => {
            init_logging();
            snapshot::run(a, &ctx)
        }
        Some(Cmd::List(a)) => list::run(a, &ctx),
        Some(Cmd::Umount(a)) => {
            init_logging();
            umount::run(a, &ctx)
        }
        Some(Cmd::Rm(a)) => {
            init_logging();
            rm::run(a, &ctx)
        }
        Some(Cmd::Stats(a)) => stats::run(a, &ctx),
    }
}
