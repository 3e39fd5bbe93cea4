//! The small file helpers fsmount's records share (state directory, node
//! registry, run directory): TOML files written atomically and read with a
//! format-version check, private (0700) directories, and whether a
//! recorded fsmount process still runs. Knows nothing of what the records
//! mean: [`crate::state`] and [`crate::registry`] build on it.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind, Result, invalid};
use crate::sys;

/// Version of the TOML files fsmount writes (mount records, registry
/// entries, server status). A reader skips files of a newer version.
pub const FORMAT_VERSION: u32 = 1;

/// Whether `pid` runs and is an fsmount process (not an unrelated process
/// that reused a recorded pid, e.g. after a reboot).
pub fn fsmount_alive(pid: u32) -> bool {
    sys::pid_alive(pid) && sys::process_name(pid).is_some_and(|n| n.starts_with("fsmount"))
}

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

/// Write a TOML file atomically (temp file, fsync, rename).
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
