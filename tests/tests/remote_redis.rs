//! The network-store client against a real Debian redis-server, and its
//! failure modes: wrong password, unreachable host, silent peer, oversize
//! value, server restart, bad URLs.

use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use zosfs_store::chunk::MAX_BLOB;
use zosfs_store::router::{RouterConfig, open_urls};
use zosfs_store::{ChunkId, ErrorKind};
use zosfs_tests::router::{chunk, open, quick_opts, start_redis_on, start_redis_with};
use zosfs_tests::{free_port, start_redis};

/// Hang guard for calls that must fail on their own timeout (not a
/// performance assertion: the bound is many times the configured timeout).
async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f).await.expect("call hung past its timeout")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_has_delete_against_redis_server() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (_redis, port) = start_redis(dir.path())?;
    let s = open(&format!("redis://127.0.0.1:{port}/2"), &quick_opts()).await?;
    assert_eq!(s.url(), format!("redis://127.0.0.1:{port}/2"));

    let chunks: Vec<_> = (0..40).map(|i| chunk(i, 70_000)).collect();
    for c in &chunks {
        s.put(&c.chunk.id, c.blob.clone()).await?;
        // Re-put is idempotent (SET NX).
        s.put(&c.chunk.id, c.blob.clone()).await?;
    }
    for c in &chunks {
        assert_eq!(s.get(&c.chunk.id).await?.unwrap(), c.blob);
        assert!(s.has(&c.chunk.id).await?);
    }
    let missing = ChunkId([7; 32]);
    assert_eq!(s.get(&missing).await?, None);
    assert!(!s.has(&missing).await?);
    let mut ids: Vec<ChunkId> = chunks.iter().map(|c| c.chunk.id).collect();
    ids.push(missing);
    let present = s.has_many(&ids).await?;
    assert_eq!(present.iter().filter(|p| **p).count(), 40);
    assert!(!present[40]);
    assert_eq!(s.stats().await?.chunks, 40);

    // The database number is honoured: db 0 sees nothing.
    let db0 = open(&format!("redis://127.0.0.1:{port}/0"), &quick_opts()).await?;
    assert!(!db0.has(&chunks[0].chunk.id).await?);

    assert!(s.delete(&chunks[0].chunk.id).await?);
    assert!(!s.delete(&chunks[0].chunk.id).await?);
    assert_eq!(s.get(&chunks[0].chunk.id).await?, None);

    // Many concurrent requests share the pool (4 connections).
    let mut set = tokio::task::JoinSet::new();
    for c in chunks[1..].iter().cloned() {
        let s = s.clone();
        set.spawn(async move { (s.get(&c.chunk.id).await, c) });
    }
    while let Some(r) = set.join_next().await {
        let (got, c) = r?;
        assert_eq!(got?.unwrap(), c.blob);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_protected_redis() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (_redis, port) = start_redis_with(dir.path(), &["--requirepass", "s3cret-pw"])?;
    let good = open(&format!("redis://:s3cret-pw@127.0.0.1:{port}/1"), &quick_opts()).await?;
    let c = chunk(1, 1000);
    good.put(&c.chunk.id, c.blob.clone()).await?;
    assert_eq!(good.get(&c.chunk.id).await?.unwrap(), c.blob);

    // Wrong password: refused at open, named, never retried as if transient.
    let e = bounded(open(&format!("redis://:not-the-pw@127.0.0.1:{port}/1"), &quick_opts()))
        .await
        .err()
        .expect("wrong password must fail");
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    let msg = e.chain();
    assert!(msg.contains(&format!("redis://127.0.0.1:{port}/1")), "{msg}");
    assert!(msg.contains("wrong password"), "{msg}");
    assert!(!msg.contains("not-the-pw"), "password leaked: {msg}");

    // No password at all.
    let e = bounded(open(&format!("redis://127.0.0.1:{port}/1"), &quick_opts()))
        .await
        .err()
        .expect("missing password must fail");
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(e.chain().contains("needs a password"), "{}", e.chain());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_is_survived() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let mut redis = start_redis_on(dir.path(), port, &[])?;
    let url = format!("redis://127.0.0.1:{port}/0");
    let s = open(&url, &quick_opts()).await?;
    let c = chunk(2, 5000);
    s.put(&c.chunk.id, c.blob.clone()).await?;

    redis.kill9();
    let e = bounded(s.get(&c.chunk.id)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.chain().contains(&url), "{}", e.chain());

    // Same port again (empty: no persistence): the pool reconnects.
    let _redis = start_redis_on(dir.path(), port, &[])?;
    assert_eq!(s.get(&c.chunk.id).await?, None);
    s.put(&c.chunk.id, c.blob.clone()).await?;
    assert_eq!(s.get(&c.chunk.id).await?.unwrap(), c.blob);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_value_is_refused_before_sending() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (_redis, port) = start_redis(dir.path())?;
    let url = format!("redis://127.0.0.1:{port}/0");
    let s = open(&url, &quick_opts()).await?;
    let id = ChunkId([1; 32]);
    let e = s.put(&id, Bytes::from(vec![0u8; MAX_BLOB + 1])).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains(&url), "{e}");
    assert!(e.to_string().contains("8388609 bytes"), "{e}");
    assert!(!s.has(&id).await?);
    // Exactly 8 MiB is the largest value allowed, and round-trips.
    let max = Bytes::from(vec![0x78u8; MAX_BLOB]);
    s.put(&id, max.clone()).await?;
    assert_eq!(s.get(&id).await?.unwrap(), max);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_host_fails_clearly() -> Result<()> {
    // Nothing listens on this port: connection refused.
    let port = free_port();
    let url = format!("zdb://127.0.0.1:{port}/ns");
    // Opening does not fail (a replica may come back later)...
    let s = open(&url, &quick_opts()).await?;
    // ...each request does, naming the store and the cause.
    let e = bounded(s.get(&ChunkId([0; 32]))).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    let msg = e.chain();
    assert!(msg.contains(&url) && msg.contains("cannot connect"), "{msg}");
    assert!(msg.contains("after 2 attempts"), "{msg}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_times_out() -> Result<()> {
    // A peer that accepts and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let _hold = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in listener.incoming() {
            conns.push(c);
        }
    });
    let opts = zosfs_store::OpenOptions { timeout: Duration::from_millis(300), ..quick_opts() };
    let url = format!("redis://:pw@127.0.0.1:{port}/0");
    let s = open(&url, &opts).await?;
    let e = bounded(s.has(&ChunkId([0; 32]))).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    let msg = e.chain();
    assert!(msg.contains("no reply within 300ms"), "{msg}");
    assert!(msg.contains(&format!("redis://127.0.0.1:{port}/0")), "{msg}");
    assert!(!msg.contains("pw@"), "{msg}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_are_refused_by_the_router() -> Result<()> {
    let cfg = RouterConfig::default();
    for (url, want) in [
        ("ftp://host/x", "unknown scheme \"ftp\""),
        ("80-10=dir:///tmp/x", "is empty (low > high)"),
        ("0g-ff=dir:///tmp/x", "is not hex"),
        ("zdb://:topsecret@host/ns", "want host:port"),
    ] {
        let e = open_urls(&[url.to_string()], &cfg).await.err().expect(url);
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{url}: {e}");
        let msg = e.to_string();
        assert!(msg.contains(want), "{url}: {msg}");
        assert!(!msg.contains("topsecret"), "{msg}");
    }
    Ok(())
}
