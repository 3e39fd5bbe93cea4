//! One node store shared by real processes at once: fsmount servers of two
//! caches, nbdserver, `flist pack`, `chunkstore stat` and `fsck`, with the
//! store's owner killed -9 while the others read; and one hub fetch per
//! chunk per node when a container and a VM read the same content.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use zosfs_store::node::locate::OwnerRecord;
use zosfs_tests::flist::noise;
use zosfs_tests::fsmount::{Env, process_gone};
use zosfs_tests::nbd::{NbdServer, pack, run, run_text};
use zosfs_tests::zdb::{Reply, Zdb};
use zosfs_tests::{bin, wait_for};

const MIB: usize = 1 << 20;

/// A tree with two disk images and a few files, all random (cold reads
/// must come from the store).
fn make_image(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("files"))?;
    std::fs::write(dir.join("disk1.raw"), noise(1, 24 * MIB))?;
    std::fs::write(dir.join("disk2.raw"), noise(2, 64 * MIB))?;
    for i in 0..12u64 {
        std::fs::write(dir.join(format!("files/f{i}")), noise(100 + i, 700 * 1024 + i as usize))?;
    }
    Ok(())
}

fn owner_pid(store: &Path) -> Result<u32> {
    let rec = OwnerRecord::read(store).context("no OWNER file")?;
    Ok(rec.map_err(anyhow::Error::msg)?.pid)
}

fn chunkstore(args: &[&str]) -> Result<String> {
    run_text(Command::new(bin("chunkstore")).args(args))
}

fn mount_with_cache(env: &Env, flist: &Path, mnt: &Path, cache: &Path, store: &str) -> Result<()> {
    std::fs::create_dir_all(mnt)?;
    let args: Vec<&OsStr> = vec![
        OsStr::new("-d"),
        flist.as_os_str(),
        mnt.as_os_str(),
        OsStr::new("--cache"),
        cache.as_os_str(),
        OsStr::new("--store"),
        OsStr::new(store),
        OsStr::new("--ro"),
    ];
    env.fsmount_ok(&args)?;
    Ok(())
}

/// Read every file of `files/` under `root` and compare with the source.
fn check_files(root: &Path, src: &Path, first_done: Option<mpsc::Sender<()>>) -> Result<()> {
    let mut first = first_done;
    for i in 0..12u64 {
        let name = format!("files/f{i}");
        let got = std::fs::read(root.join(&name)).with_context(|| format!("read {name}"))?;
        ensure!(got == std::fs::read(src.join(&name))?, "{name}: wrong content through the mount");
        if let Some(tx) = first.take() {
            let _ = tx.send(());
        }
    }
    Ok(())
}

#[test]
fn every_view_and_tool_shares_one_store_and_survives_its_owner() -> Result<()> {
    let env = Env::new()?;
    let store_dir = env.path().join("node-store");
    let store = format!("local://{}", store_dir.display());
    let src = env.path().join("img");
    make_image(&src)?;
    let flist = env.path().join("img.flist");
    pack(&src, &store, &flist)?;

    // Three mounts from two caches: the first server opens the store first
    // (the pack has exited), so it owns it.
    let (cache_a, cache_b) = (env.path().join("cache-a"), env.path().join("cache-b"));
    let mnt = |n: &str| env.path().join(n);
    mount_with_cache(&env, &flist, &mnt("m1"), &cache_a, &store)?;
    mount_with_cache(&env, &flist, &mnt("m2"), &cache_a, &store)?;
    mount_with_cache(&env, &flist, &mnt("m3"), &cache_b, &store)?;
    let server_a = env.daemon_pid(&mnt("m1"))?;
    let server_b = env.daemon_pid(&mnt("m3"))?;
    ensure!(server_a != server_b, "two caches, one server");
    ensure!(owner_pid(&store_dir)? == server_a, "the first mount's server does not own the store");
    check_files(&mnt("m2"), &src, None)?;

    // nbdserver with two exports of the same image, a client of the store.
    let nbd_cache = env.path().join("nbd-cache");
    let d1 = format!("d1={}:/disk1.raw", flist.display());
    let d2 = format!("d2={}:/disk2.raw", flist.display());
    let nbd = NbdServer::start(&nbd_cache, &["--store", &store, "--export", &d1, "--export", &d2])?;

    // A pack of a new tree and stat while everything is up.
    let src2 = env.path().join("img2");
    std::fs::create_dir_all(&src2)?;
    std::fs::write(src2.join("new"), noise(7, 5 * MIB))?;
    let flist2 = env.path().join("img2.flist");
    pack(&src2, &store, &flist2)?;
    let stat = chunkstore(&["stat", "--store", &store])?;
    ensure!(stat.contains(&format!("owner           pid {server_a}")), "stat:\n{stat}");

    // kill -9 the owner while cache B's mount and nbdserver read cold data.
    let (tx, rx) = mpsc::channel();
    let m3 = mnt("m3");
    let src_c = src.clone();
    let reader = std::thread::spawn(move || check_files(&m3, &src_c, Some(tx)));
    let copy = env.path().join("d1.copy");
    let uri1 = nbd.uri("d1");
    let copy_c = copy.clone();
    let nbdcopy = std::thread::spawn(move || {
        run(Command::new("nbdcopy").args([&uri1]).arg(&copy_c)).map(|_| ())
    });
    rx.recv_timeout(Duration::from_secs(60)).context("the reader never read a file")?;
    // SAFETY: kill(2) on a pid from the mount record.
    unsafe { libc::kill(server_a as i32, libc::SIGKILL) };
    wait_for("the owner to die", Duration::from_secs(10), || {
        Ok(process_gone(server_a).then_some(()))
    })?;
    reader.join().expect("reader panicked")?;
    nbdcopy.join().expect("nbdcopy panicked")?;
    ensure!(std::fs::read(&copy)? == std::fs::read(src.join("disk1.raw"))?, "d1 differs over NBD");
    let new_owner = owner_pid(&store_dir)?;
    ensure!(new_owner == server_b || new_owner == nbd.pid(), "owner {new_owner} after the kill");

    // fio verify on the second export, through the new owner.
    let fio = run_text(Command::new("fio").args([
        "--name=shared",
        "--ioengine=nbd",
        "--rw=randwrite",
        "--bs=4k",
        "--size=16M",
        "--iodepth=16",
        "--verify=crc32c",
        "--verify_fatal=1",
        "--verify_state_save=0",
        &format!("--uri={}", nbd.uri("d2")),
    ]))?;
    ensure!(fio.contains("err= 0"), "fio:\n{fio}");

    // Nothing acknowledged was lost: both flists verify against the store,
    // another pack works, and fsck (through the owner) is clean.
    for f in [&flist, &flist2] {
        run(Command::new(bin("flist")).arg("verify").arg(f).args(["--store", &store]))?;
    }
    let src3 = env.path().join("img3");
    std::fs::create_dir_all(&src3)?;
    std::fs::write(src3.join("after"), noise(8, 3 * MIB))?;
    pack(&src3, &store, &env.path().join("img3.flist"))?;
    let fsck = chunkstore(&["fsck", "--verify-ids", "--store", &store])?;
    ensure!(fsck.contains("  clean"), "fsck:\n{fsck}");

    drop(nbd);
    for m in ["m1", "m2", "m3"] {
        env.umount(&mnt(m))?;
    }
    env.wait_clean()?;
    Ok(())
}

/// `network_tx_bytes` of a `chunkstore serve`: what it sent, GET replies
/// included.
fn hub_tx(hub: &Zdb) -> Result<u64> {
    let Reply::Bulk(Some(text)) = hub.connect()?.call(&[b"INFO"])? else { anyhow::bail!("INFO") };
    let text = String::from_utf8(text)?;
    let line = text.lines().find_map(|l| l.strip_prefix("network_tx_bytes: ")).context("no tx")?;
    Ok(line.trim().parse()?)
}

#[test]
fn a_chunk_is_fetched_from_the_hub_once_per_node() -> Result<()> {
    let env = Env::new()?;
    let hub = Zdb::start(&env.path().join("hub"), &[])?;
    let hub_url = format!("zdb://{}/default", hub.addr);
    let src = env.path().join("img");
    std::fs::create_dir_all(&src)?;
    let disk = noise(3, 32 * MIB);
    std::fs::write(src.join("disk.raw"), &disk)?;
    let flist = env.path().join("img.flist");
    pack(&src, &hub_url, &flist)?;

    let node = env.path().join("node-store");
    let stores = format!("local://{},{hub_url}", node.display());
    let mnt = env.path().join("m");
    mount_with_cache(&env, &flist, &mnt, &env.cache(), &stores)?;
    let before = hub_tx(&hub)?;
    ensure!(std::fs::read(mnt.join("disk.raw"))? == disk, "wrong content through fsmount");
    let by_fsmount = hub_tx(&hub)? - before;
    ensure!(by_fsmount >= disk.len() as u64 / 2, "fsmount fetched only {by_fsmount} bytes");

    // Read repair writes what the hub served into the node store in the
    // background: wait until all of it is there.
    let Reply::Bulk(Some(info)) = hub.connect()?.call(&[b"NSINFO", b"default"])? else {
        anyhow::bail!("NSINFO")
    };
    let info = String::from_utf8(info)?;
    let hub_chunks: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("entries: "))
        .context("entries")?
        .trim()
        .parse()?;
    let node_url = format!("local://{}", node.display());
    wait_for("the node store to hold every chunk", Duration::from_secs(30), || {
        let s = chunkstore(&["stat", "--store", &node_url])?;
        let n: u64 = s
            .lines()
            .find_map(|l| l.trim().strip_prefix("chunks"))
            .unwrap_or("0")
            .trim()
            .parse()?;
        Ok((n >= hub_chunks).then_some(()))
    })?;

    let nbd_cache = env.path().join("nbd-cache");
    let spec = format!("vm={}:/disk.raw", flist.display());
    let nbd = NbdServer::start(&nbd_cache, &["--store", &stores, "--export", &spec])?;
    let before = hub_tx(&hub)?;
    let copy = env.path().join("vm.copy");
    run(Command::new("nbdcopy").args([&nbd.uri("vm")]).arg(&copy))?;
    let by_nbd = hub_tx(&hub)? - before;
    ensure!(std::fs::read(&copy)? == disk, "wrong content through NBD");
    // One INFO reply is all the hub sent meanwhile.
    ensure!(by_nbd < 16 * 1024, "nbdserver fetched from the hub again: {by_nbd} bytes sent");

    drop(nbd);
    env.umount(&mnt)?;
    env.wait_clean()?;
    Ok(())
}

/// `chunkstore own` holds the store for the node: others are its clients, a
/// second `own` names it, and SIGTERM releases the store with every chunk.
#[test]
fn chunkstore_own_holds_the_store_until_stopped() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let store = tmp.path().join("node");
    let url = format!("local://{}", store.display());
    let mut own = Command::new(bin("chunkstore"))
        .args(["own", "--store", &url])
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let pid = own.id();
    wait_for("chunkstore own to own the store", Duration::from_secs(30), || {
        Ok(owner_pid(&store).ok().filter(|&p| p == pid))
    })?;

    let file = tmp.path().join("blob");
    std::fs::write(&file, noise(7, 3 * MIB))?;
    let ids = chunkstore(&["put", "--store", &url, file.to_str().unwrap()])?;
    let stat = chunkstore(&["stat", "--store", &url])?;
    ensure!(
        stat.contains(&format!("owner           pid {pid} ")),
        "stat does not name the owner:\n{stat}"
    );

    let second = Command::new(bin("chunkstore")).args(["own", "--store", &url]).output()?;
    let err = String::from_utf8_lossy(&second.stderr);
    ensure!(!second.status.success(), "a second `own` succeeded");
    ensure!(err.contains(&format!("already owned by pid {pid}")), "second `own` says: {err}");

    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    ensure!(unsafe { libc::kill(pid as i32, libc::SIGTERM) } == 0);
    let status = own.wait()?;
    ensure!(status.success(), "chunkstore own exited with {status}");
    let mut log = String::new();
    std::io::Read::read_to_string(own.stderr.as_mut().unwrap(), &mut log)?;
    ensure!(log.contains("released"), "own's log: {log}");

    // Released: the next opener owns it and finds every chunk.
    let stat = chunkstore(&["stat", "--store", &url])?;
    ensure!(stat.contains("owner           this process"), "after release:\n{stat}");
    let mut has = Command::new(bin("chunkstore"));
    // `put` prints `FILE INDEX ID KEY SIZE` per chunk.
    has.args(["has", "--store", &url])
        .args(ids.lines().filter_map(|l| l.split_whitespace().nth(2)));
    run(&mut has)?;
    Ok(())
}
