//! The router over two `chunkstore serve` replicas (0-db protocol) and one
//! redis-server: a replica stopped mid-run and restarted on its data and
//! port (quorum writes succeed, the queue drains), a replica holding wrong
//! bytes under an id (detected, served from another, repaired), and the
//! queue surviving a kill -9 of the router process.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use zosfs_store::chunk::verify_blob;
use zosfs_store::router::{Router, RouterConfig};
use zosfs_store::{ChunkId, ChunkStore, StoreUrl};
use zosfs_tests::router::{chunk, holds, open, quick_opts, start_redis_on, start_serve_on};
use zosfs_tests::{ChildGuard, bin, free_port, wait_for};

async fn eventually(what: &str, mut cond: impl AsyncFnMut() -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond().await {
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Two serve replicas and one redis-server, each on a fixed port.
struct Replicas {
    dir: tempfile::TempDir,
    ports: [u16; 3],
    _serve_a: ChildGuard,
    serve_b: ChildGuard,
    _redis: ChildGuard,
}

impl Replicas {
    fn start() -> Result<Replicas> {
        let dir = tempfile::tempdir()?;
        let ports = [free_port(), free_port(), free_port()];
        let serve_a = start_serve_on(&dir.path().join("a"), ports[0])?;
        let serve_b = start_serve_on(&dir.path().join("b"), ports[1])?;
        let rdir = dir.path().join("redis");
        std::fs::create_dir_all(&rdir)?;
        let redis = start_redis_on(&rdir, ports[2], &[])?;
        Ok(Replicas { dir, ports, _serve_a: serve_a, serve_b, _redis: redis })
    }

    fn urls(&self) -> [String; 3] {
        [
            format!("zdb://127.0.0.1:{}/default", self.ports[0]),
            format!("zdb://127.0.0.1:{}/default", self.ports[1]),
            format!("redis://127.0.0.1:{}/0", self.ports[2]),
        ]
    }

    fn restart_b(&mut self) -> Result<()> {
        self.serve_b = start_serve_on(&self.dir.path().join("b"), self.ports[1])?;
        Ok(())
    }
}

fn cfg(quorum: Option<usize>, queue: &Path) -> RouterConfig {
    RouterConfig {
        open: quick_opts(),
        quorum,
        queue_dir: Some(queue.to_path_buf()),
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(500),
        ..Default::default()
    }
}

async fn router(urls: &[String], cfg: &RouterConfig) -> Result<Arc<Router>> {
    let parsed = urls.iter().map(|u| u.parse()).collect::<zosfs_store::Result<Vec<StoreUrl>>>()?;
    Ok(Router::open(&parsed, cfg).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_stopped_mid_run_catches_up_from_the_queue() -> Result<()> {
    let mut reps = Replicas::start()?;
    let urls = reps.urls();
    let qdir = tempfile::tempdir()?;
    let r = router(&urls, &cfg(Some(2), qdir.path())).await?;

    // A writer keeps putting while replica b is killed under it.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (r, stop) = (r.clone(), stop.clone());
        tokio::spawn(async move {
            let mut done = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) || i < 40 {
                let c = chunk(1000 + i, 64 * 1024);
                r.put(&c.chunk.id, c.blob.clone()).await?;
                done.push(c);
                i += 1;
            }
            anyhow::Ok(done)
        })
    };
    let sb = open(&urls[1], &quick_opts()).await?;
    eventually("some writes on b", async || {
        sb.stats().await.map(|s| s.chunks >= 10).unwrap_or(false)
    })
    .await?;
    reps.serve_b.kill9();
    eventually("writes queued for b", async || {
        r.queue_pending().await.map(|p| p.iter().any(|p| p.ids.len() >= 10)).unwrap_or(false)
    })
    .await?;
    stop.store(true, Ordering::SeqCst);
    let written = writer.await??;
    let pending = r.queue_pending().await?;
    assert_eq!(pending.len(), 1, "only b misses writes: {pending:?}");
    assert_eq!(pending[0].target, urls[1]);

    // b comes back on the same data and port; the queue drains into it.
    reps.restart_b()?;
    eventually("the queue to drain", async || {
        r.queue_pending().await.map(|p| p.is_empty()).unwrap_or(false)
    })
    .await?;
    let stores = [open(&urls[0], &quick_opts()).await?, sb, open(&urls[2], &quick_opts()).await?];
    for c in &written {
        for s in &stores {
            assert!(holds(&**s, c).await, "{} lacks chunk {}", s.url(), c.chunk.id);
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_bytes_on_a_replica_are_detected_served_around_and_repaired() -> Result<()> {
    let reps = Replicas::start()?;
    let urls = reps.urls();
    let qdir = tempfile::tempdir()?;
    let r = router(&urls, &cfg(None, qdir.path())).await?;
    let cs: Vec<_> = (0..8).map(|i| chunk(2000 + i, 200_000)).collect();
    for c in &cs {
        r.put(&c.chunk.id, c.blob.clone()).await?;
    }
    // Replica a (asked first) gets other chunks' bytes under these ids.
    let sa = open(&urls[0], &quick_opts()).await?;
    for (k, c) in cs.iter().enumerate() {
        let other = &cs[(k + 1) % cs.len()];
        sa.put(&c.chunk.id, other.blob.clone()).await?;
        assert!(!holds(&*sa, c).await);
    }
    for c in &cs {
        assert_eq!(r.get(&c.chunk.id).await?.unwrap(), c.blob);
    }
    r.sync().await?;
    for c in &cs {
        assert!(holds(&*sa, c).await, "chunk {} not repaired on a", c.chunk.id);
    }
    assert!(r.queue_pending().await?.is_empty());
    Ok(())
}

fn store_args(urls: &[String], queue: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for u in urls {
        v.extend(["--store".to_string(), u.clone()]);
    }
    v.extend(["--queue-dir".to_string(), queue.display().to_string()]);
    v.extend(["--quorum".to_string(), "2".to_string()]);
    v.extend(["--timeout-ms".to_string(), "1000".to_string()]);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_survives_kill9_of_the_router_process() -> Result<()> {
    let mut reps = Replicas::start()?;
    let urls = reps.urls();
    let qdir = tempfile::tempdir()?;
    let args = store_args(&urls, qdir.path());
    reps.serve_b.kill9();

    let mut cmd = Command::new(bin("chunkstore"));
    cmd.arg("put").args(&args).args(["--chunk-size", "65536", "-"]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
    let mut put = ChildGuard::spawn(cmd, "chunkstore put")?;
    let mut stdin = put.child.stdin.take().unwrap();
    let stdout = put.child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            let _ = tx.send(line);
        }
    });
    let data: Vec<u8> =
        (0..6 * 65536u32).map(|i| (i.wrapping_mul(2246822519) >> 11) as u8).collect();
    stdin.write_all(&data)?;
    stdin.flush()?;
    let mut acked: Vec<ChunkId> = Vec::new();
    wait_for("6 acknowledged chunks", Duration::from_secs(120), || {
        while let Ok(line) = rx.try_recv() {
            acked.push(line.split_whitespace().nth(2).context("put output")?.parse()?);
        }
        Ok((acked.len() == 6).then_some(()))
    })?;
    // Killed mid-run: stdin still open, more input expected.
    put.kill9();
    drop(stdin);

    reps.restart_b()?;
    let out = Command::new(bin("chunkstore")).arg("repair").args(&args).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "repair: {text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("queue: 6 written, 0 failed"), "{text}");
    let sb = open(&urls[1], &quick_opts()).await?;
    for id in &acked {
        let blob = sb.get(id).await?.with_context(|| format!("b lacks acknowledged {id}"))?;
        verify_blob(id, &blob)?;
    }
    // And `get` through a router reads them from any replica.
    let out =
        Command::new(bin("chunkstore")).arg("get").args(&args).arg(acked[0].to_hex()).output()?;
    assert!(out.status.success());
    assert_eq!(ChunkId::of_blob(&out.stdout), acked[0]);
    Ok(())
}
