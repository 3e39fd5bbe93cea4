//! The `fsmount` command line. Each subcommand lives in its own module;
//! this file only defines the argument tree and dispatches.
//!
//! This is the binary's side of the crate: it reports errors with anyhow.

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

    /// State directory: mount records, volumes, control sockets.
    #[arg(long, global = true, env = "ZOSFS_STATE", default_value = DEFAULT_STATE_DIR)]
    pub state: PathBuf,
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

fn state(cli_state: &std::path::Path) -> Result<StateDir> {
    Ok(StateDir::open(cli_state)?)
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        None => mount::run(cli.mount, &cli.state),
        Some(Cmd::Mount(a)) => mount::run(a, &cli.state),
        Some(Cmd::Snapshot(a)) => {
            init_logging();
            snapshot::run(a, &state(&cli.state)?)
        }
        Some(Cmd::List(a)) => list::run(a, &state(&cli.state)?),
        Some(Cmd::Umount(a)) => {
            init_logging();
            umount::run(a, &state(&cli.state)?)
        }
        Some(Cmd::Rm(a)) => {
            init_logging();
            rm::run(a, &state(&cli.state)?)
        }
        Some(Cmd::Stats(a)) => stats::run(a, &state(&cli.state)?),
    }
}
