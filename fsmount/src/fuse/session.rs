//! Mounting the FUSE layer: fsmount opens /dev/fuse and calls mount(2)
//! itself (it runs as root), then hands the fd to a multi-threaded fuser
//! session. Owning the mount call keeps its options explicit and leaves
//! unmounting to the lifecycle code, which also works after a crash.
//!
//! Options depend on who looks at the FUSE mount ([`FuseView`]):
//! * the mountpoint itself (no rw layer): `allow_other` and
//!   `default_permissions`, so every user sees the kernel's own permission
//!   checks; `suid` and `dev` stay allowed, it is a root filesystem;
//! * the lower of an overlay: only root (the overlay's mounter) uses it,
//!   so no `allow_other`, and `nosuid,nodev`. The overlay still runs
//!   setuid binaries and opens devices: the kernel checks `nosuid`/`nodev`
//!   on the mount the path was opened through, which is the overlay. The
//!   lower also sits in a 0700 directory (`STATE/mounts/<id>/`).

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use fuser::{Config, Session, SessionACL};

use super::FuseFs;
use crate::error::{Error, Result};
use crate::sys::mount;

/// Filesystem type shown in mountinfo (`fuse.zosfs`).
pub const FSTYPE: &str = "fuse.zosfs";

/// A live FUSE mount served by background threads.
#[derive(Debug)]
pub struct FuseMount {
    pub mountpoint: PathBuf,
    /// Whether the kernel granted passthrough (known after the handshake).
    pub passthrough: Arc<AtomicBool>,
}

/// Who uses the FUSE mount directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FuseView {
    /// It is what users see (no overlay on top).
    Mountpoint,
    /// It is the lower layer of an overlay mounted by root.
    Lower,
}

impl FuseView {
    /// mount(2) flags and the FUSE options that differ between views.
    fn flags_and_options(self) -> (libc::c_ulong, &'static str) {
        let ro = libc::MS_RDONLY | libc::MS_NOATIME;
        match self {
            FuseView::Mountpoint => (ro, "allow_other,default_permissions"),
            FuseView::Lower => (ro | libc::MS_NOSUID | libc::MS_NODEV, "default_permissions"),
        }
    }
}

/// Mount `fs` read-only at `mountpoint` and serve it with `threads` worker
/// threads. `on_end` runs once the session ends (unmounted or aborted).
pub fn mount_fuse(
    fs: FuseFs,
    mountpoint: &Path,
    source: &str,
    view: FuseView,
    threads: usize,
    on_end: Box<dyn FnOnce(std::io::Result<()>) + Send>,
) -> Result<FuseMount> {
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| Error::io("open /dev/fuse", e))?;
    let (flags, view_opts) = view.flags_and_options();
    let opts = format!(
        "fd={},rootmode=40000,user_id=0,group_id=0,{view_opts},max_read=1048576",
        dev.as_raw_fd()
    );
    mount::mount(Path::new(source), mountpoint, FSTYPE, flags, &opts)?;
    let passthrough = fs.passthrough_flag();
    let mut cfg = Config::default();
    cfg.n_threads = Some(threads.max(1));
    cfg.clone_fd = true;
    let fd: OwnedFd = dev.into();
    let session = match Session::from_fd(fs, fd, SessionACL::All, cfg) {
        Ok(s) => s,
        Err(e) => {
            let _ = mount::umount(mountpoint, true);
            return Err(Error::io(format!("FUSE handshake on {}", mountpoint.display()), e));
        }
    };
    let bg = match session.spawn() {
        Ok(bg) => bg,
        Err(e) => {
            let _ = mount::umount(mountpoint, true);
            return Err(Error::io("start FUSE session threads", e));
        }
    };
    std::thread::Builder::new()
        .name("fsmount-session".into())
        .spawn(move || on_end(bg.join()))
        .map_err(|e| Error::io("spawn session watcher", e))?;
    Ok(FuseMount { mountpoint: mountpoint.to_path_buf(), passthrough })
}
