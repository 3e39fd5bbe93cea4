//! `fsmount rm NAME`: delete an rw layer that no mount uses.

use std::process::ExitCode;

use anyhow::{Result, bail};

use super::mount::VolumeArgs;
use crate::lifecycle::teardown::release_volume_if_unused;
use crate::state::StateDir;
use crate::volume::Volume;

#[derive(clap::Args, Debug)]
pub struct RmArgs {
    pub name: String,
    #[command(flatten)]
    pub volume: VolumeArgs,
}

pub fn run(a: RmArgs, state: &StateDir) -> Result<ExitCode> {
    crate::naming::check_rw_name(&a.name)?;
    let spec = a.volume.spec(state)?;
    let _lock = state.lock()?;
    if let Some(r) = state.records()?.iter().find(|r| {
        r.rw.as_deref() == Some(a.name.as_str())
            && r.volume.as_ref().is_some_and(|v| v.same_as(&spec))
    }) {
        bail!("rw layer {:?} is mounted at {}; unmount it first", a.name, r.mountpoint.display());
    }
    let vol = Volume::acquire(&spec, state)?;
    let res = vol.remove_rw(&a.name);
    release_volume_if_unused(state, &spec)?;
    res?;
    println!("fsmount: removed rw layer {}", a.name);
    Ok(ExitCode::SUCCESS)
}
