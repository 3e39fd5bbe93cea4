//! `chunkstore serve --unix PATH`: the same server on a unix socket, and
//! the command line itself.

use anyhow::Result;
use zosfs_tests::zdb::{Reply, Zdb};

#[test]
fn unix_socket_serves_the_same_data_as_tcp() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("zdb.sock");
    // A stale socket file from an earlier run is replaced.
    drop(std::os::unix::net::UnixListener::bind(&sock)?);
    let mut server = Zdb::start_with(&dir.path().join("data"), Some(&sock), &[])?;
    let mut u = server.connect_unix()?;
    assert_eq!(u.call(&[b"PING"])?, Reply::Status("PONG".into()));
    assert_eq!(u.call(&[b"SET", b"via-unix", b"hello"])?, Reply::bulk(b"via-unix"));
    let big = vec![0x5au8; 8 * 1024 * 1024];
    assert_eq!(u.call(&[b"SET", b"big", &big])?, Reply::bulk(b"big"));
    assert_eq!(u.call(&[b"GET", b"big"])?, Reply::Bulk(Some(big)));
    let mut t = server.connect()?;
    assert_eq!(t.call(&[b"GET", b"via-unix"])?, Reply::bulk(b"hello"));
    assert_eq!(t.call(&[b"SET", b"via-tcp", b"world"])?, Reply::bulk(b"via-tcp"));
    assert_eq!(u.call(&[b"GET", b"via-tcp"])?, Reply::bulk(b"world"));
    // Bad input on the unix socket gets the same treatment.
    u.send(b"garbage\r\n")?;
    assert_eq!(
        u.read_replies(1, std::time::Duration::from_secs(30))?,
        b"-Malformed request, array expected\r\n"
    );
    drop((u, t));
    assert!(server.stop()?.success());
    assert!(!sock.exists(), "socket file removed at shutdown");
    Ok(())
}

#[test]
fn help_explains_every_flag() -> Result<()> {
    let out = std::process::Command::new(zosfs_tests::bin("chunkstore"))
        .args(["serve", "--help"])
        .output()?;
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--unix",
        "--admin",
        "--mode",
        "--protect",
        "--data",
        "--values",
        "--sync-time",
        "--sync",
    ] {
        let line = help.lines().find(|l| l.trim_start().starts_with(flag)).unwrap_or_default();
        assert!(!line.is_empty(), "{flag} missing from --help:\n{help}");
    }
    for word in ["user", "seq", "mixed", "SIGTERM", "127.0.0.1"] {
        assert!(help.contains(word), "--help does not mention {word}:\n{help}");
    }
    // Bad flags are refused with a message naming them.
    let out = std::process::Command::new(zosfs_tests::bin("chunkstore"))
        .args(["serve", "--data", "/tmp/x", "--protect"])
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--admin"));
    let out = std::process::Command::new(zosfs_tests::bin("chunkstore"))
        .args(["serve", "--data", "/tmp/x", "--listen", "not an address"])
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
    Ok(())
}
