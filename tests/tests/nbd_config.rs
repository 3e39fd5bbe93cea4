//! A TOML config file, SIGHUP reload (exports added, removed), and the
//! Prometheus metrics endpoint.

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, ensure};
use zosfs_tests::nbd::run_text;
use zosfs_tests::{ChildGuard, bin, free_port, wait_for, wait_port};

fn list(port: u16) -> Result<String> {
    run_text(Command::new("nbdinfo").args(["--list", "--json", &format!("nbd://127.0.0.1:{port}")]))
}

fn metrics(port: u16) -> Result<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn hup(pid: u32) -> Result<()> {
    let st = Command::new("kill").args(["-HUP", &pid.to_string()]).status()?;
    ensure!(st.success(), "kill -HUP failed");
    Ok(())
}

#[test]
fn config_file_sighup_reload_and_metrics() -> Result<()> {
    let t = tempfile::tempdir()?;
    let (port, mport) = (free_port(), free_port());
    let cfg = t.path().join("nbd.toml");
    let write_cfg = |exports: &[(&str, &str)]| -> Result<()> {
        let mut s = format!(
            "listen = [\"127.0.0.1:{port}\"]\ncache_dir = \"{}\"\nmetrics = \"127.0.0.1:{mport}\"\n",
            t.path().join("cache").display()
        );
        for (name, dev) in exports {
            s.push_str(&format!("[[export]]\nname = \"{name}\"\ndevice = \"{dev}\"\n"));
        }
        Ok(std::fs::write(&cfg, s)?)
    };
    write_cfg(&[("a", "blank:16M")])?;
    let log = t.path().join("server.log");
    let mut cmd = Command::new(bin("nbdserver"));
    cmd.arg("--config").arg(&cfg).env("RUST_LOG", "warn");
    cmd.stderr(std::fs::File::create(&log)?);
    let mut srv = ChildGuard::spawn(cmd, "nbdserver")?;
    wait_port(port, Duration::from_secs(20))?;
    ensure!(list(port)?.contains("\"export-name\": \"a\""));

    // Add b: it appears without a restart, a keeps serving.
    write_cfg(&[("a", "blank:16M"), ("b", "blank:32M")])?;
    hup(srv.pid())?;
    wait_for("export b", Duration::from_secs(20), || {
        Ok(list(port)?.contains("\"export-name\": \"b\"").then_some(()))
    })?;
    run_text(Command::new("qemu-io").args([
        "-f",
        "raw",
        &format!("nbd://127.0.0.1:{port}/b"),
        "-c",
        "write 0 64k",
    ]))?;
    let m = metrics(mport)?;
    ensure!(m.starts_with("HTTP/1.0 200"), "{m}");
    ensure!(m.contains("zosfs_nbd_writes_total{export=\"b\"} 1"), "metrics:\n{m}");
    ensure!(m.contains("# TYPE zosfs_nbd_fetched_bytes_total counter"), "metrics:\n{m}");

    // b holds a local write now: a changed device for b would reset its
    // cache, so the reload keeps the old device and says why (it used to
    // drop the export). A changed listen address says it needs a restart.
    write_cfg(&[("a", "blank:16M"), ("b", "blank:48M")])?;
    let moved = std::fs::read_to_string(&cfg)?
        .replace(&format!("127.0.0.1:{port}\""), &format!("127.0.0.1:{}\"", free_port()));
    std::fs::write(&cfg, moved)?;
    hup(srv.pid())?;
    let said = wait_for("the reload to keep b", Duration::from_secs(20), || {
        let l = std::fs::read_to_string(&log)?;
        Ok((l.contains("keeping the old device") && l.contains("next start")).then_some(l))
    })?;
    ensure!(said.contains("holds local writes (1 chunks)"), "log:\n{said}");
    ensure!(said.contains("SIGHUP: listen changed in the config"), "log:\n{said}");
    let info =
        run_text(Command::new("nbdinfo").args(["--size", &format!("nbd://127.0.0.1:{port}/b")]))?;
    ensure!(info.trim() == (32u64 << 20).to_string(), "b's size after the reload: {info}");

    // A broken config is refused and changes nothing.
    std::fs::write(&cfg, "this is not toml [")?;
    hup(srv.pid())?;
    wait_for("the reload to be refused", Duration::from_secs(20), || {
        Ok(std::fs::read_to_string(&log)?.contains("reload failed").then_some(()))
    })?;
    let now = list(port)?;
    ensure!(now.contains("\"export-name\": \"a\"") && now.contains("\"export-name\": \"b\""));
    // Remove a.
    write_cfg(&[("b", "blank:32M")])?;
    hup(srv.pid())?;
    wait_for("export a to go", Duration::from_secs(20), || {
        Ok((!list(port)?.contains("\"export-name\": \"a\"")).then_some(()))
    })?;
    ensure!(list(port)?.contains("\"export-name\": \"b\""));
    let st = srv.terminate(Duration::from_secs(30))?;
    ensure!(st.success(), "exit {st}");
    Ok(())
}
