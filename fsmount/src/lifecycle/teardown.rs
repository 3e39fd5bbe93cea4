//! Undoing a mount, from its record and from what mountinfo shows is still
//! in place. Used by the serving process on exit and by `fsmount umount`
//! after that process died (kill -9): the same steps, idempotent.

use std::path::Path;

use crate::error::{Error, ErrorKind, Result};
use crate::fuse::session::FSTYPE as FUSE_FSTYPE;
use crate::overlay::FSTYPE as OVERLAY_FSTYPE;
use crate::state::{MountRecord, StateDir};
use crate::sys::mount;
use crate::volume::Volume;

/// Unmount every mount of `fstype` stacked at `path` (top first).
fn unmount_kind(path: &Path, pred: impl Fn(&str) -> bool, lazy: bool) -> Result<()> {
    while let Some(m) = mount::mounted_at(path)? {
        if !pred(&m.fstype) {
            break;
        }
        mount::umount(path, lazy).map_err(|e| {
            if e.kind() == ErrorKind::Busy {
                Error::new(
                    ErrorKind::Busy,
                    format!(
                        "{} is busy (processes use it); stop them or use --lazy",
                        path.display()
                    ),
                )
            } else {
                e
            }
        })?;
    }
    Ok(())
}

/// Tear down what `rec` set up. Call with the state lock held.
///
/// Order: overlay, then FUSE (the overlay pins it), then the record and
/// its registry entry, then the volume when no other record uses it. A busy overlay stops the
/// teardown before anything is undone, so the mount keeps working.
pub fn teardown(state: &StateDir, rec: &MountRecord, lazy: bool) -> Result<()> {
    if rec.overlay {
        unmount_kind(&rec.mountpoint, |t| t == OVERLAY_FSTYPE, lazy)?;
    }
    unmount_kind(&rec.lower, |t| t == FUSE_FSTYPE, lazy)?;
    if rec.overlay {
        let _ = std::fs::remove_dir(&rec.lower);
    }
    state.remove_record(&rec.mountpoint)?;
    state.node().release_mount(&rec.mountpoint, state.root())?;
    let mdir = state.mount_dir(&rec.mountpoint);
    let _ = std::fs::remove_dir(mdir.join("lower"));
    let _ = std::fs::remove_dir(&mdir);
    if let Some(vol) = &rec.volume {
        release_volume_if_unused(state, vol)?;
    }
    Ok(())
}

/// Release a volume no record refers to any more.
pub fn release_volume_if_unused(state: &StateDir, vol: &crate::volume::VolumeSpec) -> Result<()> {
    let used = state.records()?.iter().any(|r| r.volume.as_ref().is_some_and(|v| v.same_as(vol)));
    if !used {
        Volume::release(vol, &state.volumes_dir())?;
    }
    Ok(())
}
