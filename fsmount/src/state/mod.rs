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
//! STATE/servers/<cache-id>.sock  socket of the process serving that cache
//! STATE/servers/<cache-id>.{pid,log}  its default pid and log files
//! ```
//!
//! Records say what was set up; teardown checks mountinfo for what is still
//! in place, so a record can always be cleaned whatever state it is in.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result, invalid};
use crate::naming::path_id;
use crate::sys::{self, FileLock};
use crate::volume::VolumeSpec;

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/zosfs";

#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

/// One mount, as recorded by the process serving it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MountRecord {
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
    /// Seconds since the epoch.
    pub started: u64,
}

impl MountRecord {
    /// Whether the serving process still runs (and is an fsmount).
    pub fn alive(&self) -> bool {
        sys::pid_alive(self.pid)
            && sys::process_name(self.pid).is_some_and(|n| n.starts_with("fsmount"))
    }
}

impl StateDir {
    /// Open (creating) a state directory.
    pub fn open(root: &Path) -> Result<StateDir> {
        std::fs::create_dir_all(root)
            .map_err(|e| Error::io(format!("create state directory {}", root.display()), e))?;
        let root = std::fs::canonicalize(root)
            .map_err(|e| Error::io(format!("resolve state directory {}", root.display()), e))?;
        let s = StateDir { root };
        for d in [s.mounts_dir(), s.volumes_dir(), s.servers_dir()] {
            std::fs::create_dir_all(&d)
                .map_err(|e| Error::io(format!("create {}", d.display()), e))?;
        }
        Ok(s)
    }

    pub fn root(&self) -> &Path {
        &self.root
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

    /// Sockets (and default pid and log files) of serving processes.
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
        let text = toml::to_string(r).map_err(|e| {
            Error::with_source(
                ErrorKind::InvalidInput,
                "encode mount record (paths must be UTF-8)",
                e,
            )
        })?;
        let path = self.record_path(&r.mountpoint);
        let tmp = path.with_extension("toml.tmp");
        let mut f = std::fs::File::create(&tmp)
            .map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| Error::io(format!("rename {}", path.display()), e))?;
        Ok(())
    }

    pub fn remove_record(&self, mountpoint: &Path) -> Result<()> {
        let path = self.record_path(mountpoint);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("remove {}", path.display()), e)),
        }
    }

    pub fn record(&self, mountpoint: &Path) -> Result<Option<MountRecord>> {
        read_record(&self.record_path(mountpoint))
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
                match read_record(&p) {
                    Ok(Some(r)) => out.push(r),
                    Ok(None) => {}
                    Err(e) => tracing::warn!("skip {}: {e}", p.display()),
                }
            }
        }
        out.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
        Ok(out)
    }

    /// Find the record of a mountpoint given as the user typed it.
    pub fn find(&self, mountpoint: &Path) -> Result<MountRecord> {
        let abs = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
        for p in [&abs, &mountpoint.to_path_buf()] {
            if let Some(r) = self.record(p)? {
                return Ok(r);
            }
        }
        Err(Error::new(
            ErrorKind::NotFound,
            format!("no fsmount mount at {} (state {})", mountpoint.display(), self.root.display()),
        ))
    }
}

fn read_record(path: &Path) -> Result<Option<MountRecord>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
    };
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| invalid(format!("mount record {}: {e}", path.display())))
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
