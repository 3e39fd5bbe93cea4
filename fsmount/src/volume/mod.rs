//! The btrfs volume that holds read-write layers.
//!
//! A volume is one of:
//! * a sparse image file (created and formatted when missing), attached to a
//!   loop device and mounted under `STATE/volumes/<id>`;
//! * a block device (formatted only when blank), mounted there too;
//! * a directory on an already mounted btrfs filesystem, used in place.
//!
//! Inside the volume root, `rw/NAME` is one btrfs subvolume per rw layer,
//! holding the overlay's `upper/` and `work/` directories; snapshots are
//! subvolumes beside them, so a snapshot can itself be mounted by name.
//!
//! [`Volume::acquire`] is idempotent: it reuses a volume already mounted
//! (e.g. left by a crashed fsmount) and an existing loop device of the
//! image (never a second one: two devices with one btrfs fsid confuse the
//! kernel). [`Volume::release`] unmounts and detaches; callers release only
//! when no mount record uses the volume any more.

pub mod btrfs;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result, invalid};
use crate::naming::{check_rw_name, path_id};
use crate::sys::{self, loopdev, mount};

/// How fsmount mounts a volume's btrfs: the rw layers hold what containers
/// wrote (setuid files, device nodes), which they see through the
/// overlay; the overlay mount decides about suid and dev there, so the
/// volume itself honours neither.
const VOLUME_FLAGS: libc::c_ulong = libc::MS_NOATIME | libc::MS_NOSUID | libc::MS_NODEV;

/// Default size of a volume image fsmount creates (sparse).
pub const DEFAULT_IMAGE_SIZE: u64 = 10 << 30;

/// Where the rw layers live.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum VolumeSpec {
    /// A sparse image file; `size` applies when fsmount creates it.
    Image { path: PathBuf, size: u64 },
    /// A block device.
    Device { path: PathBuf },
    /// A directory on a mounted btrfs filesystem.
    Directory { path: PathBuf },
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if let Ok(c) = std::fs::canonicalize(p) {
        return Ok(c);
    }
    // A file to be created: resolve its parent.
    let parent = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = p.file_name().ok_or_else(|| invalid(format!("bad volume path {}", p.display())))?;
    let dir = std::fs::canonicalize(parent).map_err(|e| {
        Error::io(format!("volume {}: parent directory {}", p.display(), parent.display()), e)
    })?;
    Ok(dir.join(name))
}

impl VolumeSpec {
    /// From `--volume PATH` (None: `default_image`, the state directory's
    /// own image) and `--volume-size`.
    pub fn resolve(path: Option<&Path>, size: u64, default_image: &Path) -> Result<VolumeSpec> {
        let Some(p) = path else {
            return Ok(VolumeSpec::Image { path: default_image.to_path_buf(), size });
        };
        let p = absolute(p)?;
        match std::fs::metadata(&p) {
            Ok(md) if md.file_type().is_block_device() => Ok(VolumeSpec::Device { path: p }),
            Ok(md) if md.is_dir() => Ok(VolumeSpec::Directory { path: p }),
            Ok(md) if md.is_file() => Ok(VolumeSpec::Image { path: p, size }),
            Ok(_) => Err(invalid(format!(
                "volume {}: not a block device, directory or image file",
                p.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(VolumeSpec::Image { path: p, size })
            }
            Err(e) => Err(Error::io(format!("volume {}", p.display()), e)),
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            VolumeSpec::Image { path, .. }
            | VolumeSpec::Device { path }
            | VolumeSpec::Directory { path } => path,
        }
    }

    /// Same volume, whatever size was asked.
    pub fn same_as(&self, other: &VolumeSpec) -> bool {
        self.path() == other.path()
    }

    /// Where fsmount mounts it (a directory volume is used in place).
    pub fn mountpoint(&self, volumes_dir: &Path) -> PathBuf {
        match self {
            VolumeSpec::Directory { path } => path.clone(),
            _ => volumes_dir.join(path_id(self.path())),
        }
    }
}

/// A provisioned, mounted volume.
#[derive(Debug)]
pub struct Volume {
    spec: VolumeSpec,
    root: PathBuf,
}

/// The directories overlayfs needs from one rw layer.
#[derive(Clone, Debug)]
pub struct RwLayer {
    pub name: String,
    pub subvolume: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Made by this call (its upper root still needs the lower root's
    /// mode and owner).
    pub created: bool,
}

impl Volume {
    /// Make the volume usable, provisioning whatever is missing.
    /// Call with the state lock held.
    pub fn acquire(spec: &VolumeSpec, volumes_dir: &Path) -> Result<Volume> {
        let root = spec.mountpoint(volumes_dir);
        match spec {
            VolumeSpec::Directory { path } => {
                if sys::fs_type(path)? != sys::BTRFS_SUPER_MAGIC {
                    return Err(invalid(format!(
                        "volume directory {} is not on a btrfs filesystem",
                        path.display()
                    )));
                }
            }
            VolumeSpec::Image { path, size } => {
                if is_btrfs_mount(&root)? {
                    restrict_mount(&root)?;
                } else {
                    prepare_image(path, *size)?;
                    mount_image(path, &root)?;
                }
            }
            VolumeSpec::Device { path } => {
                if is_btrfs_mount(&root)? {
                    restrict_mount(&root)?;
                } else {
                    prepare_blank(path)?;
                    create_dir(&root)?;
                    mount::mount(path, &root, "btrfs", VOLUME_FLAGS, "")?;
                }
            }
        }
        if !matches!(spec, VolumeSpec::Directory { .. }) {
            // A directory volume is the user's own; ours is root's only.
            private_root_of(&root)?;
        }
        create_dir(&root.join("rw"))?;
        Ok(Volume { spec: spec.clone(), root })
    }

    /// Unmount a volume fsmount mounted and detach its loop device.
    /// Call with the state lock held, only when no mount uses it.
    pub fn release(spec: &VolumeSpec, volumes_dir: &Path) -> Result<()> {
        let root = spec.mountpoint(volumes_dir);
        match spec {
            VolumeSpec::Directory { .. } => return Ok(()),
            VolumeSpec::Image { .. } | VolumeSpec::Device { .. } => {
                while is_btrfs_mount(&root)? {
                    mount::umount(&root, false).map_err(|e| e.context_prefix("release volume"))?;
                }
                let _ = std::fs::remove_dir(&root);
            }
        }
        if let VolumeSpec::Image { path, .. } = spec {
            detach_unmounted_loops(path)?;
        }
        Ok(())
    }

    pub fn spec(&self) -> &VolumeSpec {
        &self.spec
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn rw_path(&self, name: &str) -> PathBuf {
        self.root.join("rw").join(name)
    }

    /// Open (or create when `create`) the rw layer NAME; apply a quota
    /// when given.
    pub fn open_rw(&self, name: &str, create: bool, quota: Option<u64>) -> Result<RwLayer> {
        check_rw_name(name)?;
        let subvolume = self.rw_path(name);
        let mut created = false;
        if !subvolume.exists() {
            if !create {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("rw layer {name:?} does not exist on volume {}", self.root.display()),
                ));
            }
            btrfs::subvolume_create(&subvolume)?;
            created = true;
        } else if !btrfs::is_subvolume(&subvolume) {
            return Err(invalid(format!("{} is not a btrfs subvolume", subvolume.display())));
        } else if create && btrfs::is_readonly(&subvolume)? {
            // Mounted writable, every write would fail with EROFS.
            return Err(invalid(format!(
                "rw layer {name:?} is a read-only snapshot: mount it with --ro, or make a \
                 writable copy with `fsmount snapshot {name} NEWNAME`"
            )));
        }
        let upper = subvolume.join("upper");
        let work = subvolume.join("work");
        create_dir(&upper)?;
        create_dir(&work)?;
        if let Some(q) = quota {
            btrfs::quota_enable(&self.root)?;
            btrfs::qgroup_limit(&subvolume, Some(q))?;
        }
        Ok(RwLayer { name: name.to_string(), subvolume, upper, work, created })
    }

    /// Snapshot rw layer NAME as a new rw layer SNAP.
    pub fn snapshot(&self, name: &str, snap: &str, readonly: bool) -> Result<PathBuf> {
        check_rw_name(name)?;
        check_rw_name(snap)?;
        let src = self.rw_path(name);
        let dst = self.rw_path(snap);
        if !btrfs::is_subvolume(&src) {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("rw layer {name:?} does not exist"),
            ));
        }
        if dst.exists() {
            return Err(Error::new(ErrorKind::Exists, format!("rw layer {snap:?} already exists")));
        }
        btrfs::snapshot(&src, &dst, readonly)?;
        Ok(dst)
    }

    /// Delete rw layer NAME (the caller checked it is not mounted).
    pub fn remove_rw(&self, name: &str) -> Result<()> {
        check_rw_name(name)?;
        let p = self.rw_path(name);
        if !btrfs::is_subvolume(&p) {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("rw layer {name:?} does not exist"),
            ));
        }
        btrfs::subvolume_delete(&p)
    }

    /// Names of every rw layer on the volume.
    pub fn rw_names(&self) -> Result<Vec<String>> {
        let dir = self.root.join("rw");
        let mut out = Vec::new();
        let rd =
            std::fs::read_dir(&dir).map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
        for ent in rd.flatten() {
            if let Some(n) = ent.file_name().to_str() {
                if btrfs::is_subvolume(&ent.path()) {
                    out.push(n.to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

fn create_dir(p: &Path) -> Result<()> {
    match std::fs::create_dir(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io(format!("create {}", p.display()), e)),
    }
}

/// The root directory of a volume fsmount mounted: 0700 (mkfs makes it
/// 0755), in case its mountpoint is reached by some other path.
fn private_root_of(root: &Path) -> Result<()> {
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(format!("chmod 0700 {}", root.display()), e))
}

/// A volume found mounted (by an older fsmount, or left by a crash) gets
/// the flags of [`VOLUME_FLAGS`] too: a bind remount changes only the
/// flags of this mount.
fn restrict_mount(root: &Path) -> Result<()> {
    let flags = libc::MS_REMOUNT | libc::MS_BIND | VOLUME_FLAGS;
    mount::mount(Path::new("none"), root, "", flags, "")
}

fn is_btrfs_mount(root: &Path) -> Result<bool> {
    Ok(mount::mounted_at(root)?.is_some_and(|m| m.fstype == "btrfs"))
}

/// Whether the first MiB of a device or file is all zero (never used).
fn starts_blank(dev: &Path) -> Result<bool> {
    use std::io::Read;
    let f =
        std::fs::File::open(dev).map_err(|e| Error::io(format!("open {}", dev.display()), e))?;
    let mut buf = Vec::with_capacity(1 << 20);
    f.take(1 << 20)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(format!("read {}", dev.display()), e))?;
    Ok(buf.iter().all(|b| *b == 0))
}

/// Format a device or image only when blank (no filesystem signature and
/// a zeroed start); refuse anything else rather than destroy data.
fn prepare_blank(dev: &Path) -> Result<()> {
    match btrfs::probe_fs_type(dev)?.as_deref() {
        Some("btrfs") => Ok(()),
        None if starts_blank(dev)? => btrfs::mkfs(dev),
        None => Err(Error::new(
            ErrorKind::InvalidInput,
            format!("volume {} holds data but no filesystem; refusing to format it", dev.display()),
        )),
        Some(other) => Err(Error::new(
            ErrorKind::InvalidInput,
            format!("volume {} holds a {other} filesystem; refusing to format it", dev.display()),
        )),
    }
}

/// Create the sparse image when missing, then format it when blank.
fn prepare_image(path: &Path, size: u64) -> Result<()> {
    if !path.exists() {
        if size < (256 << 20) {
            return Err(invalid(format!(
                "volume size {size} for {} is too small (btrfs needs at least 256M)",
                path.display()
            )));
        }
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| Error::io(format!("create volume image {}", path.display()), e))?;
        f.set_len(size).map_err(|e| Error::io(format!("size {}", path.display()), e))?;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    prepare_blank(path)
}

/// Mount the image's btrfs at `root`, reusing a loop device that already
/// backs the image.
fn mount_image(image: &Path, root: &Path) -> Result<()> {
    create_dir(root)?;
    if let Some(dev) = loopdev::backed_by(image)?.into_iter().next() {
        return mount::mount(&dev, root, "btrfs", VOLUME_FLAGS, "");
    }
    let lo = loopdev::attach(image)?;
    let res = mount::mount(&lo.path, root, "btrfs", VOLUME_FLAGS, "");
    if res.is_err() {
        let _ = loopdev::detach(&lo.path);
    }
    // Dropping `lo` now is safe: the mount holds the device (autoclear).
    res
}

/// Detach loop devices of `image` that no mount uses (autoclear normally
/// did it already; this covers devices attached but never mounted).
fn detach_unmounted_loops(image: &Path) -> Result<()> {
    if !image.exists() {
        return Ok(());
    }
    let mounts = mount::mounts()?;
    for dev in loopdev::backed_by(image)? {
        let in_use = mounts.iter().any(|m| Path::new(&m.source) == dev);
        if !in_use {
            if let Err(e) = loopdev::detach(&dev) {
                tracing::warn!("detach {}: {e}", dev.display());
            }
        }
    }
    Ok(())
}

/// Give a fresh upper root the mode, owner and times of the lower root:
/// overlayfs shows the upper root's attributes for the merged root.
pub fn match_root_attrs(upper: &Path, lower_root: &Path) -> Result<()> {
    let md = std::fs::metadata(lower_root)
        .map_err(|e| Error::io(format!("stat {}", lower_root.display()), e))?;
    std::os::unix::fs::chown(upper, Some(md.uid()), Some(md.gid()))
        .map_err(|e| Error::io(format!("chown {}", upper.display()), e))?;
    std::fs::set_permissions(upper, std::fs::Permissions::from_mode(md.mode() & 0o7777))
        .map_err(|e| Error::io(format!("chmod {}", upper.display()), e))?;
    Ok(())
}
