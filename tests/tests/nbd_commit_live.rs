//! `nbdserver commit --live`: the running server writes an export as a
//! new image flist while a client stays connected; the image holds what
//! was written before the commit and nothing written after it.

use std::process::Command;

use anyhow::{Result, ensure};
use zosfs_tests::bin;
use zosfs_tests::nbd::{NbdServer, RawClient, Req, run_text};

const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;

fn qemu_io(uri: &str, cmds: &[&str]) -> Result<String> {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "raw", uri]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = run_text(&mut c)?;
    ensure!(!out.contains("failed"), "qemu-io {cmds:?}: {out}");
    Ok(out)
}

fn commit_live(cache: &std::path::Path, name: &str, out: &std::path::Path) -> std::process::Output {
    Command::new(bin("nbdserver"))
        .args(["commit", "--live", "--cache-dir"])
        .arg(cache)
        .arg(name)
        .arg("-o")
        .arg(out)
        .output()
        .expect("run nbdserver commit")
}

#[test]
fn live_commit_while_a_client_is_connected() -> Result<()> {
    let t = tempfile::tempdir()?;
    let store = format!("dir://{}", t.path().join("store").display());
    let cache = t.path().join("cache");
    let srv = NbdServer::start(&cache, &["--store", &store, "--export", "vm=blank:64M"])?;
    let uri = srv.uri("vm");
    qemu_io(&uri, &["write -P 0x5a 1M 1M", "write -P 0x11 40M 4k"])?;
    // A client connected across the commit.
    let mut c = RawClient::connect(srv.port)?;
    c.go("vm")?;

    let image = t.path().join("vm v1.flist");
    let out = commit_live(&cache, "vm", &image);
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "commit --live: {text} {}", String::from_utf8_lossy(&out.stderr));
    ensure!(text.contains("2 uploaded"), "two chunks were written: {text}");

    // The connected client still writes and reads, and later writes do
    // not reach the committed image.
    c.request(Req::new(CMD_WRITE, 1 << 20, 4096).cookie(7), &[0x77; 4096])?;
    ensure!(c.simple_reply()? == (0, 7), "write after the commit failed");
    c.request(Req::new(CMD_READ, 1 << 20, 4096).cookie(8), &[])?;
    ensure!(c.simple_reply()? == (0, 8), "read after the commit failed");
    qemu_io(&uri, &["read -P 0x77 1M 4k"])?;

    let spec = format!("v1={}:/disk.raw", image.display());
    let srv2 = NbdServer::start(&t.path().join("cache2"), &["--store", &store, "--export", &spec])?;
    qemu_io(
        &srv2.uri("v1"),
        &["read -P 0x5a 1M 1M", "read -P 0x11 40M 4k", "read -P 0 0 1M", "read -P 0 63M 1M"],
    )?;

    // Errors name what was wrong.
    let bad = commit_live(&cache, "nope", &t.path().join("x.flist"));
    ensure!(!bad.status.success(), "commit of an unknown export succeeded");
    ensure!(String::from_utf8_lossy(&bad.stderr).contains("no export named \"nope\""));
    Ok(())
}
