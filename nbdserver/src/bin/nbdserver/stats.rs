//! `nbdserver stats`: ask a running server for its counters.

use std::path::PathBuf;

use anyhow::{Result, bail};
use zosfs_nbdserver::server::control::{control_path, query};

#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// The server's cache dir (its control socket is CACHE_DIR/control.sock).
    #[arg(long, value_name = "DIR", required_unless_present = "control")]
    pub cache_dir: Option<PathBuf>,
    /// The control socket itself.
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Print Prometheus text instead.
    #[arg(long)]
    pub prometheus: bool,
}

pub fn run(a: StatsArgs) -> Result<()> {
    let socket = match (&a.control, &a.cache_dir) {
        (Some(p), _) => p.clone(),
        (None, Some(d)) => control_path(d),
        (None, None) => bail!("give --cache-dir DIR or --control PATH"),
    };
    let cmd = if a.prometheus { "metrics" } else { "stats" };
    print!("{}", query(&socket, cmd)?);
    Ok(())
}
