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

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result, invalid};
use crate::naming::path_id;
use crate::registry::Node;
use crate::sys::{self, FileLock};
use crate::volume::VolumeSpec;

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/zosfs";

/// Version of the TOML files fsmount writes (mount records, registry
/// entries, server status). A reader skips files of a newer version.
pub const FORMAT_VERSION: u32 = 1;

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

/// Whether `pid` runs and is an fsmount process (not an unrelated process
/// that reused a recorded pid, e.g. after a reboot).
pub fn fsmount_alive(pid: u32) -> bool {
    sys::pid_alive(pid) && sys::process_name(pid).is_some_and(|n| n.starts_with("fsmount"))
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

/// Write a TOML file atomically (temp file, fsync, rename).
/// Remove the temp files [`write_toml`] left in `dir` when its writer was
/// killed between create and rename (`NAME.tmpPID` of a dead pid). A live
/// pid's temp file is its write in progress and stays.
pub(crate) fn remove_dead_temps(dir: &Path) -> Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("list {}", dir.display()), e)),
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.rsplit_once(".tmp")).map(|(_, p)| p) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if !sys::pid_alive(pid) {
            match std::fs::remove_file(e.path()) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(format!("remove {}", e.path().display()), err));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

pub(crate) fn write_toml<T: Serialize>(path: &Path, value: &T, what: &str) -> Result<()> {
    let text = toml::to_string(value).map_err(|e| {
        Error::with_source(
            ErrorKind::InvalidInput,
            format!("encode {what} (paths must be UTF-8)"),
            e,
        )
    })?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)
        .map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(format!("rename {}", path.display()), e)
    })?;
    Ok(())
}

/// Read a TOML file written by [`write_toml`]: None when it does not exist,
/// an error when it is of a newer format version or does not parse.
pub(crate) fn read_toml<T: DeserializeOwned>(path: &Path, what: &str) -> Result<Option<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
    };
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| invalid(format!("{what} {}: {e}", path.display())))?;
    if let Some(v) = table.get("version").and_then(toml::Value::as_integer) {
        if v > i64::from(FORMAT_VERSION) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{what} {} has format version {v}; this fsmount reads up to {FORMAT_VERSION}",
                    path.display()
                ),
            ));
        }
    }
    table.try_into().map(Some).map_err(|e| invalid(format!("{what} {}: {e}", path.display())))
}

/// Remove a file; a missing one is fine.
pub(crate) fn remove_file(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("remove {}", path.display()), e)),
    }
}

/// A top directory fsmount uses (the state root, a cache): created 0700;
/// an existing one is tightened to 0700 only when it is empty or already
/// ours (holds `marker`), so `--state`/`--cache` naming some shared
/// directory by mistake does not change it (the 0700 subdirectories
/// fsmount makes in it still keep others out).
pub(crate) fn private_root(root: &Path, marker: &str) -> Result<()> {
    let existing = std::fs::symlink_metadata(root).is_ok();
    let ours = !existing
        || root.join(marker).exists()
        || std::fs::read_dir(root).is_ok_and(|mut d| d.next().is_none());
    if ours {
        return private_dir(root);
    }
    Ok(())
}

/// Create a directory readable by its owner only (its parents as usual);
/// an existing one is tightened to 0700 and must be owned by us.
pub(crate) fn private_dir(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(format!("create {}", path.display()), e)),
    }
    let md = std::fs::symlink_metadata(path)
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if !md.is_dir() || md.uid() != euid {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{} must be a directory owned by uid {euid} (it is owned by uid {})",
                path.display(),
                md.uid()
            ),
        ));
    }
    if md.mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(format!("chmod 0700 {}", path.display()), e))?;
    }
    Ok(())
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
