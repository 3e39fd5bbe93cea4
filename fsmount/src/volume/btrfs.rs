//! btrfs through btrfs-progs (`mkfs.btrfs`, `btrfs`): formatting, subvolumes,
//! snapshots and qgroup limits. Each call reports the tool's own message
//! when it fails.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{Error, ErrorKind, Result};

/// Run a tool, returning its stdout; a failure carries its stderr.
pub(crate) fn run(program: &str, args: &[&OsStr]) -> Result<String> {
    let shown = || {
        let mut s = program.to_string();
        for a in args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    };
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io(format!("run {} (is it installed?)", shown()), e))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(Error::new(
            ErrorKind::Command,
            format!("{} failed ({}): {}", shown(), out.status, err.trim()),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The filesystem type blkid finds on a device or image (probing the
/// content, not a cache); None when it is blank.
pub fn probe_fs_type(dev: &Path) -> Result<Option<String>> {
    let out = Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "TYPE"])
        .arg(dev)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io("run blkid (util-linux)", e))?;
    match out.status.code() {
        Some(0) => {
            let t = String::from_utf8_lossy(&out.stdout).trim().to_string();
            Ok(if t.is_empty() { None } else { Some(t) })
        }
        // 2: nothing found.
        Some(2) => Ok(None),
        _ => Err(Error::new(
            ErrorKind::Command,
            format!(
                "blkid -p {} failed: {}",
                dev.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        )),
    }
}

pub fn mkfs(dev: &Path) -> Result<()> {
    run("mkfs.btrfs", &[OsStr::new("-q"), OsStr::new("-L"), OsStr::new("zosfs"), dev.as_os_str()])
        .map(drop)
}

/// Whether `path` is the root of a btrfs subvolume (inode 256 on btrfs).
pub fn is_subvolume(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(path) {
        Ok(md) => md.is_dir() && md.ino() == 256,
        Err(_) => false,
    }
}

pub fn subvolume_create(path: &Path) -> Result<()> {
    run("btrfs", &[OsStr::new("subvolume"), OsStr::new("create"), path.as_os_str()]).map(drop)
}

pub fn subvolume_delete(path: &Path) -> Result<()> {
    run("btrfs", &[OsStr::new("subvolume"), OsStr::new("delete"), path.as_os_str()]).map(drop)
}

pub fn snapshot(src: &Path, dst: &Path, readonly: bool) -> Result<()> {
    let mut args = vec![OsStr::new("subvolume"), OsStr::new("snapshot")];
    if readonly {
        args.push(OsStr::new("-r"));
    }
    args.push(src.as_os_str());
    args.push(dst.as_os_str());
    run("btrfs", &args).map(drop)
}

/// Whether the subvolume at `path` is read-only (`snapshot --readonly`).
pub fn is_readonly(path: &Path) -> Result<bool> {
    let out = run(
        "btrfs",
        &[
            OsStr::new("property"),
            OsStr::new("get"),
            OsStr::new("-ts"),
            path.as_os_str(),
            OsStr::new("ro"),
        ],
    )?;
    Ok(out.trim() == "ro=true")
}

/// Turn qgroups on for the filesystem holding `path` (idempotent).
pub fn quota_enable(path: &Path) -> Result<()> {
    run("btrfs", &[OsStr::new("quota"), OsStr::new("enable"), path.as_os_str()]).map(drop)
}

/// Limit the referenced bytes of the subvolume at `path`; None removes it.
pub fn qgroup_limit(path: &Path, bytes: Option<u64>) -> Result<()> {
    let size = bytes.map(|b| b.to_string()).unwrap_or_else(|| "none".into());
    run("btrfs", &[OsStr::new("qgroup"), OsStr::new("limit"), OsStr::new(&size), path.as_os_str()])
        .map(drop)
}
