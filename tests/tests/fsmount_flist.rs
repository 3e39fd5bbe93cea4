//! fsmount over real flists with a real kernel (FUSE, btrfs, overlayfs):
//! a packed tree compared entry by entry with its source, lazy fetching
//! (one byte of a 100 MiB file fetches one chunk), a node cache shared by
//! two mounts and kept across restarts, a replica that dies mid-read (EIO,
//! then recovery), kill -9 with an rw layer, and a debootstrap rootfs used
//! through chroot; an rfs `.fl` and layered flists.

use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use zosfs_tests::flist::{dir_url, flist, noise, run};
use zosfs_tests::fsmount::{
    Env, compare_trees, content_hash, describe_tree, fstype_at, make_rich_tree, wait_gone,
};
use zosfs_tests::router::start_serve_on;
use zosfs_tests::{free_port, wait_for};

const MIB: u64 = 1 << 20;

/// `flist pack SRC` into `STORE_URL`; returns the flist path.
fn pack(env: &Env, src: &Path, store_url: &str) -> Result<PathBuf> {
    let fl = env
        .path()
        .join(format!("{}.flist", src.file_name().and_then(OsStr::to_str).unwrap_or("tree")));
    run(flist(&env.path().join("pack-cache"))
        .args(["pack", "--no-progress", "-o"])
        .arg(&fl)
        .args(["--store", store_url])
        .arg(src))?;
    Ok(fl)
}

/// `fsmount -d FLIST MNT EXTRA…` reading from the env's `dir://` store
/// (an flist's own routes are not used without --store).
fn mount(env: &Env, fl: &Path, mnt: &Path, extra: &[&str]) -> Result<String> {
    let store = dir_url(&env.path().join("store"));
    let mut args = vec!["--store", store.as_str()];
    args.extend(extra);
    env.mount(fl, mnt, &args)
}

/// A counter of `fsmount stats MOUNTPOINT`.
fn stat_field(env: &Env, mnt: &Path, name: &str) -> Result<u64> {
    let stats = env.fsmount_ok(&[OsStr::new("stats"), mnt.as_os_str()])?;
    let line = stats.lines().find(|l| l.starts_with(name)).with_context(|| name.to_string())?;
    line[name.len()..]
        .split_whitespace()
        .next()
        .context("value")?
        .parse()
        .with_context(|| format!("{name} in {stats}"))
}

fn pread(p: &Path, off: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(p)?;
    let mut buf = vec![0u8; len];
    let n = f.read_at(&mut buf, off)?;
    buf.truncate(n);
    Ok(buf)
}

#[test]
fn flist_mount_shows_every_entry_exactly() -> Result<()> {
    let env = Env::new()?;
    let src = env.mkdir("src")?;
    make_rich_tree(&src)?;
    let fl = pack(&env, &src, &dir_url(&env.path().join("store")))?;
    let mnt = env.mkdir("mnt")?;
    mount(&env, &fl, &mnt, &[])?;
    ensure!(fstype_at(&mnt).as_deref() == Some("fuse.zosfs"));

    // A file opened while its content was not local stays open (served
    // in user space) while the content completes: later opens of it must
    // not ask for passthrough (the kernel refuses mixing the modes: EIO).
    // A second mount of the flist (same process, same cache) tells when
    // the content is complete: its opens then use passthrough.
    let big = std::fs::read(src.join("usr/lib/big.bin"))?;
    let held = std::fs::File::open(mnt.join("usr/lib/big.bin"))?;
    ensure!(std::fs::read(mnt.join("usr/lib/big.bin"))? == big);
    let probe = env.mkdir("probe")?;
    mount(&env, &fl, &probe, &[])?;
    wait_for("the content to complete", Duration::from_secs(30), || {
        ensure!(std::fs::read(probe.join("usr/lib/big.bin"))? == big);
        Ok((stat_field(&env, &probe, "passthrough opens")? > 0).then_some(()))
    })?;
    ensure!(std::fs::read(mnt.join("usr/lib/big.bin"))? == big);
    drop(held);
    env.umount(&probe)?;

    // Every entry: type, mode, owners, size, link count, ns mtime, device
    // numbers, symlink target, xattrs and content. Inode numbers are the
    // flist's, not the source's.
    let want = describe_tree(&src, true)?;
    let got = describe_tree(&mnt, true)?;
    compare_trees(&want, &got, &["ino"])?;
    ensure!(got[Path::new("")].ino == 1, "root inode {}", got[Path::new("")].ino);
    // 300 small files: more than the server keeps open when idle, so the
    // oldest were closed; read again, they open again, nothing is fetched.
    let fetched = stat_field(&env, &mnt, "chunks fetched")?;
    for i in 0..300 {
        let name = format!("wide/f{i:04}");
        ensure!(std::fs::read(mnt.join(&name))? == format!("{i}").as_bytes(), "{name}");
    }
    ensure!(stat_field(&env, &mnt, "chunks fetched")? == fetched);
    let (a, b) = (&got[Path::new("usr/bin/tool")], &got[Path::new("usr/bin/tool-link")]);
    ensure!(a.ino == b.ino && a.nlink == 2, "hardlinks: {a:?} vs {b:?}");
    let e = std::fs::symlink_metadata(mnt.join("etc/no-such-entry")).unwrap_err();
    ensure!(e.raw_os_error() == Some(libc::ENOENT), "{e}");
    let e = std::fs::write(mnt.join("etc/hostname"), b"x").unwrap_err();
    ensure!(e.raw_os_error() == Some(libc::EROFS), "{e}");
    env.umount(&mnt)?;

    // Inode numbers are the same on the next mount (and the next process).
    env.wait_clean()?;
    mount(&env, &fl, &mnt, &[])?;
    let again = describe_tree(&mnt, false)?;
    for (p, info) in &again {
        ensure!(info.ino == got[p].ino, "{p:?}: inode {} then {}", got[p].ino, info.ino);
    }
    // Contents read on the first mount are local now: nothing is fetched.
    ensure!(
        content_hash(&mnt.join("usr/lib/big.bin"))? == content_hash(&src.join("usr/lib/big.bin"))?
    );
    ensure!(stat_field(&env, &mnt, "chunks fetched")? == 0);
    ensure!(stat_field(&env, &mnt, "passthrough opens")? >= 1);
    env.umount(&mnt)?;
    env.wait_clean()
}

#[test]
fn one_byte_fetches_one_chunk_and_mounts_share_the_cache() -> Result<()> {
    let env = Env::new()?;
    let src = env.mkdir("big")?;
    let data = noise(42, (100 * MIB) as usize);
    std::fs::write(src.join("100m.bin"), &data)?;
    let fl = pack(&env, &src, &dir_url(&env.path().join("store")))?;
    let (m1, m2) = (env.mkdir("m1")?, env.mkdir("m2")?);
    mount(&env, &fl, &m1, &[])?;
    mount(&env, &fl, &m2, &[])?;
    // One process serves both mounts of this cache.
    ensure!(env.daemon_pid(&m1)? == env.daemon_pid(&m2)?);

    // One byte in the middle: its chunk and nothing else.
    let off = 50 * MIB + 777;
    ensure!(pread(&m1.join("100m.bin"), off, 1)? == data[off as usize..off as usize + 1]);
    ensure!(stat_field(&env, &m1, "chunks fetched")? == 1);
    ensure!(stat_field(&env, &m1, "bytes fetched")? == MIB);

    // The whole file through m1: every other chunk fetched exactly once.
    ensure!(std::fs::read(m1.join("100m.bin"))? == data, "content differs");
    ensure!(stat_field(&env, &m1, "chunks fetched")? == 100);
    ensure!(stat_field(&env, &m1, "bytes fetched")? == 100 * MIB);
    // The other mount reads it all from the shared cache (by passthrough:
    // it is complete now), without a fetch.
    ensure!(std::fs::read(m2.join("100m.bin"))? == data, "content differs in m2");
    ensure!(stat_field(&env, &m2, "chunks fetched")? == 0);
    // Complete once the last chunk states are written (just after the
    // reads returned): from then on opens use passthrough.
    wait_for("a passthrough open in m2", Duration::from_secs(30), || {
        let f = std::fs::File::open(m2.join("100m.bin"))?;
        drop(f);
        Ok((stat_field(&env, &m2, "passthrough opens")? >= 1).then_some(()))
    })?;
    ensure!(stat_field(&env, &m2, "chunks fetched")? == 0);
    let pid = env.daemon_pid(&m1)?;
    env.umount(&m1)?;
    env.umount(&m2)?;
    wait_gone(pid)?;
    env.wait_clean()?;

    // The cache outlives the process: a new server fetches nothing.
    mount(&env, &fl, &m1, &[])?;
    ensure!(std::fs::read(m1.join("100m.bin"))? == data);
    ensure!(stat_field(&env, &m1, "chunks fetched")? == 0);
    env.umount(&m1)?;
    env.wait_clean()
}

/// Read a whole file past the kernel's page cache of it, so the FUSE
/// layer sees the reads.
fn read_uncached(p: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let mut f = std::fs::File::open(p)?;
    // SAFETY: fadvise on a descriptor we own.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    ensure!(rc == 0, "fadvise: {rc}");
    let mut v = Vec::new();
    f.read_to_end(&mut v)?;
    Ok(v)
}

#[test]
fn cache_size_evicts_contents_not_in_use() -> Result<()> {
    let env = Env::new()?;
    let src = env.mkdir("files")?;
    // Distinct contents (equal ones would share one cache file).
    let file = |i: u64| noise(2 * i + 1, (4 * MIB) as usize);
    for i in 0..4u64 {
        std::fs::write(src.join(format!("f{i}")), file(i))?;
    }
    let fl = pack(&env, &src, &dir_url(&env.path().join("store")))?;
    let mnt = env.mkdir("mnt")?;
    mount(&env, &fl, &mnt, &["--cache-size", "10M"])?;
    for i in 0..4u64 {
        ensure!(std::fs::read(mnt.join(format!("f{i}")))? == file(i));
    }
    ensure!(stat_field(&env, &mnt, "chunks fetched")? == 16);
    // Two 4 MiB contents fit in 10 MiB: once the files are closed, the
    // two least recently used go.
    let contents = env.cache().join("contents");
    let data_files = || -> Result<Vec<String>> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(&contents)? {
            let name = e?.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".state") {
                v.push(name);
            }
        }
        Ok(v)
    };
    wait_for("eviction down to two contents", Duration::from_secs(30), || {
        Ok((data_files()?.len() == 2).then_some(()))
    })?;
    let used: u64 = std::fs::read_dir(&contents)?
        .map(|e| Ok(std::os::unix::fs::MetadataExt::blocks(&e?.metadata()?) * 512))
        .sum::<Result<u64>>()?;
    ensure!(used <= 10 * MIB, "cache holds {used} bytes");
    // The last file read is still cached, the first one is fetched again.
    ensure!(read_uncached(&mnt.join("f3"))? == file(3));
    ensure!(stat_field(&env, &mnt, "chunks fetched")? == 16);
    ensure!(read_uncached(&mnt.join("f0"))? == file(0));
    ensure!(stat_field(&env, &mnt, "chunks fetched")? == 20);
    env.umount(&mnt)?;
    env.wait_clean()
}

#[test]
fn prefetch_all_fills_every_file_in_the_background() -> Result<()> {
    let env = Env::new()?;
    let src = env.mkdir("files")?;
    let file = |i: u64| noise(2 * i + 101, (5 * MIB / 2) as usize);
    for i in 0..3u64 {
        std::fs::create_dir_all(src.join(format!("d{i}")))?;
        std::fs::write(src.join(format!("d{i}/f")), file(i))?;
    }
    std::fs::write(src.join("empty"), b"")?;
    let fl = pack(&env, &src, &dir_url(&env.path().join("store")))?;
    let mnt = env.mkdir("mnt")?;
    mount(&env, &fl, &mnt, &["--prefetch", "all", "--prefetch-bandwidth", "100M"])?;
    // Three files of three chunks each arrive without anyone reading.
    wait_for("the prefetch to fetch 9 chunks", Duration::from_secs(60), || {
        Ok((stat_field(&env, &mnt, "chunks fetched")? == 9).then_some(()))
    })?;
    // Each content becomes complete (its last state write lands just
    // after its fetch): then it opens by passthrough. Nothing more is fetched.
    for i in 0..3u64 {
        let p = mnt.join(format!("d{i}/f"));
        wait_for("a passthrough open", Duration::from_secs(30), || {
            let before = stat_field(&env, &mnt, "passthrough opens")?;
            ensure!(std::fs::read(&p)? == file(i), "content of {}", p.display());
            Ok((stat_field(&env, &mnt, "passthrough opens")? > before).then_some(()))
        })?;
    }
    ensure!(stat_field(&env, &mnt, "chunks fetched")? == 9);
    env.umount(&mnt)?;
    env.wait_clean()
}

#[test]
fn prefetch_all_stops_at_the_cache_budget_and_says_so() -> Result<()> {
    let env = Env::new()?;
    let src = env.mkdir("files")?;
    // Four files of 2.5 MiB (three chunks each) against a 6 MiB budget:
    // the prefetch takes what fits 90 % of it (two files, six chunks)
    // instead of fetching ten MiB and evicting the first half.
    for i in 0..4u64 {
        std::fs::write(src.join(format!("f{i}")), noise(i + 7, (5 * MIB / 2) as usize))?;
    }
    let fl = pack(&env, &src, &dir_url(&env.path().join("store")))?;
    let mnt = env.mkdir("mnt")?;
    mount(&env, &fl, &mnt, &["--prefetch", "all", "--cache-size", "6M"])?;
    let line = wait_for("the prefetch to finish", Duration::from_secs(60), || {
        let stats = env.fsmount_ok(&[OsStr::new("stats"), mnt.as_os_str()])?;
        Ok(stats
            .lines()
            .find(|l| l.starts_with("prefetch ") && l.contains("done"))
            .map(String::from))
    })?;
    ensure!(line.contains("5.0 MiB not prefetched (over --cache-size)"), "stats said: {line}");
    ensure!(stat_field(&env, &mnt, "chunks fetched")? == 6);
    env.umount(&mnt)?;
    env.wait_clean()
}

/// A mount whose only store is down works (cached data would be served)
/// but says so on the terminal, instead of a plain "mounted".
#[test]
fn mounting_with_an_unreachable_store_warns() -> Result<()> {
    let env = Env::new()?;
    let port = free_port();
    let mut replica = start_serve_on(&env.path().join("replica"), port)?;
    let url = format!("zdb://127.0.0.1:{port}/default");
    let src = env.mkdir("data")?;
    std::fs::write(src.join("f"), b"f")?;
    let fl = pack(&env, &src, &url)?;
    replica.kill9();
    let mnt = env.mkdir("mnt")?;
    let args = ["-d", fl.to_str().unwrap(), mnt.to_str().unwrap(), "--store", &url];
    let out = env.fsmount(&args.map(OsStr::new))?;
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.success(), "mount failed: {stderr}");
    ensure!(stdout.contains("mounted at"), "stdout: {stdout}");
    ensure!(
        stderr.contains("warning: store") && stderr.contains(&format!("127.0.0.1:{port}")),
        "no warning about the store on stderr: {stderr}"
    );
    ensure!(!stderr.contains("zdb://:"), "a password-shaped URL leaked: {stderr}");
    env.umount(&mnt)?;
    env.wait_clean()
}

#[test]
fn a_replica_that_dies_mid_read_gives_eio_and_the_mount_recovers() -> Result<()> {
    let env = Env::new()?;
    let port = free_port();
    let replica_dir = env.path().join("replica");
    let mut replica = start_serve_on(&replica_dir, port)?;
    let url = format!("zdb://127.0.0.1:{port}/default");
    let src = env.mkdir("data")?;
    let data = noise(7, (24 * MIB) as usize);
    std::fs::write(src.join("file.bin"), &data)?;
    let fl = pack(&env, &src, &url)?;
    let mnt = env.mkdir("mnt")?;
    // Reads wait 2 s for the store to return before they fail.
    env.mount(&fl, &mnt, &["--store", &url, "--outage-wait", "2"])?;
    let file = mnt.join("file.bin");
    let at = |off: u64| data[off as usize..off as usize + 16].to_vec();
    ensure!(pread(&file, MIB + 5, 16)? == at(MIB + 5));

    replica.kill9();
    // A read of a chunk that is not local: EIO, within a deadline (a hang
    // fails the test), never ENOENT.
    let (tx, rx) = mpsc::channel();
    let f2 = file.clone();
    std::thread::spawn(move || {
        let _ = tx.send(pread(&f2, 17 * MIB + 3, 16));
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(Err(e)) => ensure!(e.raw_os_error() == Some(libc::EIO), "want EIO, got {e}"),
        Ok(Ok(_)) => bail!("read succeeded with the only replica gone"),
        Err(_) => bail!("read hung with the replica gone"),
    }
    // The entry is still there.
    ensure!(std::fs::metadata(&file)?.len() == data.len() as u64);
    ensure!(stat_field(&env, &mnt, "fetch errors")? >= 1);

    // Same port, same data: reads work again.
    let _replica = start_serve_on(&replica_dir, port)?;
    wait_for("reads after the replica returns", Duration::from_secs(60), || {
        Ok(pread(&file, 17 * MIB + 3, 16).ok().filter(|b| *b == at(17 * MIB + 3)).map(|_| ()))
    })?;
    ensure!(std::fs::read(&file)? == data);
    env.umount(&mnt)?;
    env.wait_clean()
}

#[test]
fn kill9_with_an_flist_and_rw_layer_keeps_rw_data() -> Result<()> {
    let env = Env::new()?;
    let src = env.mkdir("src")?;
    make_rich_tree(&src)?;
    let fl = pack(&env, &src, &dir_url(&env.path().join("store")))?;
    let mnt = env.mkdir("mnt")?;
    let rw = ["--rw", "app", "--volume-size", "1G"];
    mount(&env, &fl, &mnt, &rw)?;
    ensure!(fstype_at(&mnt).as_deref() == Some("overlay"));
    std::fs::write(mnt.join("etc/new-file"), b"written over an flist\n")?;
    std::fs::rename(mnt.join("usr/lib/big.bin"), mnt.join("usr/lib/big-renamed.bin"))?;
    std::fs::remove_dir_all(mnt.join("wide"))?;
    let _ = Command::new("sync").status();
    let before = describe_tree(&mnt, true)?;

    let pid = env.daemon_pid(&mnt)?;
    // SAFETY: kill(2) on the daemon this test started.
    ensure!(unsafe { libc::kill(pid as i32, libc::SIGKILL) } == 0);
    wait_gone(pid)?;
    ensure!(env.umount(&mnt)?.contains("unmounted"));
    env.wait_clean()?;

    mount(&env, &fl, &mnt, &rw)?;
    compare_trees(&before, &describe_tree(&mnt, true)?, &["ino"])?;
    ensure!(std::fs::read(mnt.join("etc/new-file"))? == b"written over an flist\n");
    env.umount(&mnt)?;
    env.wait_clean()
}

fn du_apparent(p: &Path) -> Result<u64> {
    let out = run(Command::new("du").args(["-s", "--apparent-size", "-B1"]).arg(p))?;
    Ok(String::from_utf8(out.stdout)?.split_whitespace().next().unwrap_or("0").parse()?)
}

#[test]
fn debootstrap_rootfs_runs_from_a_lazy_mount() -> Result<()> {
    let env = Env::new()?;
    // debootstrap output cached in the test's temp dir, for this run only.
    let rootfs = env.path().join("rootfs");
    let suite = std::env::var("ZOSFS_TEST_SUITE").unwrap_or_else(|_| "bookworm".into());
    let mirror = std::env::var("ZOSFS_TEST_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".into());
    run(Command::new("debootstrap").args(["--variant=minbase", &suite]).arg(&rootfs).arg(&mirror))?;
    let image = du_apparent(&rootfs)?;
    let fl = pack(&env, &rootfs, &dir_url(&env.path().join("store")))?;
    let mnt = env.mkdir("merged")?;
    mount(&env, &fl, &mnt, &["--rw", "root", "--volume-size", "2G"])?;
    ensure!(fstype_at(&mnt).as_deref() == Some("overlay"));

    let chroot = |args: &[&str]| -> Result<String> {
        let out = run(Command::new("/usr/sbin/chroot")
            .arg(&mnt)
            .args(args)
            .env("PATH", "/usr/bin:/bin"))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let dpkg = chroot(&["dpkg", "-l"])?;
    ensure!(dpkg.lines().any(|l| l.starts_with("ii  dpkg ")), "dpkg -l: {dpkg}");
    ensure!(chroot(&["sh", "-c", "echo ok"])?.trim() == "ok");
    let apt = chroot(&["apt-get", "--version"])?;
    ensure!(apt.starts_with("apt "), "apt-get --version: {apt}");

    let fetched = stat_field(&env, &mnt, "bytes fetched")?;
    eprintln!(
        "rootfs image {image} bytes; fetched {fetched} bytes for dpkg -l, sh, apt-get --version = {:.2} % (target <= 10 %)",
        fetched as f64 * 100.0 / image as f64
    );
    ensure!(fetched > 0 && fetched < image, "fetched {fetched} of {image} bytes");
    env.umount(&mnt)?;
    env.wait_clean()
}

#[test]
fn an_rfs_fl_mounts_like_its_source() -> Result<()> {
    let env = Env::new()?;
    let src = env.mkdir("rfs-src")?;
    std::fs::create_dir_all(src.join("etc/conf.d"))?;
    std::fs::write(src.join("etc/hostname"), b"zos\n")?;
    std::fs::write(src.join("etc/conf.d/big"), noise(9, 1_300_000))?;
    std::fs::write(src.join("empty"), b"")?;
    std::os::unix::fs::symlink("etc/hostname", src.join("link"))?;
    // rfs keeps mtimes in whole seconds.
    for p in ["etc/hostname", "etc/conf.d/big", "empty", "link", "etc/conf.d", "etc", "."] {
        run(Command::new("touch").args(["-h", "-d", "2022-02-02 02:02:02"]).arg(src.join(p)))?;
    }
    let store = env.path().join("store");
    let fl = env.path().join("image.fl");
    let rt = tokio::runtime::Runtime::new()?;
    let s =
        rt.block_on(zosfs_store::open_backend(&dir_url(&store).parse()?, &Default::default()))?;
    zosfs_flist::legacy::rfs::write_fl(&src, &fl, &*s, rt.handle(), &[dir_url(&store)], &[])?;
    drop(rt);

    let mnt = env.mkdir("mnt")?;
    // No --store: the routes the .fl records.
    mount(&env, &fl, &mnt, &[])?;
    compare_trees(&describe_tree(&src, true)?, &describe_tree(&mnt, true)?, &["ino"])?;
    ensure!(stat_field(&env, &mnt, "chunks fetched")? >= 3);
    env.umount(&mnt)?;
    env.wait_clean()
}

#[test]
fn layered_flists_later_wins() -> Result<()> {
    let env = Env::new()?;
    let (a, b) = (env.mkdir("a")?, env.mkdir("b")?);
    std::fs::create_dir_all(a.join("etc"))?;
    std::fs::write(a.join("etc/conf"), b"from a")?;
    std::fs::write(a.join("etc/a-only"), b"a")?;
    std::fs::create_dir_all(b.join("etc"))?;
    std::fs::write(b.join("etc/conf"), b"from b")?;
    std::fs::write(b.join("etc/b-only"), b"b")?;
    let store = dir_url(&env.path().join("store"));
    let (fa, fb) = (pack(&env, &a, &store)?, pack(&env, &b, &store)?);
    let mnt = env.mkdir("mnt")?;
    env.fsmount_ok(&[
        OsStr::new("-d"),
        OsStr::new("--store"),
        OsStr::new(&store),
        OsStr::new("--flist"),
        fa.as_os_str(),
        OsStr::new("--flist"),
        fb.as_os_str(),
        mnt.as_os_str(),
    ])?;
    ensure!(std::fs::read(mnt.join("etc/conf"))? == b"from b");
    ensure!(std::fs::read(mnt.join("etc/a-only"))? == b"a");
    ensure!(std::fs::read(mnt.join("etc/b-only"))? == b"b");
    env.umount(&mnt)?;
    env.wait_clean()
}
