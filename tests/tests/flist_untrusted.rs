//! The `flist` command with flists it should not trust: the stores an
//! flist records are not opened unless asked (and then only network
//! ones), and unpack keeps DEST's own mode and owner, can skip devices and
//! can give everything to the caller.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, ensure};
use zosfs_tests::flist::{dir_url, flist, run};

/// Pack `src` into the `dir://` store `store`; returns the flist.
fn pack(tmp: &Path, src: &Path, store: &str) -> Result<PathBuf> {
    let fl = tmp.join("t.flist");
    run(flist(&tmp.join("cache"))
        .args(["pack", "--no-progress", "-o"])
        .arg(&fl)
        .args(["--store", store])
        .arg(src))?;
    Ok(fl)
}

#[test]
fn recorded_routes_need_an_opt_in_and_a_network_store() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("src");
    std::fs::create_dir(&src)?;
    std::fs::write(src.join("f"), b"content\n")?;
    let store = dir_url(&tmp.path().join("store"));
    let fl = pack(tmp.path(), &src, &store)?;
    let cat = |extra: &[&str]| {
        flist(&tmp.path().join("cache"))
            .env_remove("ZOSFS_USE_FLIST_ROUTES")
            .arg("cat")
            .args(extra)
            .arg(&fl)
            .arg("f")
            .output()
    };
    // The flist names a dir:// store: not opened without --store ...
    let out = cat(&[])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "read through the flist's routes");
    ensure!(err.contains("--store") && err.contains("--use-flist-routes"), "{err}");
    // ... nor with the opt-in: only zdb:// and redis:// routes are.
    let out = cat(&["--use-flist-routes"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success() && err.contains("non-network") && err.contains(&store), "{err}");
    let out = cat(&["--store", &store])?;
    ensure!(out.status.success() && out.stdout == b"content\n", "{out:?}");
    Ok(())
}

#[test]
fn unpack_keeps_dest_and_can_skip_devices_and_owners() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("src");
    std::fs::create_dir(&src)?;
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o777))?;
    std::fs::write(src.join("f"), b"owned\n")?;
    std::os::unix::fs::chown(src.join("f"), Some(1234), Some(1234))?;
    run(Command::new("mknod").arg(src.join("null")).args(["c", "1", "3"]))?;
    let store = dir_url(&tmp.path().join("store"));
    let fl = pack(tmp.path(), &src, &store)?;
    let unpack = |dest: &Path, extra: &[&str]| -> Result<String> {
        let out = run(flist(&tmp.path().join("cache"))
            .args(["unpack", "--store", &store])
            .args(extra)
            .arg(&fl)
            .arg(dest))?;
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let fresh = |name: &str| -> Result<PathBuf> {
        let d = tmp.path().join(name);
        std::fs::create_dir(&d)?;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o750))?;
        Ok(d)
    };

    // Default (root): owners and devices as the flist says, DEST as it was.
    let d = fresh("default")?;
    let summary = unpack(&d, &[])?;
    ensure!(summary.contains("0 devices skipped"), "{summary}");
    ensure!(std::fs::metadata(&d)?.mode() & 0o7777 == 0o750, "DEST took the image's mode");
    ensure!(std::fs::metadata(d.join("f"))?.uid() == 1234);
    ensure!(std::fs::symlink_metadata(d.join("null"))?.file_type().is_char_device());

    // --no-devices --no-same-owner: no device, files are the caller's.
    let d = fresh("restricted")?;
    let summary = unpack(&d, &["--no-devices", "--no-same-owner"])?;
    ensure!(summary.contains("1 devices skipped"), "{summary}");
    ensure!(!d.join("null").exists() && std::fs::read(d.join("f"))? == b"owned\n");
    ensure!(std::fs::metadata(d.join("f"))?.uid() == 0);

    // --same-root-perms: DEST gets the image root's mode.
    let d = fresh("root-perms")?;
    unpack(&d, &["--same-root-perms"])?;
    ensure!(std::fs::metadata(&d)?.mode() & 0o7777 == 0o777);
    Ok(())
}
