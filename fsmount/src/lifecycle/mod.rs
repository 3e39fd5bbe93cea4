//! The life of one fsmount mount: set up (volume, rw layer, FUSE, overlay,
//! record) and tear down. The [`server`](crate::server) holds the mounts
//! and decides when; a failed teardown (busy mountpoint) leaves everything
//! mounted.

pub mod teardown;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result, invalid};
use crate::fuse::session::{FuseMount, FuseView, mount_fuse};
use crate::fuse::{FuseFs, FuseOptions};
use crate::overlay::mount_overlay;
use crate::records::{FORMAT_VERSION, now_secs, private_dir};
use crate::registry::MountEntry;
use crate::state::{MountRecord, StateDir};
use crate::stats::{Counters, Snapshot};
use crate::tree::Tree;
use crate::volume::{RwLayer, Volume, VolumeSpec, match_root_attrs};
pub use teardown::teardown;

/// What to mount (validated by the CLI; sent to a running server as is).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MountSpec {
    /// Absolute paths of the layers, lowest first.
    pub sources: Vec<PathBuf>,
    /// Chunk store URLs (passwords included: the spec only travels over
    /// the root-only server socket and is never logged).
    pub stores: Vec<String>,
    /// Without `stores`: read from the network stores the flists record
    /// (the user opted in; see `zosfs_flist::stores`).
    #[serde(default)]
    pub use_flist_routes: bool,
    pub mountpoint: PathBuf,
    pub rw: Option<String>,
    pub read_only: bool,
    /// Required with `rw`.
    pub volume: Option<VolumeSpec>,
    pub quota: Option<u64>,
    pub fuse: FuseOptions,
    pub threads: usize,
    /// Fill every file of the mount in the background.
    pub prefetch_all: bool,
    /// Bandwidth cap of that fill, bytes per second.
    pub prefetch_bandwidth: Option<u64>,
}

/// Files of the serving process, recorded with each of its mounts.
#[derive(Clone, Debug, Default)]
pub struct ServerFiles {
    pub control: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub log_file: Option<PathBuf>,
    /// Its node cache.
    pub cache: Option<PathBuf>,
}

/// A set-up mount.
pub struct Mounted {
    record: MountRecord,
    view: MountView,
    _fuse: FuseMount,
}

/// What stats need of a mount; cheap to clone into other threads.
#[derive(Clone)]
pub struct MountView {
    pub mountpoint: PathBuf,
    pub counters: Arc<Counters>,
    pub passthrough: Arc<AtomicBool>,
}

impl MountView {
    /// Counters plus facts about the mount.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = self.counters.snapshot();
        s.mountpoint = self.mountpoint.display().to_string();
        s.passthrough = self.passthrough.load(Ordering::Relaxed);
        s
    }
}

fn check_mountpoint(p: &Path) -> Result<PathBuf> {
    let abs = std::fs::canonicalize(p)
        .map_err(|e| Error::io(format!("mountpoint {}", p.display()), e))?;
    if !abs.is_dir() {
        return Err(invalid(format!("mountpoint {} is not a directory", abs.display())));
    }
    Ok(abs)
}

/// A record left by a process that is gone: clean it before reuse.
fn clean_stale(state: &StateDir, mountpoint: &Path) -> Result<()> {
    if let Some(old) = state.record(mountpoint)? {
        if old.alive() {
            return Err(Error::new(
                ErrorKind::Busy,
                format!("{} is already mounted by fsmount (pid {})", mountpoint.display(), old.pid),
            ));
        }
        tracing::warn!("cleaning the stale mount of pid {} at {}", old.pid, mountpoint.display());
        teardown(state, &old, false).map_err(|e| {
            e.context_prefix(format!(
                "a stale mount is at {}; run `fsmount umount {}`",
                mountpoint.display(),
                mountpoint.display()
            ))
        })?;
    }
    Ok(())
}

/// Set up everything; on error, undo what was done. `on_end` runs when
/// the FUSE session ends (unmounted, or aborted from outside).
pub fn setup(
    state: &StateDir,
    spec: &MountSpec,
    tree: Arc<dyn Tree>,
    counters: Arc<Counters>,
    files: &ServerFiles,
    on_end: Box<dyn FnOnce(std::io::Result<()>) + Send>,
) -> Result<Mounted> {
    let mountpoint = check_mountpoint(&spec.mountpoint)?;
    let lock = state.lock()?;
    clean_stale(state, &mountpoint)?;
    // Node-wide: no mount of another state directory there.
    state.node().claim_mount(&MountEntry {
        version: FORMAT_VERSION,
        mountpoint: mountpoint.clone(),
        state: state.root().to_path_buf(),
        cache: files.cache.clone(),
        pid: std::process::id(),
        control: files.control.clone(),
        registered: now_secs(),
    })?;
    let layer = open_layer(state, spec).inspect_err(|_| {
        if let Err(r) = state.node().release_mount(&mountpoint, state.root()) {
            tracing::error!("undo the registry entry of {}: {r}", mountpoint.display());
        }
    })?;
    let overlay = layer.is_some();
    let mdir = state.mount_dir(&mountpoint);
    let lower = if overlay { mdir.join("lower") } else { mountpoint.clone() };
    let record = MountRecord {
        version: FORMAT_VERSION,
        mountpoint: mountpoint.clone(),
        sources: spec.sources.iter().map(|s| s.display().to_string()).collect(),
        rw: spec.rw.clone(),
        read_only: spec.read_only,
        volume: if overlay { spec.volume.clone() } else { None },
        lower: lower.clone(),
        overlay,
        pid: std::process::id(),
        control: files.control.clone(),
        pid_file: files.pid_file.clone(),
        log_file: files.log_file.clone(),
        cache: files.cache.clone(),
        started: now_secs(),
    };
    // From here on a failure tears down through the record.
    let undo = |e: Error| -> Error {
        if let Err(t) = teardown(state, &record, true) {
            tracing::error!("undo after failed setup: {t}");
        }
        e
    };
    state.write_record(&record).map_err(undo)?;
    // 0700: the lower below shows the image's setuid files and devices.
    private_dir(&mdir).map_err(undo)?;

    if overlay {
        std::fs::create_dir_all(&lower)
            .map_err(|e| undo(Error::io(format!("create {}", lower.display()), e)))?;
    }
    let fs = FuseFs::new(tree, counters.clone(), &spec.fuse);
    let view = if overlay { FuseView::Lower } else { FuseView::Mountpoint };
    let fuse = mount_fuse(fs, &lower, "zosfs", view, spec.threads, on_end).map_err(undo)?;
    if let Some(l) = &layer {
        if l.created {
            match_root_attrs(&l.upper, &lower).map_err(undo)?;
        }
        mount_overlay(&mountpoint, &lower, l, spec.read_only).map_err(undo)?;
    }
    drop(lock);
    let view = MountView { mountpoint, counters, passthrough: fuse.passthrough.clone() };
    Ok(Mounted { record, view, _fuse: fuse })
}

/// The rw layer (volume + subvolume), set up first: it is the likeliest
/// to fail. Call with the state lock held.
fn open_layer(state: &StateDir, spec: &MountSpec) -> Result<Option<RwLayer>> {
    let layer = match &spec.rw {
        Some(name) => {
            let vol_spec =
                spec.volume.as_ref().ok_or_else(|| invalid("an rw layer needs a volume"))?;
            if let Some(r) = state.records()?.iter().find(|r| {
                r.rw.as_deref() == Some(name)
                    && r.volume.as_ref().is_some_and(|v| v.same_as(vol_spec))
            }) {
                return Err(Error::new(
                    ErrorKind::Busy,
                    format!("rw layer {name:?} is already mounted at {}", r.mountpoint.display()),
                ));
            }
            let vol = Volume::acquire(vol_spec, &state.volumes_dir())?;
            match vol.open_rw(name, !spec.read_only, spec.quota) {
                Ok(l) => {
                    // Where `fsmount rm NAME` / `snapshot NAME` find it.
                    if let Err(e) = state.node().record_layer(name, state.root(), vol_spec) {
                        tracing::warn!("cannot note rw layer {name} in the registry: {e}");
                    }
                    Some(l)
                }
                Err(e) => {
                    let _ = teardown::release_volume_if_unused(state, vol_spec);
                    return Err(e);
                }
            }
        }
        None => None,
    };
    Ok(layer)
}

impl Mounted {
    pub fn record(&self) -> &MountRecord {
        &self.record
    }

    pub fn mountpoint(&self) -> &Path {
        &self.record.mountpoint
    }

    pub fn view(&self) -> &MountView {
        &self.view
    }

    /// Unmount (overlay, FUSE, volume if unused) under the state lock.
    pub fn stop(&self, state: &StateDir, lazy: bool) -> Result<()> {
        let _lock = state.lock()?;
        teardown(state, &self.record, lazy)
    }
}
