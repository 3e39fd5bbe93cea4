//! Who may do what to a running nbdserver: the control socket (owner-only
//! directory and socket, SO_PEERCRED, where `commit` may write), what NBD
//! clients learn of the server (no paths in NBD_OPT_LIST and
//! NBD_INFO_DESCRIPTION), which listeners start without TLS client
//! certificates, and store URLs kept off the command line.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Result, ensure};
use zosfs_tests::nbd::{NbdServer, OPT_LIST, REP_ACK, RawClient, disk_image, pack, run_text};
use zosfs_tests::{ChildGuard, bin, free_port, wait_for, wait_port};

const NOBODY: &str = "65534";

fn control_socket(cache: &Path) -> Result<PathBuf> {
    let sock = cache.join(".control").join("control.sock");
    // The TCP listener accepts before the control socket is bound.
    wait_for("the control socket", Duration::from_secs(20), || Ok(sock.exists().then_some(())))?;
    Ok(sock)
}

/// A Python client that sends `stats` on the control socket and prints
/// the answer, run as uid/gid 65534 (`caps`: capabilities it keeps).
fn as_nobody(sock: &Path, caps: Option<&str>) -> Result<Output> {
    let script = "import socket, sys\n\
        s = socket.socket(socket.AF_UNIX)\n\
        s.connect(sys.argv[1])\n\
        s.sendall(b'stats\\n')\n\
        s.shutdown(socket.SHUT_WR)\n\
        out = b''\n\
        while True:\n\
        \x20   b = s.recv(4096)\n\
        \x20   if not b: break\n\
        \x20   out += b\n\
        sys.stdout.write(out.decode())\n";
    let mut c = Command::new("setpriv");
    c.args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups"]);
    if let Some(cap) = caps {
        c.arg(format!("--inh-caps=+{cap}")).arg(format!("--ambient-caps=+{cap}"));
    }
    c.args(["/usr/bin/python3", "-c", script]).arg(sock);
    Ok(c.output()?)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn commit_live(cache: &Path, out: &Path) -> Result<Output> {
    Ok(Command::new(bin("nbdserver"))
        .args(["commit", "--live", "--cache-dir"])
        .arg(cache)
        .arg("disk")
        .arg("-o")
        .arg(out)
        .output()?)
}

fn refused(cache: &Path, out: &Path, why: &str) -> Result<()> {
    let existed = out.exists();
    let o = commit_live(cache, out)?;
    let err = text(&o.stderr);
    ensure!(!o.status.success(), "commit to {} was not refused", out.display());
    ensure!(err.contains("refused") && err.contains(why), "commit to {}: {err}", out.display());
    ensure!(existed || !out.exists(), "a refused commit left {}", out.display());
    Ok(())
}

#[test]
fn control_socket_is_owner_only_and_commit_paths_are_checked() -> Result<()> {
    let t = tempfile::tempdir()?;
    let cache = t.path().join("cache");
    let store = format!("dir://{}", t.path().join("store").display());
    let mut srv = NbdServer::start(&cache, &["--store", &store, "--export", "disk=blank:16M"])?;
    let sock = control_socket(&cache)?;
    let dir = std::fs::symlink_metadata(sock.parent().expect("dir"))?;
    ensure!(dir.is_dir() && dir.mode() & 0o777 == 0o700, "directory mode {:o}", dir.mode());
    let s = std::fs::symlink_metadata(&sock)?;
    ensure!(s.file_type().is_socket() && s.mode() & 0o777 == 0o600, "socket mode {:o}", s.mode());

    // An unprivileged user cannot even reach the socket...
    let o = as_nobody(&sock, None)?;
    ensure!(!o.status.success(), "uid 65534 reached the socket: {}", text(&o.stdout));
    ensure!(text(&o.stderr).contains("PermissionError"), "{}", text(&o.stderr));
    // ...and one that passes the directory (CAP_DAC_OVERRIDE) is turned
    // away by the peer check.
    let o = as_nobody(&sock, Some("dac_override"))?;
    let answer = text(&o.stdout);
    ensure!(o.status.success(), "client failed: {}", text(&o.stderr));
    ensure!(
        answer.starts_with("error: permission denied: uid 65534"),
        "uid 65534 was answered: {answer}"
    );
    ensure!(!answer.contains("export disk"), "stats leaked: {answer}");

    // Commits go only into a directory of the asking user (or root) that
    // only its owner may write, through no symlink.
    let open = t.path().join("open");
    std::fs::create_dir(&open)?;
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777))?;
    refused(&cache, &open.join("x.flist"), "writable by its owner only")?;
    let theirs = t.path().join("theirs");
    std::fs::create_dir(&theirs)?;
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534))?;
    refused(&cache, &theirs.join("x.flist"), "owned by you (uid 0) or root")?;
    let real = t.path().join("real");
    std::fs::create_dir(&real)?;
    std::os::unix::fs::symlink(&real, t.path().join("link"))?;
    refused(&cache, &t.path().join("link").join("x.flist"), "symlink")?;
    std::fs::create_dir(real.join("sub"))?;
    refused(&cache, &real.join("sub"), "not a regular file")?;
    // `..` is refused by the server even when the client sends it as is.
    let mut c = std::os::unix::net::UnixStream::connect(&sock)?;
    c.write_all(format!("commit disk {}/sub/../x.flist\n", real.display()).as_bytes())?;
    c.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    c.read_to_string(&mut answer)?;
    ensure!(answer.starts_with("error: refused") && answer.contains(".."), "{answer}");

    // A directory of root's, owner-only: the commit is written.
    let ok = real.join("v1.flist");
    let o = commit_live(&cache, &ok)?;
    ensure!(o.status.success(), "commit failed: {}", text(&o.stderr));
    ensure!(ok.is_file(), "no flist at {}", ok.display());
    srv.stop()
}

/// The REP_SERVER replies to NBD_OPT_LIST: (name, description).
fn list(port: u16) -> Result<Vec<(String, String)>> {
    let mut c = RawClient::connect(port)?;
    c.send_option(OPT_LIST, &[])?;
    let mut out = Vec::new();
    loop {
        let (_, typ, d) = c.option_reply()?;
        if typ == REP_ACK {
            return Ok(out);
        }
        ensure!(typ == 2, "LIST reply type {typ:#x}");
        let n = u32::from_be_bytes(d[..4].try_into()?) as usize;
        out.push((text(&d[4..4 + n]), text(&d[4 + n..])));
    }
}

#[test]
fn clients_learn_no_server_paths() -> Result<()> {
    let t = tempfile::tempdir()?;
    let img = t.path().join("img");
    disk_image(&img, 4 << 20, &[(0, 4096)])?;
    let store = format!("dir://{}", t.path().join("store").display());
    let flist = t.path().join("secret-name.flist");
    pack(&img, &store, &flist)?;
    let cache = t.path().join("cache");
    let spec = format!("vm={}:/disk.raw", flist.display());
    let mut srv = NbdServer::start(
        &cache,
        &["--store", &store, "--export-ro", &spec, "--export", "scratch=blank:16M"],
    )?;
    let exports = list(srv.port)?;
    let names: Vec<&str> = exports.iter().map(|(n, _)| n.as_str()).collect();
    // --export ones come before --export-ro ones.
    ensure!(names == ["scratch", "vm"], "listed {names:?}");
    ensure!(exports[0].1 == "blank thin disk of 16777216 bytes", "{exports:?}");
    ensure!(exports[1].1 == "image of 4194304 bytes, read-only", "{exports:?}");
    // What a real client shows (LIST, then INFO with descriptions).
    let shown = run_text(Command::new("nbdinfo").args(["--list", "--json"]).arg(srv.uri("")))?;
    let tmp = t.path().display().to_string();
    for leak in [tmp.as_str(), "secret-name", "disk.raw", "dir://"] {
        ensure!(!shown.contains(leak), "nbdinfo --list shows {leak:?}:\n{shown}");
    }
    ensure!(shown.contains("image of 4194304 bytes"), "{shown}");
    // The owner still sees where an export comes from.
    let stats =
        run_text(Command::new(bin("nbdserver")).arg("stats").arg("--cache-dir").arg(&cache))?;
    ensure!(stats.contains("secret-name.flist"), "{stats}");
    srv.stop()
}

/// Start nbdserver with `args` (and `env`); the guard and its stderr.
fn spawn(args: &[&str], env: &[(&str, &str)]) -> Result<(ChildGuard, std::process::ChildStderr)> {
    let mut cmd = Command::new(bin("nbdserver"));
    cmd.args(args).env_remove("ZOSFS_STORE").env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut g = ChildGuard::spawn(cmd, "nbdserver")?;
    let err = g.child.stderr.take().expect("piped");
    Ok((g, err))
}

#[test]
fn exposed_listeners_need_client_certificates_or_an_explicit_opt_in() -> Result<()> {
    let t = tempfile::tempdir()?;
    let cache = t.path().join("cache").display().to_string();
    let port = free_port();
    let addr = format!("0.0.0.0:{port}");
    let base = ["--cache-dir", cache.as_str(), "--export", "d=blank:1M", "--listen", addr.as_str()];
    let (mut g, mut err) = spawn(&base, &[])?;
    let st =
        wait_for("nbdserver to refuse", Duration::from_secs(30), || Ok(g.child.try_wait()?))?;
    let mut msg = String::new();
    err.read_to_string(&mut msg)?;
    ensure!(!st.success(), "started on {addr} without TLS");
    ensure!(
        msg.contains("reachable from other hosts") && msg.contains("--insecure-no-tls"),
        "{msg}"
    );

    let mut args = base.to_vec();
    args.push("--insecure-no-tls");
    let (mut g, mut err) = spawn(&args, &[])?;
    wait_port(port, Duration::from_secs(20))?;
    let st = g.terminate(Duration::from_secs(30))?;
    ensure!(st.success(), "exited with {st}");
    let mut log = String::new();
    err.read_to_string(&mut log)?;
    ensure!(log.contains("INSECURE") && log.contains(&addr), "no warning for {addr}:\n{log}");
    Ok(())
}

#[test]
fn store_urls_from_the_environment_or_a_file() -> Result<()> {
    let t = tempfile::tempdir()?;
    for (i, how) in ["env", "file"].iter().enumerate() {
        let store_dir = t.path().join(format!("store-{how}"));
        let url = format!("dir://{}", store_dir.display());
        let cache = t.path().join(format!("cache-{how}"));
        let cache_s = cache.display().to_string();
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let file = t.path().join("stores.txt");
        std::fs::write(&file, format!("# the hub\n\n{url}\n"))?;
        let file_s = file.display().to_string();
        let mut args = vec![
            "--cache-dir",
            cache_s.as_str(),
            "--listen",
            listen.as_str(),
            "--export",
            "disk=blank:4M",
        ];
        let env: Vec<(&str, &str)> = if i == 0 {
            vec![("ZOSFS_STORE", url.as_str())]
        } else {
            args.extend(["--store-file", file_s.as_str()]);
            vec![]
        };
        let (mut g, _err) = spawn(&args, &env)?;
        wait_port(port, Duration::from_secs(20))?;
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", g.pid()))?;
        ensure!(!text(&cmdline).contains("dir://"), "the store URL is in argv");
        // The commit uploads to the store given that way.
        let out = t.path().join(format!("{how}.flist"));
        let o = commit_live(&cache, &out)?;
        ensure!(o.status.success(), "{how}: commit failed: {}", text(&o.stderr));
        ensure!(std::fs::read_dir(&store_dir)?.next().is_some(), "{how}: nothing in the store");
        ensure!(g.terminate(Duration::from_secs(30))?.success());
    }
    // Both ways at once is ambiguous.
    let o = Command::new(bin("nbdserver"))
        .args(["--cache-dir"])
        .arg(t.path().join("c"))
        .args(["--export", "disk=blank:4M", "--store-file"])
        .arg(t.path().join("stores.txt"))
        .env("ZOSFS_STORE", "dir:///nowhere")
        .output()?;
    ensure!(!o.status.success() && text(&o.stderr).contains("give the stores once"));
    Ok(())
}
