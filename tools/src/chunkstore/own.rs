//! `chunkstore own`: hold a node store and serve it to the node's other
//! processes until stopped.
//!
//! Without it the first process to open `local://PATH` owns the store and
//! ownership moves to a survivor when that process exits. A node service
//! running `chunkstore own` keeps the io_uring engine, the index and the
//! group commit in one long-lived process, so mounts and devices coming and
//! going never replay the log's tail.

use std::process::ExitCode;

use anyhow::{Result, bail};
use zosfs_store::engine::EngineChoice;
use zosfs_store::node::{NodeStore, Role};
use zosfs_store::{OpenOptions, StoreUrl};

use super::serve::stop_signal;
use super::stat::local_path;

/// Own a node store and serve it to this node's other processes
///
/// Holds local://PATH (its lock, io_uring engine, index and group commit)
/// and serves it over /run/zosfs/stores/ to every fsmount, nbdserver and
/// tool on the node until SIGTERM or SIGINT. Without it the first process
/// to open the store owns it and ownership moves to a survivor when that
/// process exits; run this as a node service to keep it in one place.
/// Fails, naming the owner, if another process owns the store already.
#[derive(clap::Args, Debug)]
pub struct OwnArgs {
    /// The node store (local:///path).
    #[arg(short, long = "store", env = "ZOSFS_STORE", hide_env_values = true)]
    pub store: String,
    /// I/O engine: auto, uring or sync.
    #[arg(long, default_value = "auto")]
    pub engine: EngineChoice,
}

pub async fn own(a: OwnArgs) -> Result<ExitCode> {
    let path = local_path(&a.store)?;
    let name = a.store.parse::<StoreUrl>()?.redacted();
    let opts = OpenOptions { engine: a.engine, ..Default::default() };
    let store = NodeStore::open(&path, &opts)?;
    if let Role::Client { owner_pid, socket } = store.role() {
        bail!(
            "{name} is already owned by pid {owner_pid} (serving {}): stop that process first",
            socket.display()
        );
    }
    if let Some(r) = store.open_report() {
        let how = if r.from_snapshot { "index snapshot" } else { "full replay" };
        eprintln!("{name}: opened from {how}, {} records replayed", r.replayed_records);
    }
    eprintln!("owning {name} (pid {}); stop with SIGTERM or SIGINT", std::process::id());
    stop_signal().await?;
    eprintln!("{name}: released");
    Ok(ExitCode::SUCCESS)
}
