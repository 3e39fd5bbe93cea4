//! Operating a hub: `chunkstore ns` against `chunkstore serve` with an
//! admin password (and `flist pack` into a namespace it created),
//! `chunkstore serve --metrics`, and `-d` for `chunkstore serve` and
//! `nbdserver` (pid file, no password in the daemon's command line, stop
//! by SIGTERM).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use zosfs_tests::zdb::{Reply, Zdb};
use zosfs_tests::{bin, wait_for};

const ADMIN: &str = "hub-admin-pw";

/// A `chunkstore serve` with an admin password read from a file.
fn hub(dir: &Path) -> Result<(Zdb, PathBuf)> {
    let admin_file = dir.join("admin");
    std::fs::write(&admin_file, format!("{ADMIN}\n"))?;
    let admin_arg = admin_file.to_str().context("utf-8 path")?.to_string();
    let zdb = Zdb::start(&dir.join("data"), &["--admin-file", &admin_arg])?;
    Ok((zdb, admin_file))
}

/// `chunkstore ns ARGS` with CHUNKSTORE_ADMIN unset unless `env_admin`.
fn ns(args: &[&str], env_admin: Option<&str>) -> Result<Output> {
    let mut cmd = Command::new(bin("chunkstore"));
    cmd.arg("ns").args(args).env_remove("CHUNKSTORE_ADMIN");
    if let Some(pw) = env_admin {
        cmd.env("CHUNKSTORE_ADMIN", pw);
    }
    Ok(cmd.output()?)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Succeeded; its stdout.
fn ok(o: Output) -> Result<String> {
    ensure!(o.status.success(), "failed: {}", stderr(&o));
    Ok(stdout(&o))
}

/// Failed with a message containing `want`.
fn fails(o: Output, want: &str) -> Result<()> {
    ensure!(!o.status.success(), "succeeded: {}", stdout(&o));
    ensure!(stderr(&o).contains(want), "want {want:?} in {:?}", stderr(&o));
    Ok(())
}

#[test]
fn namespaces_created_listed_changed_and_deleted() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (zdb, admin_file) = hub(dir.path())?;
    let af = admin_file.to_str().unwrap();
    let url = format!("zdb://{}/images", zdb.addr);

    // Not admin: refused, nothing created.
    fails(ns(&["create", &url], None)?, "not admin")?;
    let bad = dir.path().join("bad-admin");
    std::fs::write(&bad, "wrong\n")?;
    fails(ns(&["create", &url, "--admin-file", bad.to_str().unwrap()], None)?, "wrong admin")?;
    let list = ok(ns(&["list", &url], None)?)?;
    assert_eq!(list.lines().collect::<Vec<_>>(), ["default"], "{list}");

    ok(ns(&["create", &url, "--admin-file", af, "--maxsize", "1000000"], None)?)?;
    fails(ns(&["create", &url, "--admin-file", af], None)?, "exists already")?;
    // The environment variable works as well as the file.
    let list = ok(ns(&["list", &url], Some(ADMIN))?)?;
    assert_eq!(list.lines().collect::<Vec<_>>(), ["default", "images"], "{list}");

    let info = ok(ns(&["info", &url], None)?)?;
    for want in ["name: images", "entries: 0", "password: no", "data_limits_bytes: 1000000"] {
        assert!(info.lines().any(|l| l == want), "{want:?} in {info}");
    }
    assert!(!info.contains('#'), "only fields: {info}");

    let pw = dir.path().join("nspw");
    std::fs::write(&pw, "images-pw\n")?;
    let p = pw.to_str().unwrap();
    let set = ["set", &url, "--admin-file", af, "--password-file", p, "--public", "no"];
    ok(ns(&set, None)?)?;
    fails(ns(&["set", &url, "--public", "no"], None)?, "not admin")?;
    fails(ns(&["set", &url, "--admin-file", af], None)?, "nothing to set")?;
    let info = ok(ns(&["info", &url], None)?)?;
    assert!(info.lines().any(|l| l == "password: yes"), "{info}");
    assert!(info.lines().any(|l| l == "public: no"), "{info}");
    // The password now guards the namespace on the wire.
    let mut c = zdb.connect()?;
    assert_eq!(c.call(&[b"SELECT", b"images"])?, Reply::err("Namespace protected and private"));
    assert_eq!(c.call(&[b"SELECT", b"images", b"images-pw"])?, Reply::ok());

    let gone = format!("zdb://{}/nosuch", zdb.addr);
    fails(ns(&["info", &gone], None)?, "no such namespace")?;
    fails(ns(&["set", &gone, "--admin-file", af, "--worm", "yes"], None)?, "no such namespace")?;
    fails(ns(&["delete", &gone, "--admin-file", af], None)?, "no such namespace")?;
    fails(ns(&["delete", &url], None)?, "not admin")?;
    drop(c);
    ok(ns(&["delete", &url, "--admin-file", af], None)?)?;
    let list = ok(ns(&["list", &url], None)?)?;
    assert_eq!(list.lines().collect::<Vec<_>>(), ["default"], "{list}");
    Ok(())
}

#[test]
fn bad_urls_and_files_are_named() -> Result<()> {
    fails(ns(&["list", "dir:///tmp/x"], None)?, "not a 0-db URL")?;
    let missing = "/nonexistent/admin-file";
    fails(ns(&["list", "zdb://127.0.0.1:1/x", "--admin-file", missing], None)?, missing)?;
    Ok(())
}

#[test]
fn flist_pack_into_a_namespace_made_by_ns_create() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (zdb, admin_file) = hub(dir.path())?;
    let store = format!("zdb://:img-pw@{}/newns", zdb.addr);
    let src = dir.path().join("src");
    std::fs::create_dir(&src)?;
    std::fs::write(src.join("a"), vec![7u8; 300_000])?;
    let out = dir.path().join("img.flist");
    let pack = || {
        Command::new(bin("flist"))
            .args(["pack", "--no-progress", "--store", &store, "--output"])
            .arg(&out)
            .arg(&src)
            .output()
    };
    // The README's failure before `ns create`.
    fails(pack()?, "does not exist")?;
    ok(ns(&["create", &store, "--admin-file", admin_file.to_str().unwrap()], None)?)?;
    ok(pack()?)?;
    let info = ok(ns(&["info", &store], None)?)?;
    assert!(info.lines().any(|l| l == "password: yes"), "URL password kept: {info}");
    let entries = info.lines().find_map(|l| l.strip_prefix("entries: ")).context("entries")?;
    assert!(entries.parse::<u64>()? > 0, "{info}");
    Ok(())
}

/// A daemon started by a command that has exited: signalled by pid,
/// SIGKILLed if a test fails before stopping it.
struct Daemon {
    pid: i32,
    pid_file: PathBuf,
    /// The parent's "… (pid N)" line.
    ready: String,
}

impl Daemon {
    /// Run `cmd` (which detaches) and read the pid file it names.
    fn start(cmd: &mut Command, pid_file: &Path) -> Result<Daemon> {
        let o = cmd.output()?;
        ensure!(o.status.success(), "start failed: {}{}", stdout(&o), stderr(&o));
        let text = std::fs::read_to_string(pid_file)?;
        let pid: i32 = text.trim().parse().with_context(|| format!("pid file {text:?}"))?;
        let ready = stdout(&o);
        ensure!(ready.contains(&format!("(pid {pid})")), "{ready}");
        Ok(Daemon { pid, pid_file: pid_file.to_path_buf(), ready })
    }

    fn cmdline(&self) -> Result<String> {
        let raw = std::fs::read(format!("/proc/{}/cmdline", self.pid))?;
        Ok(String::from_utf8_lossy(&raw).replace('\0', " "))
    }

    /// Gone, or a zombie nobody reaped yet.
    fn exited(&self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Err(_) => true,
            Ok(s) => s.rsplit_once(')').is_some_and(|(_, t)| t.trim_start().starts_with('Z')),
        }
    }

    /// SIGTERM; wait for the exit and the pid file's removal.
    fn stop(&mut self) -> Result<()> {
        // SAFETY: kill(2) has no memory preconditions.
        ensure!(unsafe { libc::kill(self.pid, libc::SIGTERM) } == 0, "kill {}", self.pid);
        wait_for("the daemon to exit", Duration::from_secs(30), || {
            Ok((self.exited() && !self.pid_file.exists()).then_some(()))
        })?;
        self.pid = 0;
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.pid > 0 && !self.exited() {
            // SAFETY: as in stop.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }
}

/// `ADDR` out of "listening on …ADDR…" with the given prefix.
fn address_after(text: &str, prefix: &str) -> Result<SocketAddr> {
    let at = text.find(prefix).with_context(|| format!("{prefix:?} in {text:?}"))?;
    let rest = &text[at + prefix.len()..];
    let end = rest.find([',', ' ', '/']).unwrap_or(rest.len());
    Ok(rest[..end].parse()?)
}

fn serve_daemon(dir: &Path, extra: &[&str]) -> Result<Daemon> {
    let pid_file = dir.join("serve.pid");
    let mut cmd = Command::new(bin("chunkstore"));
    cmd.args(["serve", "-d", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.join("data"))
        .arg("--pid-file")
        .arg(&pid_file)
        .args(extra)
        .env_remove("CHUNKSTORE_ADMIN");
    Daemon::start(&mut cmd, &pid_file)
}

fn scrape(addr: SocketAddr) -> Result<String> {
    let mut c = TcpStream::connect(addr)?;
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    c.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").context("HTTP reply")?;
    ensure!(head.starts_with("HTTP/1.0 200 OK"), "{head}");
    ensure!(head.contains("text/plain; version=0.0.4"), "{head}");
    Ok(body.to_string())
}

/// name{labels} → value; every non-comment line must be `name{labels} value`.
fn parse_metrics(body: &str) -> Result<std::collections::BTreeMap<String, f64>> {
    let mut m = std::collections::BTreeMap::new();
    for line in body.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').with_context(|| format!("line {line:?}"))?;
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        ensure!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "metric name in {line:?}"
        );
        if name_end < series.len() {
            ensure!(series.ends_with('}'), "labels in {line:?}");
            let labels = &series[name_end + 1..series.len() - 1];
            for l in labels.split(',') {
                let (k, v) = l.split_once('=').with_context(|| format!("label in {line:?}"))?;
                ensure!(!k.is_empty() && v.starts_with('"') && v.ends_with('"'), "{line:?}");
            }
        }
        let v: f64 = value.parse().with_context(|| format!("value in {line:?}"))?;
        m.insert(series.to_string(), v);
    }
    Ok(m)
}

#[test]
fn metrics_count_requests_bytes_and_namespaces() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let admin_file = dir.path().join("admin");
    std::fs::write(&admin_file, format!("{ADMIN}\n"))?;
    let af = admin_file.to_str().unwrap();
    let mut d = serve_daemon(dir.path(), &["--metrics", "127.0.0.1:0", "--admin-file", af])?;
    let zdb_addr = address_after(&d.ready, "listening on ")?;
    let metrics = address_after(&d.ready, "metrics http://")?;

    let before = parse_metrics(&scrape(metrics)?)?;
    let mut c = zosfs_tests::zdb::Conn::tcp(zdb_addr)?;
    for i in 0..3 {
        let k = format!("k{i}");
        assert_eq!(c.call(&[b"SET", k.as_bytes(), b"value"])?, Reply::bulk(k.as_bytes()));
    }
    assert_eq!(c.call(&[b"GET", b"k0"])?, Reply::bulk(b"value"));
    assert_eq!(c.call(&[b"SELECT", b"nosuch"])?, Reply::err("Namespace not found"));
    assert_eq!(c.call(&[b"AUTH", b"wrong"])?, Reply::err("Access denied"));
    let after = parse_metrics(&scrape(metrics)?)?;

    let get = |m: &std::collections::BTreeMap<String, f64>, k: &str| {
        m.get(k).copied().with_context(|| format!("{k} missing"))
    };
    let delta = |k: &str| -> Result<f64> { Ok(get(&after, k)? - get(&before, k)?) };
    assert_eq!(delta("zosfs_serve_requests_total{command=\"SET\"}")?, 3.0);
    assert_eq!(delta("zosfs_serve_requests_total{command=\"GET\"}")?, 1.0);
    assert_eq!(delta("zosfs_serve_errors_total")?, 2.0);
    assert_eq!(delta("zosfs_serve_auth_failures_total")?, 1.0);
    assert!(delta("zosfs_serve_received_bytes_total")? > 0.0);
    assert!(delta("zosfs_serve_sent_bytes_total")? > 0.0);
    assert_eq!(get(&after, "zosfs_serve_connections_open")?, 1.0);
    assert_eq!(get(&after, "zosfs_serve_namespace_keys{namespace=\"default\"}")?, 3.0);
    assert_eq!(get(&after, "zosfs_serve_namespace_data_bytes{namespace=\"default\"}")?, 15.0);
    assert!(get(&after, "zosfs_serve_journal_bytes")? > 0.0);
    assert!(get(&after, "zosfs_serve_uptime_seconds")? >= 0.0);
    drop(c);
    d.stop()?;
    Ok(())
}

#[test]
fn serve_daemon_keeps_no_password_in_its_command_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let secret = "cmdline-secret-pw";
    let mut d = serve_daemon(dir.path(), &["--admin", secret])?;
    let cmdline = d.cmdline()?;
    assert!(cmdline.contains("serve") && cmdline.contains("--admin"), "{cmdline}");
    assert!(!cmdline.contains(secret), "password visible: {cmdline}");
    assert!(d.ready.contains("(log "), "{}", d.ready);
    // It serves, with that password.
    let addr = address_after(&d.ready, "listening on ")?;
    let url = format!("zdb://{addr}/made");
    fails(ns(&["create", &url], None)?, "not admin")?;
    ok(ns(&["create", &url], Some(secret))?)?;
    d.stop()?;
    Ok(())
}

#[test]
fn serve_daemon_reports_start_up_errors() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let first = serve_daemon(dir.path(), &[])?;
    // Same data directory: the second cannot lock it, and says so.
    let o = Command::new(bin("chunkstore"))
        .args(["serve", "-d", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .arg("--log-file")
        .arg(dir.path().join("second.log"))
        .output()?;
    fails(o, "in use by another server")?;
    // A symlink as pid file is refused before anything starts.
    let link = dir.path().join("link.pid");
    std::os::unix::fs::symlink(dir.path().join("elsewhere"), &link)?;
    let o = Command::new(bin("chunkstore"))
        .args(["serve", "-d", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data2"))
        .arg("--pid-file")
        .arg(&link)
        .output()?;
    fails(o, "symlinks are refused")?;
    assert!(!dir.path().join("elsewhere").exists());
    let mut first = first;
    first.stop()?;
    Ok(())
}

#[test]
fn nbdserver_daemon_hides_store_password_and_stops_on_sigterm() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (zdb, admin_file) = hub(dir.path())?;
    let secret = "nbd-store-secret";
    let store = format!("zdb://:{secret}@{}/disks", zdb.addr);
    ok(ns(&["create", &store, "--admin-file", admin_file.to_str().unwrap()], None)?)?;
    let pid_file = dir.path().join("nbd.pid");
    let mut cmd = Command::new(bin("nbdserver"));
    cmd.args(["-d", "--listen", "127.0.0.1:0", "--export", "a=blank:1M", "--store", &store])
        .arg("--cache-dir")
        .arg(dir.path().join("nbdcache"))
        .arg("--pid-file")
        .arg(&pid_file)
        .env_remove("ZOSFS_STORE");
    let mut d = Daemon::start(&mut cmd, &pid_file)?;
    let cmdline = d.cmdline()?;
    assert!(cmdline.contains("--store"), "{cmdline}");
    assert!(!cmdline.contains(secret), "password visible: {cmdline}");
    let addr = address_after(&d.ready, "listening on ")?;
    let out = Command::new("nbdinfo").arg("--size").arg(format!("nbd://{addr}/a")).output()?;
    assert_eq!(ok(out)?.trim(), "1048576");
    assert!(dir.path().join("nbdcache/nbdserver.log").is_file(), "default log file");
    d.stop()?;
    Ok(())
}

/// Bad input to -d: a clear error, non-zero exit, before detaching.
#[test]
fn nbdserver_daemon_start_up_error_reaches_the_caller() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let o = Command::new(bin("nbdserver"))
        .args(["-d", "--listen", "203.0.113.1:1", "--export", "a=blank:1M"])
        .arg("--cache-dir")
        .arg(dir.path().join("c"))
        .output()?;
    if o.status.success() {
        bail!("started: {}", stdout(&o));
    }
    assert!(stderr(&o).contains("203.0.113.1:1"), "names the address: {}", stderr(&o));
    Ok(())
}
