//! The state directory (default /var/lib/zosfs): what fsmount mounted, so
//! `list`, `stats` and `umount` work from another process, also after the
//! mounting process died by kill -9.
//!
//! ```text
//! STATE/lock                 flock serialising every management change
//! STATE/volume.img           the default volume image
//! STATE/volumes/<id>/        where image / device volumes are mounted
//! STATE/mounts/<id>.toml     one record per mountpoint (written atomically)
//! STATE/mounts/<id>/lower    the FUSE mount under an overlay
//! STATE/servers/<cache-id>.{pid,log}  default pid and log files of the
//!                            process serving that cache
//! ```
//!
//! Control sockets are runtime files under the node's run directory, and
//! every mount is also listed in the node [`registry`](crate::registry), so
//! it is found whatever state directory it was made with.
//!
//! Records say what was set up; teardown checks mountinfo for what is still
//! in place, so a record can always be cleaned whatever state it is in.
//! The formats are described in docs/formats/fsmount-registry.md.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::naming::path_id;
use crate::node::Node;
use crate::records::{
    fsmount_alive, private_dir, private_root, read_toml, remove_file, write_toml,
};
use crate::sys::FileLock;
use crate::volume::VolumeSpec;

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/zosfs";

fn format_v1() -> u32 {
    1
}

#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
    node: Node,
}

/// One mount, as recorded by the process serving it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MountRecord {
    /// Format version (records written before versions existed are 1).
    #[serde(default = "format_v1")]
    pub version: u32,
    /// Where the user sees the tree (overlay or FUSE).
    pub mountpoint: PathBuf,
    /// The flists (or directories) shown, lowest layer first.
    pub sources: Vec<String>,
    /// The rw layer name, when there is a read-write layer.
    pub rw: Option<String>,
    pub read_only: bool,
    /// The volume holding the rw layer.
    pub volume: Option<VolumeSpec>,
    /// The FUSE mountpoint (== mountpoint when there is no overlay).
    pub lower: PathBuf,
    /// An overlay is mounted at `mountpoint` over `lower`.
    pub overlay: bool,
    /// The process serving the FUSE mount.
    pub pid: u32,
    pub control: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub log_file: Option<PathBuf>,
    /// The node cache of the serving process (absent in older records).
    #[serde(default)]
    pub cache: Option<PathBuf>,
    /// Seconds since the epoch.
    pub started: u64,
}

impl MountRecord {
    /// Whether the serving process still runs (and is an fsmount).
    pub fn alive(&self) -> bool {
        fsmount_alive(self.pid)
    }
}

impl StateDir {
    /// Open (creating) a state directory.
    ///
    /// Every directory fsmount makes here is 0700: the FUSE lower of a
    /// mount and the volumes hold whatever the images and rw layers hold
    /// (setuid binaries, device nodes), and only the overlay on top is
    /// meant to be seen by other users.
    pub fn open(root: &Path, node: &Node) -> Result<StateDir> {
        private_root(root, "lock")?;
        let root = std::fs::canonicalize(root)
            .map_err(|e| Error::io(format!("resolve state directory {}", root.display()), e))?;
        let s = StateDir { root, node: node.clone() };
        for d in [s.mounts_dir(), s.volumes_dir(), s.servers_dir()] {
            private_dir(&d)?;
        }
        Ok(s)
    }

    /// A state directory that already exists (None otherwise): lookups must
    /// not create the directory a stale registry entry names.
    pub fn existing(root: &Path, node: &Node) -> Option<StateDir> {
        let root = std::fs::canonicalize(root).ok()?;
        let s = StateDir { root, node: node.clone() };
        s.mounts_dir().is_dir().then_some(s)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The node registry and run directory this state works with.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Serialise management changes between fsmount processes.
    pub fn lock(&self) -> Result<FileLock> {
        FileLock::exclusive(&self.root.join("lock"))
    }

    pub fn default_image(&self) -> PathBuf {
        self.root.join("volume.img")
    }

    pub fn volumes_dir(&self) -> PathBuf {
        self.root.join("volumes")
    }

    /// Default pid and log files of serving processes.
    pub fn servers_dir(&self) -> PathBuf {
        self.root.join("servers")
    }

    pub fn mounts_dir(&self) -> PathBuf {
        self.root.join("mounts")
    }

    /// Per-mount directory (lower mountpoint, socket, pid and log files).
    pub fn mount_dir(&self, mountpoint: &Path) -> PathBuf {
        self.mounts_dir().join(path_id(mountpoint))
    }

    fn record_path(&self, mountpoint: &Path) -> PathBuf {
        self.mounts_dir().join(format!("{}.toml", path_id(mountpoint)))
    }

    /// Write a record atomically (temp file, fsync, rename).
    pub fn write_record(&self, r: &MountRecord) -> Result<()> {
        write_toml(&self.record_path(&r.mountpoint), r, "mount record")
    }

    pub fn remove_record(&self, mountpoint: &Path) -> Result<()> {
        remove_file(&self.record_path(mountpoint))
    }

    pub fn record(&self, mountpoint: &Path) -> Result<Option<MountRecord>> {
        read_toml(&self.record_path(mountpoint), "mount record")
    }

    /// Every record, sorted by mountpoint. Unreadable records are reported
    /// and skipped (a half-written one cannot exist: writes are atomic).
    pub fn records(&self) -> Result<Vec<MountRecord>> {
        let dir = self.mounts_dir();
        let rd =
            std::fs::read_dir(&dir).map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
        let mut out = Vec::new();
        for ent in rd.flatten() {
            let p = ent.path();
            if p.extension().is_some_and(|x| x == "toml") {
                match read_toml::<MountRecord>(&p, "mount record") {
                    Ok(Some(r)) => out.push(r),
                    Ok(None) => {}
                    Err(e) => tracing::warn!("skip {}: {e}", p.display()),
                }
            }
        }
        out.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
        Ok(out)
    }

    /// The record of a mountpoint given as the user typed it (absolute or
    /// relative, through symlinks or not).
    pub fn lookup(&self, mountpoint: &Path) -> Result<Option<MountRecord>> {
        for p in mountpoint_spellings(mountpoint) {
            if let Some(r) = self.record(&p)? {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }
}

/// The paths a mountpoint the user typed may have been recorded under:
/// canonical first, then as typed (a mountpoint whose FUSE server is gone
/// cannot be resolved: ENOTCONN).
pub fn mountpoint_spellings(mountpoint: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(abs) = std::fs::canonicalize(mountpoint) {
        v.push(abs);
    }
    if mountpoint.is_absolute() {
        v.push(mountpoint.to_path_buf());
    } else if let Ok(cwd) = std::env::current_dir() {
        v.push(cwd.join(mountpoint));
    }
    v.dedup();
    v
}
