//! What the `flist` and `chunkstore` commands do with their output: a reader
//! that goes away (`flist inspect x | head`) ends them quietly.

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

use anyhow::{Result, ensure};
use zosfs_tests::bin;

/// A pipe whose read end is already closed: every write to it fails with
/// EPIPE, deterministically, from the first byte.
fn closed_pipe() -> Result<OwnedFd> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds we then own; O_CLOEXEC keeps them out of
    // other children.
    ensure!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == 0, "pipe2");
    // SAFETY: both fds were just created and are owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    Ok(write)
}

fn run_into_closed_pipe(cmd: &mut Command) -> Result<()> {
    let out = cmd.stdout(Stdio::from(closed_pipe()?)).stderr(Stdio::piped()).output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{cmd:?} exited with {}: {err}", out.status);
    ensure!(err.is_empty(), "{cmd:?} wrote to stderr: {err}");
    Ok(())
}

#[test]
fn a_closed_stdout_pipe_ends_commands_quietly() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("d"))?;
    for i in 0..50 {
        std::fs::write(src.join(format!("d/f{i}")), format!("file {i}\n"))?;
    }
    let flist = tmp.path().join("t.flist");
    let store = format!("local://{}", tmp.path().join("store").display());
    let pack = Command::new(bin("flist"))
        .args(["pack", "--no-progress", "-o", flist.to_str().unwrap(), "--store", &store])
        .arg(&src)
        .env("ZOSFS_FLIST_CACHE", tmp.path().join("cache"))
        .output()?;
    ensure!(pack.status.success(), "pack: {}", String::from_utf8_lossy(&pack.stderr));

    for args in [&["inspect"][..], &["ls", "-lR"][..]] {
        run_into_closed_pipe(
            Command::new(bin("flist"))
                .args(args)
                .arg(&flist)
                .env("ZOSFS_FLIST_CACHE", tmp.path().join("cache")),
        )?;
    }
    run_into_closed_pipe(Command::new(bin("chunkstore")).args(["stat", "--store", &store]))?;
    Ok(())
}

/// A hub that is down during a pack: the pack succeeds with the chunks in
/// the node store, says "queued" on the terminal and `chunkstore stat`
/// counts them; `--quorum 2` fails instead, naming the cause.
#[test]
fn a_down_hub_during_pack_is_queued_or_fails_the_quorum() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src)?;
    std::fs::write(src.join("f"), zosfs_tests::flist::noise(3, 3 << 20))?;
    // A port nobody listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let node = format!("local://{}", tmp.path().join("node").display());
    let hub = format!("zdb://127.0.0.1:{port}/images");
    let pack = |out: &str, extra: &[&str]| {
        Command::new(bin("flist"))
            .args(["pack", "--no-progress", "-o"])
            .arg(tmp.path().join(out))
            .args(["--store", &node, "--store", &hub])
            .args(extra)
            .arg(&src)
            .env("ZOSFS_FLIST_CACHE", tmp.path().join("cache"))
            .output()
    };

    let out = pack("a.flist", &[])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "pack with the hub down failed: {err}");
    ensure!(err.contains("queued: 3 chunks are not on every store yet"), "pack said: {err}");
    ensure!(err.matches("writes are queued for it").count() == 1, "one warning per store: {err}");
    let stat = Command::new(bin("chunkstore")).args(["stat", "--store", &node]).output()?;
    let stat = String::from_utf8_lossy(&stat.stdout);
    ensure!(stat.contains("queued          3 chunks"), "stat:\n{stat}");

    let out = pack("b.flist", &["--quorum", "2"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "pack --quorum 2 with the hub down succeeded: {err}");
    ensure!(
        err.contains("1 of 2 required stores took the write") && err.contains("cannot connect"),
        "pack --quorum 2 said: {err}"
    );
    Ok(())
}

/// `flist verify` against a store that is down: one line naming the store
/// as unreachable, no chunk called bad, its remaining checks skipped.
#[test]
fn verify_against_a_down_store_says_unreachable_not_bad() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src)?;
    for i in 0..40u64 {
        std::fs::write(src.join(format!("f{i}")), zosfs_tests::flist::noise(i, 4096))?;
    }
    let flist = tmp.path().join("t.flist");
    let node = format!("local://{}", tmp.path().join("node").display());
    let pack = Command::new(bin("flist"))
        .args(["pack", "--no-progress", "-o"])
        .arg(&flist)
        .args(["--store", &node])
        .arg(&src)
        .env("ZOSFS_FLIST_CACHE", tmp.path().join("cache"))
        .output()?;
    ensure!(pack.status.success(), "pack: {}", String::from_utf8_lossy(&pack.stderr));
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let hub = format!("zdb://127.0.0.1:{port}/images");

    let out = Command::new(bin("flist"))
        .args(["verify"])
        .arg(&flist)
        .args(["--store", &hub, "--jobs", "1"])
        .env("ZOSFS_FLIST_CACHE", tmp.path().join("cache"))
        .output()?;
    let (text, err) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.code() == Some(1), "verify exited with {}: {err}", out.status);
    let lines: Vec<&str> = text.lines().collect();
    ensure!(lines.len() == 1, "one line for the down store, got:\n{text}");
    ensure!(lines[0].starts_with(&format!("unreachable {hub}: ")), "{text}");
    // Every chunk skipped once the store was found down: no check done.
    ensure!(
        err.contains(": 0 checks, ") && err.contains(" not done (store unreachable), 1 problem(s)"),
        "summary: {err}"
    );
    Ok(())
}
