//! zosfs's own 0-db client (`zdb://`, `zdb+unix://` stores) against
//! `chunkstore serve`: both real, no mocks. Chunks go in through
//! `chunkstore put`, come back through `chunkstore get`, and land in a
//! password-protected namespace the way a node would use a hub's 0-db.

use std::process::Command;

use anyhow::{Context, Result};
use zosfs_tests::bin;
use zosfs_tests::zdb::{Reply, Zdb};

fn chunkstore(args: &[&str]) -> Result<std::process::Output> {
    let out = Command::new(bin("chunkstore")).args(args).output().context("run chunkstore")?;
    Ok(out)
}

#[test]
fn zosfs_zdb_client_stores_and_reads_chunks_through_the_server() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("zdb.sock");
    let mut server =
        Zdb::start_with(&dir.path().join("data"), Some(&sock), &["--admin", "adminpw"])?;
    let mut admin = server.connect()?;
    assert_eq!(admin.call(&[b"AUTH", b"adminpw"])?, Reply::ok());
    assert_eq!(admin.call(&[b"NSNEW", b"images"])?, Reply::ok());
    assert_eq!(admin.call(&[b"NSSET", b"images", b"password", b"nspw"])?, Reply::ok());
    assert_eq!(admin.call(&[b"NSSET", b"images", b"public", b"0"])?, Reply::ok());

    // A file of 2.5 chunks of 1 MiB with varied content.
    let file = dir.path().join("input.bin");
    let content: Vec<u8> =
        (0..(5 << 19)).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&file, &content)?;
    let tcp = format!("zdb://:nspw@{}/images", server.addr);
    let out = chunkstore(&["put", "--store", &tcp, file.to_str().unwrap()])?;
    assert!(out.status.success(), "put: {}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Vec<String>> = String::from_utf8(out.stdout)?
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");

    // Read every chunk back, over TCP and over the unix socket, decoded.
    let unix = format!("zdb+unix://:nspw@{}?ns=images", sock.display());
    let mut rebuilt = Vec::new();
    for l in &lines {
        let (id, key) = (&l[2], &l[3]);
        for url in [&tcp, &unix] {
            let out = chunkstore(&["get", "--store", url, id, "--key", key])?;
            assert!(out.status.success(), "get {url}: {}", String::from_utf8_lossy(&out.stderr));
            if url == &tcp {
                rebuilt.extend_from_slice(&out.stdout);
            }
        }
    }
    assert!(rebuilt == content, "chunks read back differ from the file");

    // The same ids are visible in the namespace; putting again writes nothing new.
    let ids: Vec<&str> = lines.iter().map(|l| l[2].as_str()).collect();
    let mut args = vec!["has", "--store", tcp.as_str()];
    args.extend(&ids);
    assert!(chunkstore(&args)?.status.success());
    let out = chunkstore(&["put", "--store", &tcp, file.to_str().unwrap()])?;
    assert!(out.status.success());
    assert_eq!(admin.call(&[b"SELECT", b"images", b"nspw"])?, Reply::ok());
    assert_eq!(admin.call(&[b"DBSIZE"])?, Reply::Int(3));

    // Wrong password: refused with a clear error, nothing printed as secret.
    let bad = format!("zdb://:Xyzzy-bad@{}/images", server.addr);
    let out = chunkstore(&["has", "--store", &bad, ids[0]])?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("Xyzzy") && !err.contains("nspw"), "password leaked: {err}");
    assert!(err.contains("Access denied"), "{err}");
    drop(admin);
    assert!(server.stop()?.success());
    Ok(())
}
