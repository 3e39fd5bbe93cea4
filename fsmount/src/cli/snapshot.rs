//! `fsmount snapshot NAME SNAP`: a btrfs snapshot of rw layer NAME, usable
//! later as `--rw SNAP`.

use std::process::ExitCode;

use anyhow::Result;

use super::mount::VolumeArgs;
use crate::lifecycle::teardown::release_volume_if_unused;
use crate::state::StateDir;
use crate::volume::Volume;

#[derive(clap::Args, Debug)]
pub struct SnapshotArgs {
    pub name: String,
    pub snap: String,
    /// Make the snapshot read-only (mountable only with --ro).
    #[arg(long)]
    pub readonly: bool,
    #[command(flatten)]
    pub volume: VolumeArgs,
}

pub fn run(a: SnapshotArgs, state: &StateDir) -> Result<ExitCode> {
    let spec = a.volume.spec(state)?;
    let _lock = state.lock()?;
    let vol = Volume::acquire(&spec, state)?;
    let res = vol.snapshot(&a.name, &a.snap, a.readonly);
    release_volume_if_unused(state, &spec)?;
    let path = res?;
    println!("fsmount: snapshot {} of {} at {}", a.snap, a.name, path.display());
    Ok(ExitCode::SUCCESS)
}
