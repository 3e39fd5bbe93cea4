//! The README's quick tour runs as written: its first `sh` block under
//! "## Using it" is extracted and run by bash (`-e`: any failing line fails
//! the test), on loopback, with the binaries of this build on PATH.
//!
//! The only rewrites are places: node paths go to a temp dir, `hub:9900`
//! and the default ports to free loopback ports, and the inputs a reader
//! brings (`./rootfs`, `ubuntu.flist`) are made here. Two lines are left
//! out, as the README says: `docker export` (no Docker engine) and
//! `flist convert` (needs an old hub).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use zosfs_tests::{bin, free_port};

/// The first ```sh block after `## Using it`.
fn tour(readme: &str) -> Result<String> {
    let section = readme.split_once("## Using it").context("no '## Using it' section")?.1;
    let block = section.split_once("```sh\n").context("no sh block")?.1;
    Ok(block.split_once("```").context("unterminated sh block")?.0.to_string())
}

/// Join backslash continuations, drop the lines the README says need
/// what a test machine lacks.
fn runnable_lines(block: &str) -> Vec<String> {
    let joined = block.replace("\\\n", " ");
    joined
        .lines()
        .filter(|l| !l.contains("docker export") && !l.contains("flist convert"))
        .map(str::to_string)
        .collect()
}

fn rewrite(line: &str, t: &Path, hub: u16, metrics: u16, nbd: u16) -> String {
    let t = t.display();
    line.replace("chunkstore serve -d", &format!("chunkstore serve -d --listen 127.0.0.1:{hub}"))
        .replace("nbdserver -d", &format!("nbdserver -d --listen 127.0.0.1:{nbd}"))
        .replace("127.0.0.1:10809", &format!("127.0.0.1:{nbd}"))
        .replace("127.0.0.1:9901", &format!("127.0.0.1:{metrics}"))
        .replace("hub:9900", &format!("127.0.0.1:{hub}"))
        .replace("/var/lib/zosfs", &format!("{t}/lib"))
        .replace("/run/zosfs-", &format!("{t}/run-"))
        .replace("/mnt/c1", &format!("{t}/c1"))
        .replace("/tmp/rootfs", &format!("{t}/unpacked"))
        .replace("ubuntu.flist", &format!("{t}/ubuntu.flist"))
}

fn sh(script: &str, cwd: &Path, env: &[(&str, String)]) -> Result<std::process::Output> {
    let path = format!(
        "{}:{}",
        bin("flist").parent().context("bin dir")?.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = Command::new("bash");
    c.args(["-e", "-x", "-c", script]).current_dir(cwd).env("PATH", path).env_remove("ZOSFS_STORE");
    for (k, v) in env {
        c.env(k, v);
    }
    Ok(c.output()?)
}

/// Stop what the tour left running (by the pid files it wrote).
struct Cleanup<'a>(&'a Path);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let t = self.0;
        let _ = Command::new(bin("fsmount")).arg("umount").arg(t.join("c1")).output();
        for pid in ["run-nbd.pid", "run-hub.pid"] {
            if let Ok(p) = std::fs::read_to_string(t.join(pid)) {
                let _ = Command::new("kill").arg(p.trim()).status();
            }
        }
    }
}

#[test]
fn the_quick_tour_runs_as_written() -> Result<()> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))?;
    let lines = runnable_lines(&tour(&readme)?);
    ensure!(lines.iter().any(|l| l.starts_with("fsmount ")), "the tour lost its fsmount line");

    let t = tempfile::tempdir()?;
    let root = t.path();
    let _cleanup = Cleanup(root);
    let (hub, metrics, nbd) = (free_port(), free_port(), free_port());
    let env = [
        ("ZOSFS_STATE", format!("{}/state", root.display())),
        ("ZOSFS_CACHE", format!("{}/cache", root.display())),
        ("ZOSFS_RUN_DIR", format!("{}/run", root.display())),
        ("ZOSFS_REGISTRY", format!("{}/registry", root.display())),
        ("ZOSFS_FLIST_CACHE", format!("{}/flists", root.display())),
    ];
    // What a reader brings: a root tree and a VM disk image as an flist
    // (packed after the hub is up: the tour's first lines start it).
    std::fs::create_dir_all(root.join("rootfs/etc"))?;
    std::fs::write(root.join("rootfs/etc/hostname"), "tour\n")?;
    std::fs::create_dir_all(root.join("disk"))?;
    let disk = std::fs::File::create(root.join("disk/disk.raw"))?;
    disk.set_len(8 << 20)?;
    let pack_disk = format!(
        "flist pack -o {0}/ubuntu.flist --store zdb://127.0.0.1:{hub}/images {0}/disk",
        root.display()
    );

    let mut script = String::new();
    for l in &lines {
        let l = rewrite(l, root, hub, metrics, nbd);
        script.push_str(&l);
        script.push('\n');
        if l.starts_with("chunkstore ns create") {
            script.push_str(&pack_disk);
            script.push('\n');
        }
    }
    let out = sh(&script, root, &env)?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "the tour failed:\n{err}");
    // It did what it says: the flist unpacked, the commit written.
    ensure!(std::fs::read(root.join("unpacked/etc/hostname"))? == b"tour\n");
    ensure!(root.join("vm1-v2.flist").is_file(), "no committed flist");
    Ok(())
}
