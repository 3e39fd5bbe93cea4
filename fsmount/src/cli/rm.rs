//! `fsmount rm NAME`: delete an rw layer that no mount uses (found
//! through the node registry whatever state directory holds it).

use std::process::ExitCode;

use anyhow::{Result, bail};

use super::layers::layer_home;
use super::mount::VolumeArgs;
use super::{Ctx, MountFlags};
use crate::ErrorKind;
use crate::lifecycle::teardown::release_volume_if_unused;
use crate::volume::Volume;

#[derive(clap::Args, Debug)]
pub struct RmArgs {
    pub name: String,
    #[command(flatten)]
    pub volume: VolumeArgs,
    #[command(flatten)]
    pub flags: MountFlags,
}

pub fn run(a: RmArgs, ctx: &Ctx) -> Result<ExitCode> {
    let (state, spec) = layer_home(ctx, &a.name, &a.volume)?;
    let _lock = state.lock()?;
    if let Some(r) = state.records()?.iter().find(|r| {
        r.rw.as_deref() == Some(a.name.as_str())
            && r.volume.as_ref().is_some_and(|v| v.same_as(&spec))
    }) {
        bail!("rw layer {:?} is mounted at {}; unmount it first", a.name, r.mountpoint.display());
    }
    let vol = Volume::acquire(&spec, &state.volumes_dir())?;
    let res = vol.remove_rw(&a.name);
    release_volume_if_unused(&state, &spec)?;
    match &res {
        Ok(()) => ctx.node.forget_layer(&a.name, &spec)?,
        Err(e) if e.kind() == ErrorKind::NotFound => ctx.node.forget_layer(&a.name, &spec)?,
        Err(_) => {}
    }
    res?;
    println!("fsmount: removed rw layer {}", a.name);
    Ok(ExitCode::SUCCESS)
}
