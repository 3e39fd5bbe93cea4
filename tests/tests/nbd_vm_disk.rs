//! The life of a VM disk without the kernel NBD client: nbdfuse turns the
//! export into a file, a loop device turns that into a block device; mkfs,
//! mount, write, unmount, fsck; restart nbdserver; fsck and every file
//! intact; then `nbdserver commit` makes it an image, and a fresh device
//! served from that image shows the same files.

use std::path::Path;
use std::process::Command;

use anyhow::{Result, ensure};
use zosfs_tests::bin;
use zosfs_tests::nbd::{FuseFile, LoopDev, Mounted, NbdServer, pattern, run, run_text, stat};

fn files() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> =
        (0..50).map(|i| (format!("small-{i}"), pattern(100 + i, 1000 + 37 * i as usize))).collect();
    v.push(("big".into(), pattern(7, 24 << 20)));
    v
}

/// fsck must find the filesystem clean (exit 0, nothing fixed).
fn fsck(dev: &str) -> Result<()> {
    run(Command::new("fsck.ext4").args(["-f", "-n", dev]))?;
    Ok(())
}

/// Mount the export read-only through nbdfuse + loop, fsck it, and compare
/// every file.
fn check_files(t: &Path, uri: &str, want: &[(String, Vec<u8>)]) -> Result<()> {
    let fuse = FuseFile::mount(&t.join("fuse"), uri)?;
    let lo = LoopDev::attach(&fuse.file())?;
    fsck(&lo.dev)?;
    let m = Mounted::mount(&lo.dev, &t.join("mnt"), "ro")?;
    for (name, data) in want {
        let got = std::fs::read(m.dir.join(name))?;
        ensure!(&got == data, "{name} differs");
    }
    m.unmount()?;
    drop(lo);
    fuse.unmount()
}

#[test]
fn ext4_on_nbdfuse_loop_survives_restart_and_commit() -> Result<()> {
    let t = tempfile::tempdir()?;
    let store = format!("dir://{}", t.path().join("store").display());
    let cache = t.path().join("cache");
    let spec = "vm=blank:256M";
    let mut srv = NbdServer::start(&cache, &["--store", &store, "--export", spec])?;
    let want = files();
    {
        let fuse = FuseFile::mount(&t.path().join("fuse"), &srv.uri("vm"))?;
        let lo = LoopDev::attach(&fuse.file())?;
        run(Command::new("mkfs.ext4").args(["-q", "-F", &lo.dev]))?;
        let m = Mounted::mount(&lo.dev, &t.path().join("mnt"), "rw")?;
        for (name, data) in &want {
            std::fs::write(m.dir.join(name), data)?;
        }
        run(Command::new("sync").arg("-f").arg(&m.dir))?;
        m.unmount()?;
        fsck(&lo.dev)?;
        drop(lo);
        fuse.unmount()?;
    }
    let dirty = stat(&cache, "vm", "chunks_dirty")?;
    ensure!(dirty > 0 && dirty < 256, "{dirty} dirty chunks after mkfs + 25 MiB of files");

    srv.restart()?;
    check_files(t.path(), &srv.uri("vm"), &want)?;
    srv.stop()?;

    // The disk becomes an image: only the chunks written are uploaded.
    // Offline, the export's cache says what it is: no --export again.
    let image = t.path().join("vm.flist");
    let out = run_text(
        Command::new(bin("nbdserver"))
            .args(["commit", "--cache-dir"])
            .arg(&cache)
            .args(["--store", &store, "vm", "-o"])
            .arg(&image),
    )?;
    ensure!(out.contains(&format!("{dirty} uploaded")), "commit: {out} (dirty {dirty})");

    // A fresh device (new cache) from the new image shows the same files.
    let spec2 = format!("vm2={}:/disk.raw", image.display());
    let mut srv2 =
        NbdServer::start(&t.path().join("cache2"), &["--store", &store, "--export", &spec2])?;
    check_files(t.path(), &srv2.uri("vm2"), &want)?;
    srv2.stop()
}
