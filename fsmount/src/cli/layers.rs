//! Where an rw layer lives, for `snapshot` and `rm`: the node registry
//! notes which volume (of which state directory) holds each layer a mount
//! used or a snapshot made, so NAME alone finds it.

use std::path::Path;

use anyhow::{Result, bail};

use super::Ctx;
use super::mount::VolumeArgs;
use crate::state::StateDir;
use crate::volume::VolumeSpec;

/// The state directory and volume holding rw layer `name`: the registry's
/// note, narrowed by --state and --volume when given; without a note, the
/// given (or default) state directory and volume, as fsmount always did.
pub fn layer_home(ctx: &Ctx, name: &str, vol: &VolumeArgs) -> Result<(StateDir, VolumeSpec)> {
    crate::naming::check_rw_name(name)?;
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let mut found = ctx.node.layers_named(name)?;
    if let Some(s) = &ctx.state {
        let s = canon(s);
        found.retain(|l| l.state == s);
    }
    if let Some(v) = &vol.volume {
        let v = canon(v);
        found.retain(|l| l.volume.path() == v);
    }
    let mut homes = Vec::new();
    for l in found {
        match StateDir::existing(&l.state, &ctx.node) {
            Some(st) => homes.push((st, l.volume)),
            None => {
                tracing::info!(
                    "forgetting rw layer {name} of removed state directory {}",
                    l.state.display()
                );
                ctx.node.forget_layer(name, &l.volume)?;
            }
        }
    }
    match homes.len() {
        0 => {
            let st = ctx.open_state()?;
            let spec = vol.spec(&st)?;
            Ok((st, spec))
        }
        1 => Ok(homes.remove(0)),
        _ => {
            let list: Vec<String> = homes
                .iter()
                .map(|(st, v)| format!("{} (state {})", v.path().display(), st.root().display()))
                .collect();
            bail!(
                "rw layer {name:?} exists on {} volumes: {}; say which with --state or --volume",
                homes.len(),
                list.join(", ")
            )
        }
    }
}
