//! The kernel overlayfs union: the FUSE mount as the lower layer, the rw
//! layer's `upper/` and `work/` as upper and work directories.
//!
//! Options and why:
//! * `redirect_dir=on` — renaming a directory that comes from the lower
//!   layer works like on a plain filesystem instead of failing with EXDEV;
//! * `metacopy=on` — chmod/chown of a lower file copies only metadata up,
//!   so it does not fetch the file's whole content;
//! * `index=off` — the lower is a new FUSE instance on every mount, so
//!   overlay must not insist on matching file handles of an earlier one.
//!
//! `--ro` with an rw name shows that layer read-only: its upper directory
//! becomes a middle lower layer (whiteouts and opaque dirs still apply).

use std::path::Path;

use crate::error::Result;
use crate::sys::mount::{self, escape_overlay_path};
use crate::volume::RwLayer;

pub const FSTYPE: &str = "overlay";

/// The option string for a read-write overlay.
pub fn rw_options(lower: &Path, layer: &RwLayer) -> Result<String> {
    Ok(format!(
        "lowerdir={},upperdir={},workdir={},redirect_dir=on,metacopy=on,index=off",
        escape_overlay_path(lower)?,
        escape_overlay_path(&layer.upper)?,
        escape_overlay_path(&layer.work)?,
    ))
}

/// The option string for a read-only view of an rw layer over the lower.
pub fn ro_options(lower: &Path, layer: &RwLayer) -> Result<String> {
    Ok(format!(
        "lowerdir={}:{},redirect_dir=follow,metacopy=on,index=off",
        escape_overlay_path(&layer.upper)?,
        escape_overlay_path(lower)?,
    ))
}

/// Mount the overlay at `target`.
pub fn mount_overlay(target: &Path, lower: &Path, layer: &RwLayer, read_only: bool) -> Result<()> {
    let (opts, flags) = if read_only {
        (ro_options(lower, layer)?, libc::MS_RDONLY)
    } else {
        (rw_options(lower, layer)?, 0)
    };
    mount::mount(Path::new("zosfs"), target, FSTYPE, flags, &opts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn option_strings() {
        let l = RwLayer {
            name: "x".into(),
            subvolume: PathBuf::from("/v/rw/x"),
            upper: PathBuf::from("/v/rw/x/upper"),
            work: PathBuf::from("/v/rw/x/work"),
            created: false,
        };
        let o = rw_options(Path::new("/s/lo,wer"), &l).unwrap();
        assert!(o.starts_with("lowerdir=/s/lo\\,wer,upperdir=/v/rw/x/upper,workdir=/v/rw/x/work,"));
        let o = ro_options(Path::new("/s/lower"), &l).unwrap();
        assert!(o.starts_with("lowerdir=/v/rw/x/upper:/s/lower,"));
    }
}
