//! A real root filesystem: `debootstrap --variant=minbase` (Debian's own
//! packages, from the Debian mirror) into the test's temp dir, pack it,
//! unpack it, compare everything. The debootstrap output lives only for
//! this run.

use std::process::Command;

use anyhow::{Result, ensure};
use zosfs_tests::flist::{compare_trees, dir_url, flist, run};

/// The Debian suite to bootstrap (the host's own release by default).
fn suite() -> String {
    std::env::var("ZOSFS_TEST_SUITE").unwrap_or_else(|_| "bookworm".into())
}

fn mirror() -> String {
    std::env::var("ZOSFS_TEST_MIRROR").unwrap_or_else(|_| "http://deb.debian.org/debian".into())
}

fn du_bytes(p: &std::path::Path) -> Result<u64> {
    let out = run(Command::new("du").args(["-s", "--apparent-size", "-B1"]).arg(p))?;
    let text = String::from_utf8(out.stdout)?;
    Ok(text.split_whitespace().next().unwrap_or("0").parse()?)
}

#[test]
fn debootstrap_rootfs_round_trip() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let rootfs = tmp.path().join("rootfs");
    run(Command::new("debootstrap")
        .args(["--variant=minbase", &suite()])
        .arg(&rootfs)
        .arg(mirror()))?;
    ensure!(
        rootfs.join("bin/sh").exists() || rootfs.join("usr/bin/sh").exists(),
        "no shell in rootfs"
    );

    let (store, cache, dest) =
        (tmp.path().join("store"), tmp.path().join("cache"), tmp.path().join("dest"));
    let fl = tmp.path().join("rootfs.flist");
    let out = run(flist(&cache)
        .args(["pack", "--no-progress", "-o"])
        .arg(&fl)
        .args(["--store", &dir_url(&store), "--tag", "name=debian-minbase"])
        .arg(&rootfs))?;
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    run(flist(&cache)
        .args(["unpack", "--same-root-perms"])
        .arg(&fl)
        .args(["--store", &dir_url(&store)])
        .arg(&dest))?;
    compare_trees(&rootfs, &dest, &[])?;

    let tree = du_bytes(&rootfs)?;
    let size = std::fs::metadata(&fl)?.len();
    eprintln!(
        "rootfs {tree} bytes, flist {size} bytes = {:.3} % of the tree",
        size as f64 * 100.0 / tree as f64
    );
    // A sanity bound, not a performance figure: an flist is metadata.
    ensure!(size * 20 < tree, "flist of {size} bytes for a {tree} byte tree");
    let v = run(flist(&cache).arg("verify").arg(&fl).args(["--store", &dir_url(&store)]))?;
    ensure!(v.status.success());
    Ok(())
}
