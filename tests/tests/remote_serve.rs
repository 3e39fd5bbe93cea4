//! The 0-db client against `chunkstore serve` (the 0-db-compatible server)
//! over TCP and a unix socket: namespace passwords through the AUTH SECURE
//! challenge (server with --admin) and through plain SELECT (server without
//! it, where AUTH is disabled), read-only and full namespaces, wrong password.

use anyhow::Result;
use bytes::Bytes;
use zosfs_store::{ChunkId, ErrorKind};
use zosfs_tests::router::{chunk, open, quick_opts};
use zosfs_tests::zdb::{Reply, Zdb};

/// Make namespace `ns` with password `pw`, private; AUTH first if `admin`.
fn make_namespace(z: &Zdb, admin: Option<&str>, ns: &str, pw: &str) -> Result<()> {
    let mut c = z.connect()?;
    if let Some(a) = admin {
        assert_eq!(c.call(&[b"AUTH", a.as_bytes()])?, Reply::ok());
    }
    assert_eq!(c.call(&[b"NSNEW", ns.as_bytes()])?, Reply::ok());
    assert_eq!(c.call(&[b"NSSET", ns.as_bytes(), b"password", pw.as_bytes()])?, Reply::ok());
    assert_eq!(c.call(&[b"NSSET", ns.as_bytes(), b"public", b"0"])?, Reply::ok());
    Ok(())
}

async fn exercise(url: &str) -> Result<()> {
    let s = open(url, &quick_opts()).await?;
    let cs: Vec<_> = (0..12).map(|i| chunk(500 + i, 90_000)).collect();
    for c in &cs {
        s.put(&c.chunk.id, c.blob.clone()).await?;
        s.put(&c.chunk.id, c.blob.clone()).await?; // identical: nil reply, success
    }
    for c in &cs {
        assert_eq!(s.get(&c.chunk.id).await?.unwrap(), c.blob);
    }
    let mut ids: Vec<ChunkId> = cs.iter().map(|c| c.chunk.id).collect();
    ids.push(ChunkId([0xee; 32]));
    let have = s.has_many(&ids).await?;
    assert_eq!(have.iter().filter(|h| **h).count(), 12);
    assert!(!have[12]);
    assert_eq!(s.get(&ChunkId([0xee; 32])).await?, None);
    assert!(s.delete(&cs[0].chunk.id).await?);
    assert!(!s.delete(&cs[0].chunk.id).await?);
    assert!(!s.has(&cs[0].chunk.id).await?);
    assert_eq!(s.stats().await?.chunks, 11);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_challenge_over_tcp_and_unix_socket() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let sock = tmp.path().join("zdb.sock");
    let z = Zdb::start_with(&tmp.path().join("data"), Some(&sock), &["--admin", "adminpw"])?;
    make_namespace(&z, Some("adminpw"), "imgs", "nspw")?;

    exercise(&format!("zdb://:nspw@{}/imgs", z.addr)).await?;
    // The same namespace over the unix socket sees the same data.
    let u = open(&format!("zdb+unix://:nspw@{}?ns=imgs", sock.display()), &quick_opts()).await?;
    assert_eq!(u.url(), format!("zdb+unix://{}?ns=imgs", sock.display()));
    let c = chunk(501, 90_000);
    assert_eq!(u.get(&c.chunk.id).await?.unwrap(), c.blob);

    let e = open(&format!("zdb://:wrong-pw@{}/imgs", z.addr), &quick_opts()).await.err().unwrap();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(e.to_string().contains("wrong password") && !e.to_string().contains("wrong-pw"));
    let e = open(&format!("zdb://{}/imgs", z.addr), &quick_opts()).await.err().unwrap();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    let e = open(&format!("zdb://{}/nope", z.addr), &quick_opts()).await.err().unwrap();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_select_read_only_and_full_namespaces() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    // No --admin: AUTH is disabled, the password goes with SELECT.
    let z = Zdb::start(&tmp.path().join("data"), &[])?;
    make_namespace(&z, None, "imgs", "nspw")?;
    exercise(&format!("zdb://:nspw@{}/imgs", z.addr)).await?;

    // Public with a password: without it, readable but read-only.
    let mut c = z.connect()?;
    assert_eq!(c.call(&[b"NSSET", b"imgs", b"public", b"1"])?, Reply::ok());
    let ro = open(&format!("zdb://{}/imgs", z.addr), &quick_opts()).await?;
    let k = chunk(503, 90_000);
    assert_eq!(ro.get(&k.chunk.id).await?.unwrap(), k.blob);
    let e = ro.put(&ChunkId([1; 32]), Bytes::from_static(b"x")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(e.to_string().contains("read-only"), "{e}");

    // A size limit: the write that would pass it is refused as NoSpace.
    assert_eq!(c.call(&[b"NSNEW", b"small"])?, Reply::ok());
    assert_eq!(c.call(&[b"NSSET", b"small", b"maxsize", b"100000"])?, Reply::ok());
    let small = open(&format!("zdb://{}/small", z.addr), &quick_opts()).await?;
    let fits = chunk(600, 60_000);
    small.put(&fits.chunk.id, fits.blob.clone()).await?;
    let over = chunk(601, 60_000);
    let e = small.put(&over.chunk.id, over.blob.clone()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace, "{e}");
    assert!(e.to_string().contains(&format!("zdb://{}/small", z.addr)), "{e}");
    Ok(())
}
