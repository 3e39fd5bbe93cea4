//! The node registry: every fsmount mount on this node, whatever state
//! directory and cache it was made with, so `umount`, `list`, `stats`,
//! `snapshot` and `rm` find things without repeating the mount's flags.
//!
//! Two directories, by lifetime (formats: docs/formats/fsmount-registry.md):
//!
//! ```text
//! REGISTRY (default /var/lib/zosfs/registry, ZOSFS_REGISTRY): persistent
//!   lock                          flock around changes of entries
//!   mounts/<mp-id>.toml           mountpoint -> state dir, cache, pid, socket
//!   layers/<volume-id>/NAME.toml  rw layer NAME -> state dir, volume
//! RUN (default /run/zosfs, ZOSFS_RUN_DIR): runtime, gone at reboot
//!   servers/<server-id>.sock      control socket of a serving process
//!   servers/<server-id>.toml      what that process does (why it is alive)
//! ```
//!
//! The mount record in the state directory stays the truth about a mount;
//! a registry entry only says where that record is. Entries survive a
//! reboot on purpose: the mounts they point at are then listed as dead
//! (and `fsmount umount` cleans them) instead of being forgotten.
//!
//! [`Node`] (defined in [`crate::node`]) names the two directories; its
//! registry operations are here. Every directory here is 0700 and owned
//! by us; sockets check their peer's uid. Lock order: a state directory's lock before the registry's.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::naming::{path_id, server_id};
pub use crate::node::{DEFAULT_REGISTRY_DIR, DEFAULT_RUN_DIR, Node};
use crate::records::{
    FORMAT_VERSION, fsmount_alive, private_dir, read_toml, remove_dead_temps, remove_file,
    write_toml,
};
use crate::state::{MountRecord, StateDir, mountpoint_spellings};
use crate::sys::FileLock;
use crate::volume::VolumeSpec;

/// `mounts/<mp-id>.toml`: where the record of a mountpoint is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountEntry {
    pub version: u32,
    pub mountpoint: PathBuf,
    /// The state directory holding the mount record.
    pub state: PathBuf,
    /// The node cache of the serving process.
    pub cache: Option<PathBuf>,
    /// The serving process.
    pub pid: u32,
    pub control: PathBuf,
    /// Seconds since the epoch.
    pub registered: u64,
}

/// `layers/<volume-id>/NAME.toml`: which volume (of which state directory)
/// holds rw layer NAME.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerEntry {
    pub version: u32,
    pub name: String,
    pub state: PathBuf,
    pub volume: VolumeSpec,
}

/// What a serving process is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Bound its socket; setting up its first mount.
    Starting,
    /// Serving its mounts.
    Serving,
    /// Asked to stop (signal); some mounts were busy and are still served.
    Stopping,
    /// Its last mount is gone; finishing answers and releasing the cache.
    Exiting,
}

/// `servers/<server-id>.toml` in the run directory, kept by the serving
/// process itself (removed when it exits).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub version: u32,
    pub pid: u32,
    pub state: PathBuf,
    pub cache: PathBuf,
    pub socket: PathBuf,
    /// Seconds since the epoch.
    pub started: u64,
    pub phase: Phase,
    /// Since when (seconds since the epoch) it is in this phase.
    pub since: u64,
    pub mounts: Vec<PathBuf>,
    /// Why the process is still alive, in words.
    pub why: String,
}

/// What a registry entry leads to.
#[derive(Debug)]
pub enum Resolved {
    /// The record, in its state directory.
    Mount(Box<(StateDir, MountRecord)>),
    /// No record, but the serving process lives: a setup or teardown is
    /// in progress.
    InFlight,
    /// No record and no process: the entry is left over (a state directory
    /// removed, a teardown interrupted between its two steps).
    Stale,
}

impl Node {
    fn mounts_dir(&self) -> PathBuf {
        self.registry_dir().join("mounts")
    }

    fn layers_dir(&self) -> PathBuf {
        self.registry_dir().join("layers")
    }

    fn prepare_registry(&self) -> Result<()> {
        for d in [self.registry_dir().to_path_buf(), self.mounts_dir(), self.layers_dir()] {
            private_dir(&d)?;
        }
        Ok(())
    }

    /// Create the run directory (0700) for a server's socket and status.
    pub fn prepare_run(&self) -> Result<()> {
        private_dir(self.run_dir())?;
        private_dir(&self.servers_dir())
    }

    /// Serialise changes of registry entries between processes.
    pub fn lock(&self) -> Result<FileLock> {
        self.prepare_registry()?;
        FileLock::exclusive(&self.registry_dir().join("lock"))
    }

    // ---- mounts ----

    fn mount_path(&self, mountpoint: &Path) -> PathBuf {
        self.mounts_dir().join(format!("{}.toml", path_id(mountpoint)))
    }

    /// Register a mountpoint for a state directory (before its setup
    /// starts). Refused while a mount of another state directory is
    /// recorded there, live or dead; a stale entry is replaced. Whether
    /// the same state directory may mount there again is that state's
    /// decision (its lock is held by the caller).
    pub fn claim_mount(&self, entry: &MountEntry) -> Result<()> {
        let _lock = self.lock()?;
        let path = self.mount_path(&entry.mountpoint);
        if let Some(old) = read_toml::<MountEntry>(&path, "registry entry")? {
            if old.state != entry.state {
                let mp = entry.mountpoint.display();
                match self.resolve(&old)? {
                    Resolved::Mount(found) => {
                        let (st, rec) = *found;
                        let msg = if rec.alive() {
                            format!(
                                "{mp} is already mounted by fsmount (pid {}, state {})",
                                rec.pid,
                                st.root().display()
                            )
                        } else {
                            format!(
                                "a stale fsmount mount (state {}) is at {mp}; run `fsmount umount {mp}`",
                                st.root().display()
                            )
                        };
                        return Err(Error::new(ErrorKind::Busy, msg));
                    }
                    Resolved::InFlight => {
                        return Err(Error::new(
                            ErrorKind::Busy,
                            format!(
                                "{mp} is being mounted or unmounted by fsmount pid {}",
                                old.pid
                            ),
                        ));
                    }
                    Resolved::Stale => {
                        tracing::warn!("replacing the stale registry entry of {mp}");
                    }
                }
            }
        }
        write_toml(&path, entry, "registry entry")
    }

    /// Forget a mountpoint, if the registry has it for `state`.
    pub fn release_mount(&self, mountpoint: &Path, state: &Path) -> Result<()> {
        let _lock = self.lock()?;
        let path = self.mount_path(mountpoint);
        match read_toml::<MountEntry>(&path, "registry entry") {
            Ok(Some(e)) if e.state == state => remove_file(&path),
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!("{e}; leaving it");
                Ok(())
            }
        }
    }

    /// Remove an entry found stale, unless it changed meanwhile.
    pub fn prune(&self, entry: &MountEntry) -> Result<()> {
        let _lock = self.lock()?;
        let path = self.mount_path(&entry.mountpoint);
        if read_toml::<MountEntry>(&path, "registry entry").ok().flatten().as_ref() == Some(entry)
            && matches!(self.resolve(entry)?, Resolved::Stale)
        {
            tracing::info!("removing the stale registry entry of {}", entry.mountpoint.display());
            remove_file(&path)?;
        }
        Ok(())
    }

    /// The entry of a mountpoint given as the user typed it.
    pub fn mount_entry(&self, mountpoint: &Path) -> Result<Option<MountEntry>> {
        for p in mountpoint_spellings(mountpoint) {
            if let Some(e) = read_toml::<MountEntry>(&self.mount_path(&p), "registry entry")? {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// Every entry (unreadable ones are reported and skipped).
    pub fn mount_entries(&self) -> Result<Vec<MountEntry>> {
        let mut out: Vec<MountEntry> = toml_files(&self.mounts_dir())?
            .iter()
            .filter_map(|p| match read_toml(p, "registry entry") {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!("skip: {e}");
                    None
                }
            })
            .collect();
        out.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
        Ok(out)
    }

    /// Follow an entry to its record.
    pub fn resolve(&self, e: &MountEntry) -> Result<Resolved> {
        if let Some(st) = StateDir::existing(&e.state, self) {
            if let Some(r) = st.record(&e.mountpoint)? {
                return Ok(Resolved::Mount(Box::new((st, r))));
            }
        }
        if fsmount_alive(e.pid) {
            return Ok(Resolved::InFlight);
        }
        Ok(Resolved::Stale)
    }

    /// Find a mount: in `hint` (the state directory given, or the default
    /// one) first, then wherever the registry says. Stale entries met on
    /// the way are removed.
    pub fn find_mount(
        &self,
        hint: Option<&StateDir>,
        mountpoint: &Path,
    ) -> Result<(StateDir, MountRecord)> {
        if let Some(st) = hint {
            if let Some(r) = st.lookup(mountpoint)? {
                return Ok((st.clone(), r));
            }
        }
        let not_found = |extra: &str| {
            let looked = match hint {
                Some(st) => format!("state {} and ", st.root().display()),
                None => String::new(),
            };
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "no fsmount mount at {} (looked in {looked}the node registry {}){extra}",
                    mountpoint.display(),
                    self.registry_dir().display()
                ),
            )
        };
        let Some(entry) = self.mount_entry(mountpoint)? else { return Err(not_found("")) };
        match self.resolve(&entry)? {
            Resolved::Mount(found) => Ok(*found),
            Resolved::InFlight => Err(Error::new(
                ErrorKind::Busy,
                format!(
                    "{} is being mounted or unmounted by fsmount pid {}; try again",
                    mountpoint.display(),
                    entry.pid
                ),
            )),
            Resolved::Stale => {
                self.prune(&entry)?;
                Err(not_found("; removed its stale registry entry"))
            }
        }
    }

    /// Every mount on the node: the records of `hint` (mounts made before
    /// the registry existed are only there) and of every registry entry.
    pub fn all_mounts(&self, hint: Option<&StateDir>) -> Result<Vec<(StateDir, MountRecord)>> {
        let mut out: Vec<(StateDir, MountRecord)> = Vec::new();
        if let Some(st) = hint {
            out.extend(st.records()?.into_iter().map(|r| (st.clone(), r)));
        }
        for e in self.mount_entries()? {
            match self.resolve(&e)? {
                Resolved::Mount(found) => {
                    let (st, r) = *found;
                    if !out
                        .iter()
                        .any(|(s, x)| s.root() == st.root() && x.mountpoint == r.mountpoint)
                    {
                        out.push((st, r));
                    }
                }
                Resolved::InFlight => {}
                Resolved::Stale => self.prune(&e)?,
            }
        }
        out.sort_by(|a, b| a.1.mountpoint.cmp(&b.1.mountpoint));
        Ok(out)
    }

    // ---- rw layers ----

    fn layer_path(&self, name: &str, volume: &VolumeSpec) -> PathBuf {
        self.layers_dir().join(path_id(volume.path())).join(format!("{name}.toml"))
    }

    /// Note that rw layer `name` lives on `volume` of state `state`.
    pub fn record_layer(&self, name: &str, state: &Path, volume: &VolumeSpec) -> Result<()> {
        let _lock = self.lock()?;
        let path = self.layer_path(name, volume);
        let entry = LayerEntry {
            version: FORMAT_VERSION,
            name: name.to_string(),
            state: state.to_path_buf(),
            volume: volume.clone(),
        };
        if read_toml::<LayerEntry>(&path, "layer entry").ok().flatten().as_ref() == Some(&entry) {
            return Ok(());
        }
        if let Some(dir) = path.parent() {
            private_dir(dir)?;
        }
        write_toml(&path, &entry, "layer entry")
    }

    /// Forget rw layer `name` of `volume` (removed).
    pub fn forget_layer(&self, name: &str, volume: &VolumeSpec) -> Result<()> {
        let _lock = self.lock()?;
        let path = self.layer_path(name, volume);
        remove_file(&path)?;
        if let Some(dir) = path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    }

    /// Every volume known to hold an rw layer of this name.
    pub fn layers_named(&self, name: &str) -> Result<Vec<LayerEntry>> {
        let dir = self.layers_dir();
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("list {}", dir.display()), e)),
        };
        let mut out = Vec::new();
        for ent in rd.flatten() {
            match read_toml::<LayerEntry>(&ent.path().join(format!("{name}.toml")), "layer entry") {
                Ok(Some(l)) => out.push(l),
                Ok(None) => {}
                Err(e) => tracing::warn!("skip: {e}"),
            }
        }
        out.sort_by(|a, b| a.volume.path().cmp(b.volume.path()));
        Ok(out)
    }

    // ---- serving processes ----

    /// The control socket of the process serving `cache` for `state`.
    pub fn server_socket(&self, state: &Path, cache: &Path) -> PathBuf {
        self.servers_dir().join(format!("{}.sock", server_id(state, cache)))
    }

    /// Its status file.
    pub fn server_status_path(&self, state: &Path, cache: &Path) -> PathBuf {
        self.servers_dir().join(format!("{}.toml", server_id(state, cache)))
    }

    /// The status of the process serving `cache` for `state`, if one runs.
    pub fn server_status(&self, state: &Path, cache: &Path) -> Option<ServerStatus> {
        read_toml::<ServerStatus>(&self.server_status_path(state, cache), "server status")
            .ok()
            .flatten()
            .filter(|s| fsmount_alive(s.pid))
    }

    /// Every serving process alive on the node (status files of dead ones
    /// are removed).
    pub fn servers(&self) -> Result<Vec<ServerStatus>> {
        let mut out = Vec::new();
        for p in toml_files(&self.servers_dir())? {
            match read_toml::<ServerStatus>(&p, "server status") {
                Ok(Some(s)) if fsmount_alive(s.pid) => out.push(s),
                Ok(Some(s)) => {
                    // Only if it still names that pid (a new server may
                    // have written its own meanwhile); its socket only if
                    // nothing listens there (a new server would).
                    if read_toml::<ServerStatus>(&p, "server status").ok().flatten()
                        == Some(s.clone())
                    {
                        tracing::info!("removing the files of gone fsmount pid {}", s.pid);
                        remove_file(&p)?;
                        let ours = s.socket.parent() == Some(self.servers_dir().as_path());
                        let refused = std::os::unix::net::UnixStream::connect(&s.socket)
                            .is_err_and(|e| e.raw_os_error() == Some(libc::ECONNREFUSED));
                        if ours && refused {
                            remove_file(&s.socket)?;
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("skip: {e}"),
            }
        }
        remove_dead_temps(&self.servers_dir())?;
        out.sort_by(|a, b| a.cache.cmp(&b.cache).then(a.pid.cmp(&b.pid)));
        Ok(out)
    }
}

/// The `*.toml` files of a directory (none when it does not exist).
fn toml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("list {}", dir.display()), e)),
    };
    Ok(rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::now_secs;

    fn node(dir: &Path) -> Node {
        Node::new(&dir.join("registry"), &dir.join("run"))
    }

    fn entry(mp: &Path, state: &Path, pid: u32) -> MountEntry {
        MountEntry {
            version: FORMAT_VERSION,
            mountpoint: mp.to_path_buf(),
            state: state.to_path_buf(),
            cache: Some(PathBuf::from("/c")),
            pid,
            control: PathBuf::from("/run/x.sock"),
            registered: now_secs(),
        }
    }

    #[test]
    fn directories_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let n = node(t.path());
        std::fs::create_dir(t.path().join("run")).unwrap();
        std::fs::set_permissions(t.path().join("run"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        drop(n.lock().unwrap());
        n.prepare_run().unwrap();
        for d in ["registry", "registry/mounts", "registry/layers", "run", "run/servers"] {
            let mode = std::fs::metadata(t.path().join(d)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{d}");
        }
    }

    #[test]
    fn stale_entries_are_replaced_and_pruned() {
        let t = tempfile::tempdir().unwrap();
        let n = node(t.path());
        let mp = t.path().join("mnt");
        // A state directory that no longer exists, and a pid that is not
        // an fsmount process.
        let gone = entry(&mp, &t.path().join("gone-state"), u32::MAX - 1);
        n.claim_mount(&gone).unwrap();
        assert!(matches!(n.resolve(&gone).unwrap(), Resolved::Stale));
        assert_eq!(n.mount_entries().unwrap(), vec![gone.clone()]);
        let err = n.find_mount(None, &mp).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.to_string().contains("stale registry entry"), "{err}");
        assert!(n.mount_entries().unwrap().is_empty());

        // Another state directory may take over a stale mountpoint.
        n.claim_mount(&gone).unwrap();
        let other = entry(&mp, &t.path().join("other-state"), std::process::id());
        n.claim_mount(&other).unwrap();
        assert_eq!(n.mount_entry(&mp).unwrap(), Some(other.clone()));
        // Releasing for the wrong state keeps the entry.
        n.release_mount(&mp, &t.path().join("gone-state")).unwrap();
        assert_eq!(n.mount_entry(&mp).unwrap(), Some(other));
        n.release_mount(&mp, &t.path().join("other-state")).unwrap();
        assert_eq!(n.mount_entry(&mp).unwrap(), None);
    }

    #[test]
    fn newer_formats_are_not_misread() {
        let t = tempfile::tempdir().unwrap();
        let n = node(t.path());
        let mp = t.path().join("mnt");
        n.claim_mount(&entry(&mp, t.path(), 1)).unwrap();
        let p = n.mount_path(&mp);
        let text = std::fs::read_to_string(&p).unwrap().replace("version = 1", "version = 2");
        std::fs::write(&p, text).unwrap();
        let err = n.mount_entry(&mp).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
        assert!(n.mount_entries().unwrap().is_empty());
    }

    #[test]
    fn layers_are_found_by_name() {
        let t = tempfile::tempdir().unwrap();
        let n = node(t.path());
        let v1 = VolumeSpec::Image { path: t.path().join("a.img"), size: 1 << 30 };
        let v2 = VolumeSpec::Directory { path: t.path().join("b") };
        n.record_layer("web", Path::new("/s1"), &v1).unwrap();
        n.record_layer("web", Path::new("/s2"), &v2).unwrap();
        n.record_layer("db", Path::new("/s1"), &v1).unwrap();
        let web = n.layers_named("web").unwrap();
        assert_eq!(web.len(), 2);
        assert_eq!(web[0].state, Path::new("/s1"));
        assert_eq!(web[1].volume, v2);
        n.forget_layer("web", &v1).unwrap();
        assert_eq!(n.layers_named("web").unwrap().len(), 1);
        assert_eq!(n.layers_named("db").unwrap().len(), 1);
        assert!(n.layers_named("none").unwrap().is_empty());
    }
}
