//! fsmount's read-write layer with real btrfs, loop devices, overlayfs and
//! FUSE: persistence across remounts and teardown, quotas, crash recovery,
//! snapshots, and error reporting of `-d`.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Result, ensure};
use zosfs_tests::fsmount::{
    Env, compare_trees, describe_tree, fstype_at, make_rich_tree, wait_gone,
};
use zosfs_tests::wait_for;

const VOL: [&str; 2] = ["--volume-size", "1G"];

fn mount_rw(env: &Env, src: &Path, mnt: &Path, name: &str, extra: &[&str]) -> Result<()> {
    let mut args = vec!["--rw", name];
    args.extend(VOL);
    args.extend(extra);
    env.mount(src, mnt, &args)?;
    ensure!(fstype_at(mnt).as_deref() == Some("overlay"), "no overlay at {}", mnt.display());
    Ok(())
}

/// Writes, renames, chmods and deletes in the merged view.
fn change_things(m: &Path) -> Result<()> {
    std::fs::write(m.join("etc/new-file"), b"written in the merged view\n")?;
    std::fs::OpenOptions::new().append(true).open(m.join("etc/hostname"))?.write_all(b"more\n")?;
    std::fs::rename(m.join("usr/lib/big.bin"), m.join("usr/lib/big-renamed.bin"))?;
    std::fs::set_permissions(m.join("usr/bin/tool"), std::fs::Permissions::from_mode(0o700))?;
    std::fs::remove_file(m.join("etc/empty"))?;
    std::fs::remove_dir_all(m.join("wide"))?;
    std::fs::rename(m.join("names"), m.join("names-moved"))?;
    std::fs::create_dir(m.join("newdir"))?;
    std::os::unix::fs::symlink("newdir", m.join("newlink"))?;
    std::fs::write(m.join("newdir/inner"), vec![7u8; 200_000])?;
    Ok(())
}

#[test]
fn rw_changes_survive_remount_and_teardown() -> Result<()> {
    let env = Env::new()?;
    let src = env.mkdir("src")?;
    make_rich_tree(&src)?;
    let mnt = env.mkdir("mnt")?;

    mount_rw(&env, &src, &mnt, "app", &[])?;
    change_things(&mnt)?;
    let before = describe_tree(&mnt, true)?;
    ensure!(before.contains_key(Path::new("etc/new-file")));
    ensure!(!before.contains_key(Path::new("wide")));
    let pid = env.daemon_pid(&mnt)?;
    env.umount(&mnt)?;

    // Reboot-like teardown: process gone, nothing mounted, loop detached.
    env.wait_clean()?;
    wait_gone(pid)?;

    mount_rw(&env, &src, &mnt, "app", &[])?;
    let after = describe_tree(&mnt, true)?;
    compare_trees(&before, &after, &["ino"])?;
    ensure!(std::fs::read_to_string(mnt.join("etc/hostname"))? == "zosfs\nmore\n");
    env.umount(&mnt)?;

    // Another rw name starts from the pristine tree.
    mount_rw(&env, &src, &mnt, "other", &[])?;
    ensure!(mnt.join("wide/f0001").exists() && !mnt.join("etc/new-file").exists());
    env.umount(&mnt)?;
    env.wait_clean()
}

#[test]
fn quota_gives_edquot_and_the_mount_keeps_working() -> Result<()> {
    let env = Env::new()?;
    let src = env.mkdir("src")?;
    std::fs::write(src.join("base"), b"base")?;
    let mnt = env.mkdir("mnt")?;
    mount_rw(&env, &src, &mnt, "small", &["--quota", "16M"])?;

    // Write 64 MiB in 1 MiB steps, syncing so qgroup accounting catches up.
    let mut f = std::fs::File::create(mnt.join("filler"))?;
    let chunk = vec![0xabu8; 1 << 20];
    let mut err = None;
    for _ in 0..64 {
        if let Err(e) = f.write_all(&chunk).and_then(|_| f.sync_all()) {
            err = Some(e);
            break;
        }
    }
    drop(f);
    let e = err.ok_or_else(|| anyhow::anyhow!("64 MiB fit in a 16 MiB quota"))?;
    let code = e.raw_os_error();
    ensure!(code == Some(libc::EDQUOT) || code == Some(libc::ENOSPC), "unexpected error {e}");

    // Freeing space makes writes work again, and reads never stopped.
    ensure!(std::fs::read(mnt.join("base"))? == b"base");
    std::fs::remove_file(mnt.join("filler"))?;
    wait_for("quota space to be released", Duration::from_secs(30), || {
        let _ = std::process::Command::new("sync").status();
        Ok(std::fs::write(mnt.join("after"), vec![1u8; 1 << 20]).ok())
    })?;
    ensure!(std::fs::read(mnt.join("after"))?.len() == 1 << 20);
    env.umount(&mnt)?;
    env.wait_clean()
}

#[test]
fn kill9_leaves_a_mount_umount_cleans_and_remount_restores() -> Result<()> {
    let env = Env::new()?;
    let src = env.mkdir("src")?;
    make_rich_tree(&src)?;
    let mnt = env.mkdir("mnt")?;
    mount_rw(&env, &src, &mnt, "crashy", &[])?;
    change_things(&mnt)?;
    // Written data must be on disk before the crash, as after any crash.
    let _ = std::process::Command::new("sync").status();
    let before = describe_tree(&mnt, true)?;

    let pid = env.daemon_pid(&mnt)?;
    // SAFETY: kill(2) on the daemon this test started.
    ensure!(unsafe { libc::kill(pid as i32, libc::SIGKILL) } == 0);
    wait_gone(pid)?;
    ensure!(fstype_at(&mnt).as_deref() == Some("overlay"), "kill -9 should leave the overlay");

    let out = env.umount(&mnt)?;
    ensure!(out.contains("unmounted"), "{out}");
    env.wait_clean()?;

    mount_rw(&env, &src, &mnt, "crashy", &[])?;
    compare_trees(&before, &describe_tree(&mnt, true)?, &["ino"])?;
    env.umount(&mnt)?;
    env.wait_clean()
}

#[test]
fn daemon_reports_the_exact_error() -> Result<()> {
    let env = Env::new()?;
    let src = env.mkdir("src")?;
    let mnt = env.mkdir("mnt")?;
    // A "volume" holding data but no filesystem must never be formatted.
    let precious = env.path().join("precious.img");
    std::fs::write(&precious, vec![0x5a; 1 << 20])?;
    let out = env.fsmount(&[
        OsStr::new("-d"),
        src.as_os_str(),
        mnt.as_os_str(),
        OsStr::new("--rw"),
        OsStr::new("x"),
        OsStr::new("--volume"),
        precious.as_os_str(),
    ])?;
    ensure!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(err.contains("holds data but no filesystem; refusing to format it"), "{err}");
    ensure!(std::fs::read(&precious)? == vec![0x5a; 1 << 20], "the file was touched");

    let bad_name = env.fsmount(&[
        OsStr::new("-d"),
        src.as_os_str(),
        mnt.as_os_str(),
        OsStr::new("--rw"),
        OsStr::new("../etc"),
    ])?;
    ensure!(String::from_utf8_lossy(&bad_name.stderr).contains("rw name \"../etc\""));

    let missing =
        env.fsmount(&[OsStr::new("-d"), src.as_os_str(), OsStr::new("/nonexistent/mnt")])?;
    ensure!(!missing.status.success());
    ensure!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/mnt"));

    // Mounting twice at one place is refused while the first one serves.
    env.mount(&src, &mnt, &[])?;
    let twice = env.fsmount(&[OsStr::new("-d"), src.as_os_str(), mnt.as_os_str()])?;
    ensure!(String::from_utf8_lossy(&twice.stderr).contains("already mounted by fsmount"));
    env.umount(&mnt)?;
    env.wait_clean()?;
    let records = std::fs::read_dir(env.state().join("mounts"))?
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
        .count();
    ensure!(records == 0, "{records} records left");
    Ok(())
}

#[test]
fn snapshot_list_and_rm() -> Result<()> {
    let env = Env::new()?;
    let src = env.mkdir("src")?;
    std::fs::write(src.join("a"), b"a")?;
    let mnt = env.mkdir("mnt")?;
    mount_rw(&env, &src, &mnt, "base", &[])?;
    std::fs::write(mnt.join("b"), b"b")?;
    let list = env.fsmount_ok(&[OsStr::new("list")])?;
    ensure!(list.contains(&mnt.display().to_string()) && list.contains("base"), "{list}");
    ensure!(list.contains(&src.display().to_string()), "{list}");

    // rm refuses a mounted layer.
    let rm = env.fsmount(&[
        OsStr::new("rm"),
        OsStr::new("base"),
        OsStr::new("--volume-size"),
        OsStr::new("1G"),
    ])?;
    ensure!(!rm.status.success() && String::from_utf8_lossy(&rm.stderr).contains("is mounted at"));

    let _ = std::process::Command::new("sync").status();
    env.fsmount_ok(&[OsStr::new("snapshot"), OsStr::new("base"), OsStr::new("snap")])?;
    let ro = ["snapshot", "base", "frozen", "--readonly"].map(OsStr::new);
    env.fsmount_ok(&ro)?;
    std::fs::write(mnt.join("c"), b"after the snapshot")?;
    env.umount(&mnt)?;

    mount_rw(&env, &src, &mnt, "snap", &[])?;
    ensure!(mnt.join("a").exists() && mnt.join("b").exists() && !mnt.join("c").exists());
    env.umount(&mnt)?;

    // A read-only snapshot mounts only with --ro (writable, every write
    // would fail with EROFS).
    let mut args = vec!["-d", src.to_str().unwrap(), mnt.to_str().unwrap(), "--rw", "frozen"];
    args.extend(VOL);
    let refused = env.fsmount(&args.iter().map(OsStr::new).collect::<Vec<_>>())?;
    let err = String::from_utf8_lossy(&refused.stderr);
    ensure!(!refused.status.success(), "a read-only snapshot mounted writable");
    ensure!(err.contains("read-only snapshot") && err.contains("--ro"), "said: {err}");
    mount_rw(&env, &src, &mnt, "frozen", &["--ro"])?;
    ensure!(std::fs::read(mnt.join("b"))? == b"b" && !mnt.join("c").exists());
    env.umount(&mnt)?;
    env.fsmount_ok(&[OsStr::new("rm"), OsStr::new("frozen")])?;

    env.fsmount_ok(&[OsStr::new("rm"), OsStr::new("snap")])?;
    let again = env.fsmount(&[OsStr::new("rm"), OsStr::new("snap")])?;
    ensure!(String::from_utf8_lossy(&again.stderr).contains("does not exist"));
    // The volume is released after each management command.
    env.wait_clean()?;
    let empty = env.fsmount_ok(&[OsStr::new("list")])?;
    ensure!(empty.lines().count() == 1, "{empty}");
    Ok(())
}

#[test]
fn one_server_serves_every_mount_of_a_cache() -> Result<()> {
    let env = Env::new()?;
    let src = env.mkdir("src")?;
    std::fs::write(src.join("f"), b"shared")?;
    let (m1, m2) = (env.mkdir("m1")?, env.mkdir("m2")?);
    mount_rw(&env, &src, &m1, "one", &[])?;
    mount_rw(&env, &src, &m2, "two", &[])?;
    let pid = env.daemon_pid(&m1)?;
    ensure!(env.daemon_pid(&m2)? == pid, "two servers for one cache");
    std::fs::write(m1.join("f"), b"changed in one")?;
    ensure!(std::fs::read(m2.join("f"))? == b"shared", "rw layers leak");

    // The same rw layer cannot be mounted twice.
    let dup = env.fsmount(&[
        OsStr::new("-d"),
        src.as_os_str(),
        env.mkdir("m3")?.as_os_str(),
        OsStr::new("--rw"),
        OsStr::new("one"),
    ])?;
    ensure!(String::from_utf8_lossy(&dup.stderr).contains("already mounted at"));

    // Unmounting one keeps the other (and the server) alive.
    env.umount(&m1)?;
    ensure!(std::fs::read(m2.join("f"))? == b"shared");
    ensure!(!zosfs_tests::fsmount::process_gone(pid));
    env.umount(&m2)?;
    wait_gone(pid)?;
    env.wait_clean()
}
