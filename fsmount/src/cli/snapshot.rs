//! `fsmount snapshot NAME SNAP`: a btrfs snapshot of rw layer NAME, usable
//! later as `--rw SNAP`, on the volume holding NAME (found through the
//! node registry whatever state directory it belongs to).

use std::process::ExitCode;

use anyhow::Result;

use super::layers::layer_home;
use super::mount::VolumeArgs;
use super::{Ctx, MountFlags};
use crate::lifecycle::teardown::release_volume_if_unused;
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
    #[command(flatten)]
    pub flags: MountFlags,
}

pub fn run(a: SnapshotArgs, ctx: &Ctx) -> Result<ExitCode> {
    let (state, spec) = layer_home(ctx, &a.name, &a.volume)?;
    crate::naming::check_rw_name(&a.snap)?;
    let _lock = state.lock()?;
    let vol = Volume::acquire(&spec, &state.volumes_dir())?;
    let res = vol.snapshot(&a.name, &a.snap, a.readonly);
    release_volume_if_unused(&state, &spec)?;
    let path = res?;
    ctx.node.record_layer(&a.snap, state.root(), &spec)?;
    println!("fsmount: snapshot {} of {} at {}", a.snap, a.name, path.display());
    Ok(ExitCode::SUCCESS)
}
