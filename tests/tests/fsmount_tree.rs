//! The read-only FUSE layer with a real kernel: every entry of a mounted
//! tree compared with its source (stat, xattrs, content), stable inode
//! numbers, layering, passthrough, counters and the Prometheus endpoint.
//! The source is a local directory tree (the same layer serves flists).

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result, ensure};
use zosfs_tests::free_port;
use zosfs_tests::fsmount::{Env, compare_trees, describe_tree, fstype_at, make_rich_tree};

#[test]
fn ro_mount_shows_every_entry_exactly() -> Result<()> {
    let env = Env::new()?;
    let src = env.mkdir("src")?;
    make_rich_tree(&src)?;
    let mnt = env.mkdir("mnt")?;
    env.mount(&src, &mnt, &[])?;
    ensure!(fstype_at(&mnt).as_deref() == Some("fuse.zosfs"));

    let want = describe_tree(&src, true)?;
    let got = describe_tree(&mnt, true)?;
    // Everything matches, inode numbers included; only the root's inode is
    // FUSE's fixed 1.
    let mut want_root = want[Path::new("")].clone();
    want_root.ino = 1;
    ensure!(got[Path::new("")] == want_root, "root: {:?} vs {:?}", got[Path::new("")], want_root);
    compare_trees(&want, &got, &["root"])?;

    // Writes are refused: it is a read-only layer.
    let e = std::fs::write(mnt.join("etc/hostname"), b"x").unwrap_err();
    ensure!(e.raw_os_error() == Some(libc::EROFS), "{e}");
    env.umount(&mnt)?;

    // Inode numbers are the same on the next mount.
    env.mount(&src, &mnt, &[])?;
    let again = describe_tree(&mnt, false)?;
    for (p, info) in &again {
        ensure!(info.ino == got[p].ino, "{p:?}: inode {} then {}", got[p].ino, info.ino);
    }
    env.umount(&mnt)?;
    env.wait_clean()
}

#[test]
fn merged_view_shows_every_entry_of_the_source() -> Result<()> {
    let env = Env::new()?;
    let src = env.mkdir("src")?;
    make_rich_tree(&src)?;
    let mnt = env.mkdir("mnt")?;
    env.mount(&src, &mnt, &["--rw", "view", "--volume-size", "1G"])?;
    ensure!(fstype_at(&mnt).as_deref() == Some("overlay"));
    let want = describe_tree(&src, true)?;
    let got = describe_tree(&mnt, true)?;
    // overlayfs reports its own inode numbers for directories and its own
    // link count for merged directories; the root is the upper directory.
    compare_trees(&want, &got, &["ino", "dir_nlink", "root"])?;
    let (w, g) = (&want[Path::new("")], &got[Path::new("")]);
    ensure!((w.mode, w.uid, w.gid) == (g.mode, g.uid, g.gid), "root {w:?} vs {g:?}");
    env.umount(&mnt)?;
    env.wait_clean()
}

#[test]
fn later_layers_win() -> Result<()> {
    let env = Env::new()?;
    let a = env.mkdir("a")?;
    let b = env.mkdir("b")?;
    std::fs::create_dir_all(a.join("etc/only-a"))?;
    std::fs::write(a.join("etc/conf"), b"from a")?;
    std::fs::write(a.join("etc/a-file"), b"a")?;
    std::fs::write(a.join("shadowed-dir"), b"a file that b replaces by a dir")?;
    std::fs::create_dir_all(b.join("etc"))?;
    std::fs::write(b.join("etc/conf"), b"from b")?;
    std::fs::write(b.join("etc/b-file"), b"b")?;
    std::fs::create_dir_all(b.join("shadowed-dir"))?;
    std::fs::write(b.join("shadowed-dir/x"), b"x")?;
    let mnt = env.mkdir("mnt")?;
    env.fsmount_ok(&[
        OsStr::new("-d"),
        OsStr::new("--flist"),
        a.as_os_str(),
        OsStr::new("--flist"),
        b.as_os_str(),
        mnt.as_os_str(),
    ])?;
    ensure!(std::fs::read(mnt.join("etc/conf"))? == b"from b");
    ensure!(std::fs::read(mnt.join("etc/a-file"))? == b"a");
    ensure!(std::fs::read(mnt.join("etc/b-file"))? == b"b");
    ensure!(mnt.join("etc/only-a").is_dir());
    ensure!(std::fs::read(mnt.join("shadowed-dir/x"))? == b"x");
    let mut names: Vec<_> = std::fs::read_dir(mnt.join("etc"))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    ensure!(names == ["a-file", "b-file", "conf", "only-a"], "{names:?}");
    env.umount(&mnt)?;
    env.wait_clean()
}

fn http_get(port: u16, path: &str) -> Result<String> {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(c, "GET {path} HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    c.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn stats_count_opens_and_passthrough_and_serve_prometheus() -> Result<()> {
    let env = Env::new()?;
    let src = env.mkdir("src")?;
    make_rich_tree(&src)?;
    let mnt = env.mkdir("mnt")?;
    let port = free_port();
    env.mount(&src, &mnt, &["--rw", "s", "--volume-size", "1G", "--metrics", &port.to_string()])?;

    // Fully local files are served by passthrough through the overlay.
    let data = std::fs::read(mnt.join("usr/lib/big.bin"))?;
    ensure!(data == std::fs::read(src.join("usr/lib/big.bin"))?);
    std::fs::read(mnt.join("etc/hostname"))?;

    let stats = env.fsmount_ok(&[OsStr::new("stats"), mnt.as_os_str()])?;
    let field = |name: &str| -> Result<u64> {
        let line = stats.lines().find(|l| l.starts_with(name)).context(name.to_string())?;
        Ok(line[name.len()..].split_whitespace().next().context("value")?.parse()?)
    };
    ensure!(field("files opened")? >= 2, "{stats}");
    ensure!(field("passthrough opens")? >= 2, "{stats}");
    ensure!(stats.contains("(passthrough on)"), "{stats}");

    let m = http_get(port, "/metrics")?;
    ensure!(m.starts_with("HTTP/1.0 200 OK"), "{m}");
    ensure!(m.contains("# TYPE zosfs_fsmount_fetch_latency_seconds histogram"), "{m}");
    let opened = m
        .lines()
        .find(|l| l.starts_with("zosfs_fsmount_files_opened_total{"))
        .context("files_opened in metrics")?;
    ensure!(opened.ends_with(&format!(" {}", field("files opened")?)), "{opened}");
    ensure!(http_get(port, "/nope")?.starts_with("HTTP/1.0 404"));

    let prom =
        env.fsmount_ok(&[OsStr::new("stats"), mnt.as_os_str(), OsStr::new("--prometheus")])?;
    ensure!(prom.contains("zosfs_fsmount_passthrough_opens_total"), "{prom}");

    // Without passthrough every read is served in user space.
    env.umount(&mnt)?;
    env.mount(&src, &mnt, &["--no-passthrough"])?;
    std::fs::read(mnt.join("usr/lib/big.bin"))?;
    let stats = env.fsmount_ok(&[OsStr::new("stats"), mnt.as_os_str()])?;
    ensure!(stats.contains("passthrough opens 0 (passthrough off)"), "{stats}");
    ensure!(stats.contains("reads") && !stats.contains("reads             0 "), "{stats}");
    env.umount(&mnt)?;
    env.wait_clean()
}
