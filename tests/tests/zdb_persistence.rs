//! A restarted `chunkstore serve` serves everything it acknowledged:
//! values, SCAN order, namespaces, their settings and passwords, sequential
//! ids — after a clean stop (SIGTERM) and after a crash (SIGKILL).

use anyhow::Result;
use zosfs_tests::zdb::{Conn, Reply, Zdb};

/// Every entry of the current namespace, via SCAN and its cursor.
fn scan_all(c: &mut Conn) -> Result<Vec<Reply>> {
    let mut out = Vec::new();
    let mut r = c.call(&[b"SCAN"])?;
    loop {
        match r {
            Reply::Error(e) if e == "No more data" => return Ok(out),
            Reply::Array(top) => {
                let Reply::Bulk(Some(cursor)) = &top[0] else { panic!("{top:?}") };
                let Reply::Array(items) = &top[1] else { panic!("{top:?}") };
                out.extend(items.iter().cloned());
                r = c.call(&[b"SCAN", cursor])?;
            }
            other => panic!("SCAN: {other:?}"),
        }
    }
}

fn value(i: usize) -> Vec<u8> {
    // Sizes from empty to 1 MiB, content depending on i.
    let len = match i % 5 {
        0 => 0,
        1 => 1,
        2 => 1000 + i,
        3 => 64 * 1024,
        _ => 1 << 20,
    };
    (0..len).map(|j| (i * 31 + j) as u8).collect()
}

struct Expect {
    default_scan: Vec<Reply>,
    values: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    nslist: Reply,
}

fn populate(server: &Zdb) -> Result<Expect> {
    let mut c = server.connect()?;
    let mut values = Vec::new();
    for i in 0..30 {
        let key = format!("key-{i}").into_bytes();
        assert_eq!(c.call(&[b"SET", &key, &value(i)])?, Reply::bulk(&key));
        values.push((key, Some(value(i))));
    }
    // Overwrites move keys to the end of the SCAN order; deletes drop them.
    for i in [3usize, 7, 11] {
        let key = format!("key-{i}").into_bytes();
        assert_eq!(c.call(&[b"SET", &key, b"overwritten"])?, Reply::bulk(&key));
        values[i].1 = Some(b"overwritten".to_vec());
    }
    for i in [5usize, 12] {
        let key = format!("key-{i}").into_bytes();
        assert_eq!(c.call(&[b"DEL", &key])?, Reply::ok());
        values[i].1 = None;
    }
    assert_eq!(c.call(&[b"SET", b"stamped", b"v", b"1600000000"])?, Reply::bulk(b"stamped"));
    values.push((b"stamped".to_vec(), Some(b"v".to_vec())));

    assert_eq!(c.call(&[b"NSNEW", b"secret"])?, Reply::ok());
    assert_eq!(c.call(&[b"NSSET", b"secret", b"password", b"pw"])?, Reply::ok());
    assert_eq!(c.call(&[b"NSSET", b"secret", b"public", b"0"])?, Reply::ok());
    assert_eq!(c.call(&[b"NSSET", b"secret", b"worm", b"1"])?, Reply::ok());
    assert_eq!(c.call(&[b"NSSET", b"secret", b"maxsize", b"1000"])?, Reply::ok());
    assert_eq!(c.call(&[b"NSNEW", b"seqns"])?, Reply::ok());
    assert_eq!(c.call(&[b"NSSET", b"seqns", b"mode", b"seq"])?, Reply::ok());
    assert_eq!(c.call(&[b"NSNEW", b"gone"])?, Reply::ok());
    assert_eq!(c.call(&[b"NSDEL", b"gone"])?, Reply::ok());

    assert_eq!(c.call(&[b"SELECT", b"secret", b"pw"])?, Reply::ok());
    assert_eq!(c.call(&[b"SET", b"a", b"secret-a"])?, Reply::bulk(b"a"));
    assert_eq!(c.call(&[b"SELECT", b"seqns"])?, Reply::ok());
    for id in 0u64..3 {
        assert_eq!(c.call(&[b"SET", b"", b"s"])?, Reply::bulk(&id.to_le_bytes()));
    }
    assert_eq!(c.call(&[b"SET", &0u64.to_le_bytes(), b"s0"])?, Reply::bulk(&0u64.to_le_bytes()));

    assert_eq!(c.call(&[b"SELECT", b"default"])?, Reply::ok());
    let default_scan = scan_all(&mut c)?;
    assert_eq!(default_scan.len(), 29);
    let nslist = c.call(&[b"NSLIST"])?;
    Ok(Expect { default_scan, values, nslist })
}

fn verify(server: &Zdb, e: &Expect) -> Result<()> {
    let mut c = server.connect()?;
    for (key, want) in &e.values {
        assert_eq!(
            c.call(&[b"GET", key])?,
            Reply::Bulk(want.clone()),
            "{}",
            String::from_utf8_lossy(key)
        );
    }
    assert_eq!(c.call(&[b"KEYTIME", b"stamped"])?, Reply::Int(1_600_000_000));
    assert_eq!(scan_all(&mut c)?, e.default_scan, "SCAN order and entries");
    assert_eq!(c.call(&[b"DBSIZE"])?, Reply::Int(29));
    assert_eq!(c.call(&[b"NSLIST"])?, e.nslist);
    assert_eq!(
        e.nslist,
        Reply::Array(vec![Reply::bulk(b"default"), Reply::bulk(b"secret"), Reply::bulk(b"seqns")])
    );

    // Namespace password and settings survived.
    assert_eq!(c.call(&[b"SELECT", b"secret"])?, Reply::err("Namespace protected and private"));
    assert_eq!(c.call(&[b"SELECT", b"secret", b"wrong"])?, Reply::err("Access denied"));
    assert_eq!(c.call(&[b"SELECT", b"secret", b"pw"])?, Reply::ok());
    assert_eq!(c.call(&[b"GET", b"a"])?, Reply::bulk(b"secret-a"));
    assert_eq!(c.call(&[b"SET", b"a", b"x"])?, Reply::err("Namespace is protected by worm mode"));
    assert_eq!(
        c.call(&[b"SET", b"big", &[0u8; 2000]])?,
        Reply::err("No space left on this namespace")
    );

    // Sequential ids continue after the last used one (the update used one).
    assert_eq!(c.call(&[b"SELECT", b"seqns"])?, Reply::ok());
    assert_eq!(c.call(&[b"GET", &0u64.to_le_bytes()])?, Reply::bulk(b"s0"));
    assert_eq!(c.call(&[b"SET", b"", b"next"])?, Reply::bulk(&4u64.to_le_bytes()));
    assert_eq!(
        c.call(&[b"NSSET", b"seqns", b"mode", b"user"])?,
        Reply::err("Cannot change mode of used namespace")
    );

    // A removed namespace stays removed; its name is free again.
    assert_eq!(c.call(&[b"SELECT", b"gone"])?, Reply::err("Namespace not found"));
    Ok(())
}

#[test]
fn restart_after_sigterm_serves_everything() -> Result<()> {
    let data = tempfile::tempdir()?;
    let mut server = Zdb::start(data.path(), &[])?;
    let expect = populate(&server)?;
    let status = server.stop()?;
    assert!(status.success(), "SIGTERM exit: {status}");
    // Values went to the node's local store (segments), not to files per key.
    let segs = std::fs::read_dir(data.path().join("chunks"))?
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "seg")))
        .count();
    assert!(segs > 0, "no local store segments under DATA/chunks");

    let mut server = Zdb::start(data.path(), &[])?;
    verify(&server, &expect)?;
    assert!(server.stop()?.success());
    Ok(())
}

#[test]
fn restart_after_a_crash_serves_everything_acknowledged() -> Result<()> {
    let data = tempfile::tempdir()?;
    let mut server = Zdb::start(data.path(), &[])?;
    let expect = populate(&server)?;
    server.guard.kill9();

    let server = Zdb::start(data.path(), &[])?;
    verify(&server, &expect)?;
    Ok(())
}

#[test]
fn a_second_server_on_the_same_data_is_refused() -> Result<()> {
    let data = tempfile::tempdir()?;
    let _first = Zdb::start(data.path(), &[])?;
    let out = std::process::Command::new(zosfs_tests::bin("chunkstore"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another server"), "{err}");
    Ok(())
}

#[test]
fn values_of_the_earlier_dir_layout_are_not_silently_ignored() -> Result<()> {
    let data = tempfile::tempdir()?;
    std::fs::create_dir(data.path().join("values"))?;
    let out = std::process::Command::new(zosfs_tests::bin("chunkstore"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--values dir://"), "{err}");
    // With the flag it starts and uses that store.
    let values = format!("dir://{}", data.path().join("values").display());
    let mut server = Zdb::start(data.path(), &["--values", &values])?;
    let mut c = server.connect()?;
    assert_eq!(c.call(&[b"SET", b"k", b"v"])?, Reply::bulk(b"k"));
    drop(c);
    assert!(server.stop()?.success());
    Ok(())
}
