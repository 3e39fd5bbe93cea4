//! The life of a VM disk without the kernel NBD client: nbdfuse turns the
//! export into a file, a loop device turns that into a block device; mkfs,
//! mount, write, unmount, fsck; restart nbdserver; fsck and every file
//! intact.

use std::process::Command;

use anyhow::{Result, ensure};
use zosfs_tests::nbd::{FuseFile, LoopDev, Mounted, NbdServer, pattern, run};

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

#[test]
fn ext4_on_nbdfuse_loop_survives_restart() -> Result<()> {
    let t = tempfile::tempdir()?;
    let mut srv = NbdServer::start(&t.path().join("cache"), &["--export", "vm=blank:256M"])?;
    let fuse_dir = t.path().join("fuse");
    let mnt = t.path().join("mnt");
    let want = files();

    {
        let fuse = FuseFile::mount(&fuse_dir, &srv.uri("vm"))?;
        let lo = LoopDev::attach(&fuse.file())?;
        run(Command::new("mkfs.ext4").args(["-q", "-F", &lo.dev]))?;
        let m = Mounted::mount(&lo.dev, &mnt, "rw")?;
        for (name, data) in &want {
            std::fs::write(m.dir.join(name), data)?;
        }
        run(Command::new("sync").arg("-f").arg(&m.dir))?;
        m.unmount()?;
        fsck(&lo.dev)?;
        drop(lo);
        fuse.unmount()?;
    }

    srv.restart()?;

    let fuse = FuseFile::mount(&fuse_dir, &srv.uri("vm"))?;
    let lo = LoopDev::attach(&fuse.file())?;
    fsck(&lo.dev)?;
    let m = Mounted::mount(&lo.dev, &mnt, "ro")?;
    for (name, data) in &want {
        let got = std::fs::read(m.dir.join(name))?;
        ensure!(&got == data, "{name} differs after restart");
    }
    m.unmount()?;
    drop(lo);
    fuse.unmount()?;
    srv.stop()
}
