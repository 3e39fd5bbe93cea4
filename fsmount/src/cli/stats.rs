//! `fsmount stats MOUNTPOINT`: the counters of a mount, from its process.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::server::client;
use crate::state::StateDir;

#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    pub mountpoint: PathBuf,
    /// Print Prometheus text instead of a table.
    #[arg(long)]
    pub prometheus: bool,
}

pub fn run(a: StatsArgs, state: &StateDir) -> Result<ExitCode> {
    let rec = state.find(&a.mountpoint)?;
    if !rec.alive() {
        bail!(
            "the fsmount process of {} (pid {}) is gone; run `fsmount umount {}`",
            rec.mountpoint.display(),
            rec.pid,
            rec.mountpoint.display()
        );
    }
    let s = client::fetch_stats(&rec.control, &rec.mountpoint)?;
    if a.prometheus {
        print!("{}", s.prometheus());
    } else {
        print!("{}", s.human());
    }
    Ok(ExitCode::SUCCESS)
}
