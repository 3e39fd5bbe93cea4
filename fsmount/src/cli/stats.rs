//! `fsmount stats MOUNTPOINT`: the counters of a mount, from its process
//! (found whatever state directory and cache it was made with).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};

use super::{Ctx, MountFlags};
use crate::server::client;

#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    pub mountpoint: PathBuf,
    /// Print Prometheus text instead of a table.
    #[arg(long)]
    pub prometheus: bool,
    #[command(flatten)]
    pub flags: MountFlags,
}

pub fn run(a: StatsArgs, ctx: &Ctx) -> Result<ExitCode> {
    let (_, rec) = ctx.node.find_mount(ctx.hint_state().as_ref(), &a.mountpoint)?;
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
