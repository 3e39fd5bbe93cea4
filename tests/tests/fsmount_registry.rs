//! The node registry of fsmount with real FUSE, btrfs on loop devices and
//! overlayfs: `umount`, `list`, `stats`, `snapshot` and `rm` find a mount
//! made with another state directory and cache without being told, accept
//! the mount's flags, `list` shows every cache's mounts and serving
//! processes, stale entries are cleaned, and mount / umount / mount of one
//! rw layer on a `local://` node store works 20 times in a row leaving no
//! process and no mount behind.
//!
//! Each test has its own registry and run directory (ZOSFS_REGISTRY,
//! ZOSFS_RUN_DIR, set by [`Env`]); "bare" commands get nothing else: no
//! --state, no ZOSFS_STATE / ZOSFS_CACHE / ZOSFS_STORE.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use zosfs_tests::flist::{flist, run};
use zosfs_tests::fsmount::{
    Env, fsmount_pids_under, fstype_at, mountinfo, process_gone, record_pid, wait_gone,
};
use zosfs_tests::wait_for;

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// The line of `list` output about `mnt`.
fn list_line<'a>(list: &'a str, mnt: &Path) -> Result<&'a str> {
    let mp = mnt.display().to_string();
    list.lines()
        .find(|l| l.split_whitespace().next() == Some(mp.as_str()))
        .with_context(|| format!("{mp} not in the list:\n{list}"))
}

/// The `*.toml` files of a directory.
fn toml_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect()
        })
        .unwrap_or_default()
}

fn mode_of(p: &Path) -> Result<u32> {
    Ok(std::fs::metadata(p).with_context(|| p.display().to_string())?.permissions().mode() & 0o777)
}

/// Nothing of `env` is mounted, attached or running, and the registry
/// and run directory hold no entry.
fn assert_nothing_left(env: &Env) -> Result<()> {
    env.wait_clean()?;
    let pids = fsmount_pids_under(env.path());
    ensure!(pids.is_empty(), "fsmount processes left: {pids:?}");
    let entries = toml_files(&env.registry().join("mounts"));
    ensure!(entries.is_empty(), "registry entries left: {entries:?}");
    let servers: Vec<_> = std::fs::read_dir(env.run_dir().join("servers"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    ensure!(servers.is_empty(), "sockets or status files left: {servers:?}");
    Ok(())
}

#[test]
fn commands_find_a_mount_without_its_flags() -> Result<()> {
    let env = Env::new()?;
    let src = env.mkdir("src")?;
    std::fs::write(src.join("hello"), b"hello registry\n")?;
    let mnt = env.mkdir("mnt")?;
    let state = env.path().join("custom-state");
    let cache = env.path().join("custom-cache");
    let mounted = env.fsmount_bare_ok(&[
        os("-d"),
        src.as_os_str(),
        mnt.as_os_str(),
        os("--rw"),
        os("app"),
        os("--volume-size"),
        os("1G"),
        os("--state"),
        state.as_os_str(),
        os("--cache"),
        cache.as_os_str(),
    ])?;
    ensure!(mounted.contains("rw layer app"), "{mounted}");
    ensure!(fstype_at(&mnt).as_deref() == Some("overlay"), "no overlay at {}", mnt.display());
    let pid = record_pid(&state, &mnt)?;

    // Private node directories.
    for d in [env.registry(), env.registry().join("mounts"), env.run_dir().join("servers")] {
        ensure!(mode_of(&d)? == 0o700, "{} is {:o}", d.display(), mode_of(&d)?);
    }

    // list: the mount, its process and its cache; the process and why.
    let list = env.fsmount_bare_ok(&[os("list")])?;
    let line = list_line(&list, &mnt)?;
    ensure!(line.contains(&format!("pid {pid}")) && line.contains(" app "), "{line}");
    ensure!(line.contains(&cache.display().to_string()), "no cache in: {line}");
    ensure!(line.contains(&src.display().to_string()), "no source in: {line}");
    let server = list
        .lines()
        .find(|l| l.starts_with(&format!("pid {pid} ")))
        .with_context(|| format!("no server line:\n{list}"))?;
    let cols: Vec<&str> = server.split_whitespace().collect();
    ensure!(cols.get(2) == Some(&"serving") && cols.get(3) == Some(&"1"), "{server}");
    ensure!(server.ends_with("serving 1 mount"), "{server}");

    // stats.
    std::fs::read(mnt.join("hello"))?;
    let stats = env.fsmount_bare_ok(&[os("stats"), mnt.as_os_str()])?;
    ensure!(stats.contains(&format!("mountpoint        {}", mnt.display())), "{stats}");

    // snapshot and rm go to the volume of the custom state directory.
    std::fs::write(mnt.join("written"), b"before the snapshot")?;
    let _ = std::process::Command::new("sync").status();
    let snap = env.fsmount_bare_ok(&[os("snapshot"), os("app"), os("snap")])?;
    ensure!(
        snap.contains(&state.display().to_string()),
        "snapshot not in {}: {snap}",
        state.display()
    );
    let rm_mounted = env.fsmount_bare(&[os("rm"), os("app")])?;
    ensure!(!rm_mounted.status.success(), "rm of a mounted layer succeeded");
    let err = String::from_utf8_lossy(&rm_mounted.stderr);
    ensure!(err.contains("is mounted at"), "{err}");
    env.fsmount_bare_ok(&[os("rm"), os("snap")])?;

    // umount: found, done, and its process is gone when it returns.
    let out = env.fsmount_bare_ok(&[os("umount"), mnt.as_os_str()])?;
    ensure!(out.contains("unmounted"), "{out}");
    ensure!(process_gone(pid), "pid {pid} still runs after umount returned");
    ensure!(fstype_at(&mnt).is_none(), "still mounted: {:?}", fstype_at(&mnt));
    let empty = env.fsmount_bare_ok(&[os("list")])?;
    ensure!(empty.lines().count() == 1, "{empty}");

    // The unmounted layer is still found by name (and is then forgotten).
    env.fsmount_bare_ok(&[os("rm"), os("app")])?;
    ensure!(
        std::fs::read_dir(env.registry().join("layers"))?.next().is_none(),
        "layer entries left"
    );
    assert_nothing_left(&env)
}

#[test]
fn list_shows_every_cache_and_commands_accept_mount_flags() -> Result<()> {
    let env = Env::new()?;
    let src = env.mkdir("src")?;
    std::fs::write(src.join("f"), b"f")?;
    let mut mounts = Vec::new();
    for name in ["a", "b"] {
        let mnt = env.mkdir(&format!("mnt-{name}"))?;
        let state = env.path().join(format!("state-{name}"));
        let cache = env.path().join(format!("cache-{name}"));
        env.fsmount_bare_ok(&[
            os("-d"),
            src.as_os_str(),
            mnt.as_os_str(),
            os("--state"),
            state.as_os_str(),
            os("--cache"),
            cache.as_os_str(),
        ])?;
        let pid = record_pid(&state, &mnt)?;
        mounts.push((mnt, state, cache, pid));
    }
    ensure!(mounts[0].3 != mounts[1].3, "one process for two caches");

    // Every mount and every serving process, whatever the cache; --cache
    // and --store are accepted (and do not narrow the list).
    let list = env.fsmount_bare_ok(&[
        os("list"),
        os("--cache"),
        mounts[0].2.as_os_str(),
        os("--store"),
        os("dir:///nonexistent"),
    ])?;
    for (mnt, state, cache, pid) in &mounts {
        let line = list_line(&list, mnt)?;
        ensure!(line.contains(&cache.display().to_string()), "{line}");
        ensure!(line.contains(&format!("pid {pid}")), "{line}");
        let server = list
            .lines()
            .find(|l| l.starts_with(&format!("pid {pid} ")))
            .with_context(|| format!("no server line for pid {pid}:\n{list}"))?;
        ensure!(server.contains(&state.display().to_string()), "{server}");
        ensure!(server.contains("serving 1 mount"), "{server}");
    }

    // stats and umount with the mount's flags.
    let (mnt, state, cache, pid) = &mounts[0];
    let flags = [os("--cache"), cache.as_os_str(), os("--store"), os("dir:///nonexistent")];
    let mut stats = vec![os("stats"), mnt.as_os_str()];
    stats.extend(flags);
    env.fsmount_bare_ok(&stats)?;
    let mut umount = vec![os("umount"), mnt.as_os_str(), os("--state"), state.as_os_str()];
    umount.extend(flags);
    env.fsmount_bare_ok(&umount)?;
    ensure!(process_gone(*pid), "pid {pid} still runs after umount returned");

    // The other one without flags; the registry is empty after.
    let (mnt, _, _, pid) = &mounts[1];
    env.fsmount_bare_ok(&[os("umount"), mnt.as_os_str()])?;
    ensure!(process_gone(*pid), "pid {pid} still runs after umount returned");
    let empty = env.fsmount_bare_ok(&[os("list")])?;
    ensure!(empty.lines().count() == 1, "{empty}");
    assert_nothing_left(&env)
}

#[test]
fn stale_entries_are_shown_or_cleaned() -> Result<()> {
    let env = Env::new()?;
    let src = env.mkdir("src")?;
    std::fs::write(src.join("f"), b"f")?;
    // Three mounts of three state directories and caches; their serving
    // processes are killed (kill -9: no teardown).
    let mut mounts = Vec::new();
    for name in ["a", "b", "c"] {
        let mnt = env.mkdir(&format!("mnt-{name}"))?;
        let state = env.path().join(format!("state-{name}"));
        env.fsmount_bare_ok(&[
            os("-d"),
            src.as_os_str(),
            mnt.as_os_str(),
            os("--state"),
            state.as_os_str(),
            os("--cache"),
            env.path().join(format!("cache-{name}")).as_os_str(),
        ])?;
        let pid = record_pid(&state, &mnt)?;
        mounts.push((mnt, state, pid));
    }
    for (_, _, pid) in &mounts {
        // SAFETY: kill(2) of a daemon this test started.
        ensure!(unsafe { libc::kill(*pid as i32, libc::SIGKILL) } == 0);
        wait_gone(*pid)?;
    }

    // Their mounts are listed as dead, with a hint; the status files and
    // sockets of the dead processes are removed (no server is listed).
    let list = env.fsmount_bare(&[os("list")])?;
    let text = String::from_utf8_lossy(&list.stdout);
    for (mnt, _, pid) in &mounts {
        ensure!(list_line(&text, mnt)?.contains("dead"), "{text}");
        ensure!(!text.contains(&format!("pid {pid} ")), "a dead server listed:\n{text}");
    }
    ensure!(String::from_utf8_lossy(&list.stderr).contains("fsmount umount MOUNTPOINT"));
    let left: Vec<_> = std::fs::read_dir(env.run_dir().join("servers"))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    ensure!(left.is_empty(), "files of dead servers left: {left:?}");

    // umount without flags cleans a dead mount.
    let (mnt_a, _, _) = &mounts[0];
    let out = env.fsmount_bare_ok(&[os("umount"), mnt_a.as_os_str()])?;
    ensure!(out.contains("serving process was gone"), "{out}");
    ensure!(fstype_at(mnt_a).is_none(), "still mounted");

    // A state directory removed by hand (after unmounting by hand) leaves
    // registry entries with no record and no process: umount says so and
    // drops the entry, list drops them silently; neither recreates the
    // state directory.
    for (mnt, state, _) in &mounts[1..] {
        run(std::process::Command::new("umount").arg("-l").arg(mnt))?;
        std::fs::remove_dir_all(state)?;
    }
    let (mnt_b, _, _) = &mounts[1];
    let um = env.fsmount_bare(&[os("umount"), mnt_b.as_os_str()])?;
    ensure!(!um.status.success(), "umount of a stale entry succeeded");
    let err = String::from_utf8_lossy(&um.stderr);
    ensure!(err.contains("no fsmount mount at") && err.contains("stale registry entry"), "{err}");
    ensure!(toml_files(&env.registry().join("mounts")).len() == 1, "entry of b not removed");
    let list = env.fsmount_bare_ok(&[os("list")])?;
    ensure!(list.lines().count() == 1, "{list}");
    for (_, state, _) in &mounts[1..] {
        ensure!(!state.exists(), "a lookup created {}", state.display());
    }
    assert_nothing_left(&env)
}

#[test]
fn list_says_why_a_server_stays() -> Result<()> {
    let env = Env::new()?;
    let src = env.mkdir("src")?;
    std::fs::write(src.join("f"), b"held open")?;
    let mnt = env.mkdir("mnt")?;
    env.mount(&src, &mnt, &[])?;
    let pid = env.daemon_pid(&mnt)?;

    // A file held open keeps the mount busy: SIGTERM cannot unmount it, so
    // the process stays, and list says so.
    let held = std::fs::File::open(mnt.join("f"))?;
    // SAFETY: kill(2) of the daemon this test started.
    ensure!(unsafe { libc::kill(pid as i32, libc::SIGTERM) } == 0);
    let line = wait_for("list to show the server stopping", Duration::from_secs(10), || {
        let list = env.fsmount_bare_ok(&[os("list")])?;
        Ok(list
            .lines()
            .find(|l| l.starts_with(&format!("pid {pid} ")) && l.contains(" stopping "))
            .map(str::to_string))
    })?;
    ensure!(line.contains("1 mount is busy") && line.contains("--lazy"), "{line}");
    ensure!(!process_gone(pid));
    ensure!(std::fs::read(mnt.join("f"))? == b"held open", "the busy mount stopped serving");

    // Released, it unmounts, and the process is gone when umount returns.
    drop(held);
    env.fsmount_bare_ok(&[os("umount"), mnt.as_os_str()])?;
    ensure!(process_gone(pid), "pid {pid} still runs after umount returned");
    assert_nothing_left(&env)
}

/// `flist pack SRC` into `store_url`; returns the flist path.
fn pack(env: &Env, src: &Path, store_url: &str) -> Result<PathBuf> {
    let fl = env.path().join("tree.flist");
    run(flist(&env.path().join("pack-cache"))
        .args(["pack", "--no-progress", "-o"])
        .arg(&fl)
        .args(["--store", store_url])
        .arg(src))?;
    Ok(fl)
}

#[test]
fn mount_umount_mount_one_rw_layer_20_times_on_a_local_store() -> Result<()> {
    let env = Env::new()?;
    let src = env.mkdir("tree")?;
    std::fs::create_dir_all(src.join("etc"))?;
    std::fs::write(src.join("etc/hostname"), b"node-store\n")?;
    let big: Vec<u8> =
        (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    std::fs::write(src.join("big.bin"), &big)?;
    let store = format!("local://{}", env.path().join("node-store").display());
    let fl = pack(&env, &src, &store)?;
    let mnt = env.mkdir("mnt")?;

    for i in 0..20 {
        let mounted = env
            .mount(&fl, &mnt, &["--store", &store, "--rw", "app", "--volume-size", "1G"])
            .with_context(|| format!("mount #{i}"))?;
        ensure!(mounted.contains("rw layer app"), "mount #{i}: {mounted}");
        ensure!(fstype_at(&mnt).as_deref() == Some("overlay"), "mount #{i}: no overlay");
        // The flist's content, fetched from the local store, and every
        // earlier round's write in the same rw layer.
        ensure!(std::fs::read(mnt.join("etc/hostname"))? == b"node-store\n", "mount #{i}");
        ensure!(std::fs::read(mnt.join("big.bin"))? == big, "mount #{i}: big.bin differs");
        for j in 0..i {
            let got = std::fs::read(mnt.join(format!("round-{j}")))
                .with_context(|| format!("mount #{i}: round-{j}"))?;
            ensure!(got == format!("{j}").as_bytes(), "mount #{i}: round-{j} holds {got:?}");
        }
        ensure!(!mnt.join(format!("round-{i}")).exists(), "mount #{i}: round-{i} exists already");
        std::fs::write(mnt.join(format!("round-{i}")), format!("{i}"))?;

        let pid = env.daemon_pid(&mnt)?;
        // Even rounds as typed on a node, odd ones with the mount's flags.
        let out = if i % 2 == 0 {
            env.fsmount_bare_ok(&[os("umount"), mnt.as_os_str()])?
        } else {
            let c = env.cache();
            env.fsmount_ok(&[
                os("umount"),
                mnt.as_os_str(),
                os("--cache"),
                c.as_os_str(),
                os("--store"),
                os(&store),
            ])?
        };
        ensure!(out.contains("unmounted"), "umount #{i}: {out}");
        // umount returned: the process and every mount under mnt are gone.
        ensure!(process_gone(pid), "umount #{i}: pid {pid} still runs");
        let left: Vec<_> = mountinfo().into_iter().filter(|(mp, _)| mp.starts_with(&mnt)).collect();
        ensure!(left.is_empty(), "umount #{i}: still mounted: {left:?}");
    }
    assert_nothing_left(&env)
}

/// A serving process whose mounts come and go does not grow: 50 mount /
/// read / umount cycles of a `local://` flist next to a mount that keeps
/// the process alive end within 10 % of its RSS after the first cycle
/// (it reached 291 MB from 35 MB in six cycles: FUSE read buffers left in
/// malloc arenas).
#[test]
fn fifty_local_mount_cycles_keep_the_server_rss_flat() -> Result<()> {
    let env = Env::new()?;
    let src = env.mkdir("tree")?;
    std::fs::write(src.join("big.bin"), zosfs_tests::flist::noise(5, 4 << 20))?;
    let store = format!("local://{}", env.path().join("node-store").display());
    let fl = pack(&env, &src, &store)?;
    let (anchor, mnt) = (env.mkdir("anchor")?, env.mkdir("mnt")?);
    env.mount(&src, &anchor, &[])?;
    let pid = env.daemon_pid(&anchor)?;
    let mut first = 0;
    for i in 0..50 {
        env.mount(&fl, &mnt, &["--store", &store]).with_context(|| format!("mount #{i}"))?;
        ensure!(std::fs::read(mnt.join("big.bin"))?.len() == 4 << 20, "mount #{i}");
        env.umount(&mnt)?;
        ensure!(env.daemon_pid(&anchor)? == pid, "the serving process changed");
        if i == 0 {
            first = zosfs_tests::nbd::vm_rss(pid)?;
        }
    }
    let last = zosfs_tests::nbd::vm_rss(pid)?;
    ensure!(
        last * 10 <= first * 11,
        "RSS grew from {} KiB after the first cycle to {} KiB after the 50th",
        first >> 10,
        last >> 10
    );
    env.umount(&anchor)?;
    assert_nothing_left(&env)
}

/// `-d` says where the serving process logs; `--metrics` on a mount that
/// joins a running server says it is ignored.
#[test]
fn daemon_names_its_log_and_a_joining_mount_says_metrics_are_ignored() -> Result<()> {
    let env = Env::new()?;
    let src = env.mkdir("src")?;
    std::fs::write(src.join("f"), b"f")?;
    let cache = env.path().join("cache");
    let (m1, m2) = (env.mkdir("m1")?, env.mkdir("m2")?);
    let out = env.mount(&src, &m1, &["--cache", cache.to_str().unwrap()])?;
    let log = out
        .split_once("(log ")
        .and_then(|(_, r)| r.split_once(')'))
        .map(|(l, _)| PathBuf::from(l))
        .with_context(|| format!("no log path in {out:?}"))?;
    ensure!(log.is_file(), "{} named as the log is not a file", log.display());

    let mut args: Vec<&OsStr> = vec![os("-d"), src.as_os_str(), m2.as_os_str()];
    args.extend([os("--cache"), cache.as_os_str(), os("--metrics"), os("127.0.0.1:0")]);
    let joined = env.fsmount(&args)?;
    let err = String::from_utf8_lossy(&joined.stderr);
    ensure!(joined.status.success(), "join: {err}");
    ensure!(err.contains("--metrics ignored"), "joining with --metrics said: {err}");
    env.umount(&m2)?;
    env.umount(&m1)?;
    Ok(())
}
