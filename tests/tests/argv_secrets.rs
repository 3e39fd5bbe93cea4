//! Passwords given on the command line do not stay in /proc/PID/cmdline
//! (readable by every local user): `chunkstore serve --admin`, nbdserver
//! `--store zdb://:pw@…`, and the daemon `fsmount -d` leaves behind.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use zosfs_tests::flist::{flist, run};
use zosfs_tests::fsmount::Env;
use zosfs_tests::nbd::NbdServer;
use zosfs_tests::zdb::{Reply, Zdb};

fn cmdline(pid: u32) -> Result<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).context("read cmdline")?;
    Ok(String::from_utf8_lossy(&raw).replace('\0', " "))
}

/// A hub whose namespace `imgs` needs the password `NS_PW`.
fn hub(data: &Path) -> Result<Zdb> {
    let z = Zdb::start(data, &["--admin", ADMIN_PW])?;
    let mut c = z.connect()?;
    assert_eq!(c.call(&[b"AUTH", ADMIN_PW.as_bytes()])?, Reply::ok());
    assert_eq!(c.call(&[b"NSNEW", b"imgs"])?, Reply::ok());
    assert_eq!(c.call(&[b"NSSET", b"imgs", b"password", NS_PW.as_bytes()])?, Reply::ok());
    Ok(z)
}

const ADMIN_PW: &str = "admin-pw-4711";
const NS_PW: &str = "ns-pw-0815";

#[test]
fn serve_nbdserver_and_an_fsmount_daemon_hide_passwords_from_ps() -> Result<()> {
    let env = Env::new()?;
    let z = hub(&env.path().join("hub"))?;
    let serve_cmd = cmdline(z.guard.pid())?;
    ensure!(!serve_cmd.contains(ADMIN_PW), "serve shows its admin password: {serve_cmd}");
    ensure!(serve_cmd.contains("--admin"), "the flag itself stays visible: {serve_cmd}");

    let url = format!("zdb://:{NS_PW}@{}/imgs", z.addr);
    let src = env.mkdir("src")?;
    std::fs::write(src.join("hello"), b"hello, secrets")?;
    let fl = env.path().join("img.flist");
    run(flist(&env.path().join("flc"))
        .args(["pack", "-o"])
        .arg(&fl)
        .args(["--store", &url])
        .arg(&src))?;

    let mnt = env.mkdir("mnt")?;
    env.mount(&fl, &mnt, &["--store", &url])?;
    assert_eq!(std::fs::read(mnt.join("hello"))?, b"hello, secrets");
    let daemon = env.daemon_pid(&mnt)?;
    let daemon_cmd = cmdline(daemon)?;
    ensure!(!daemon_cmd.contains(NS_PW), "fsmount daemon shows the password: {daemon_cmd}");
    ensure!(daemon_cmd.contains(&z.addr.to_string()), "the store stays recognisable: {daemon_cmd}");
    env.umount(&mnt)?;

    let nbd = NbdServer::start(
        &env.path().join("nbd"),
        &["--store", &url, "--export", "disk=blank:16M"],
    )?;
    let nbd_cmd = cmdline(nbd.pid())?;
    ensure!(!nbd_cmd.contains(NS_PW), "nbdserver shows the password: {nbd_cmd}");
    Ok(())
}
