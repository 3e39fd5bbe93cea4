//! The router over a local dir:// store and real redis-server replicas:
//! replication, a replica killed and restarted (queue drains), corrupt and
//! missing copies repaired, a stalled replica hedged around, and the queue
//! surviving a kill -9 of the router process (`chunkstore put` / `repair`).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use zosfs_store::chunk::verify_blob;
use zosfs_store::router::{Router, RouterConfig};
use zosfs_store::{ChunkId, ChunkStore, ErrorKind, StoreUrl};
use zosfs_tests::router::{chunk, holds, open, quick_opts, start_redis_on};
use zosfs_tests::{ChildGuard, bin, free_port, wait_for};

/// Redis that keeps its data across a kill -9 and restart.
const DURABLE: &[&str] = &["--appendonly", "yes", "--appendfsync", "always"];

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

fn router_cfg(queue: Option<&Path>) -> RouterConfig {
    RouterConfig {
        open: quick_opts(),
        queue_dir: queue.map(Path::to_path_buf),
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
async fn replica_down_then_back_drains_the_queue() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&da)?;
    std::fs::create_dir_all(&db)?;
    let (pa, pb) = (free_port(), free_port());
    let _a = start_redis_on(&da, pa, DURABLE)?;
    let mut b = start_redis_on(&db, pb, DURABLE)?;
    let local = format!("dir://{}", tmp.path().join("local").display());
    let (ua, ub) = (format!("redis://127.0.0.1:{pa}/0"), format!("redis://127.0.0.1:{pb}/0"));
    let qdir = tmp.path().join("queue");
    let r = router(&[local.clone(), ua.clone(), ub.clone()], &router_cfg(Some(&qdir))).await?;
    let (sa, sb) = (open(&ua, &quick_opts()).await?, open(&ub, &quick_opts()).await?);

    let chunks: Vec<_> = (0..20).map(|i| chunk(i, 100_000)).collect();
    for c in &chunks[..10] {
        r.put(&c.chunk.id, c.blob.clone()).await?;
        assert!(holds(&*sa, c).await && holds(&*sb, c).await);
    }

    b.kill9();
    for c in &chunks[10..] {
        // Default quorum is all three: met only thanks to the queue.
        r.put(&c.chunk.id, c.blob.clone()).await?;
        assert_eq!(r.get(&c.chunk.id).await?.unwrap(), c.blob);
    }
    let pending = r.queue_pending().await?;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].target, ub);
    let mut want: Vec<ChunkId> = chunks[10..].iter().map(|c| c.chunk.id).collect();
    want.sort();
    assert_eq!(pending[0].ids, want);

    // Back on the same port and data: the background drainer catches up.
    let _b = start_redis_on(&db, pb, DURABLE)?;
    eventually("the queue to drain", async || {
        r.queue_pending().await.map(|p| p.is_empty()).unwrap_or(false)
    })
    .await?;
    for c in &chunks {
        assert!(holds(&*sb, c).await, "replica b lacks chunk {}", c.chunk.id);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_missing_copies_are_detected_and_repaired() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (pa, pb) = (free_port(), free_port());
    let _a = start_redis_on(tmp.path(), pa, &[])?;
    let _b = start_redis_on(tmp.path(), pb, &[])?;
    let (ua, ub) = (format!("redis://127.0.0.1:{pa}/0"), format!("redis://127.0.0.1:{pb}/0"));
    let r = router(&[ua.clone(), ub.clone()], &router_cfg(None)).await?;
    let (sa, sb) = (open(&ua, &quick_opts()).await?, open(&ub, &quick_opts()).await?);

    let c1 = chunk(100, 50_000);
    let c2 = chunk(101, 50_000);
    r.put(&c1.chunk.id, c1.blob.clone()).await?;
    r.put(&c2.chunk.id, c2.blob.clone()).await?;

    // Wrong bytes under c1's id on a (asked first), c2 gone from a.
    let mut rotten = c1.blob.to_vec();
    rotten[100] ^= 0x40;
    sa.delete(&c1.chunk.id).await?;
    sa.put(&c1.chunk.id, Bytes::from(rotten)).await?;
    sa.delete(&c2.chunk.id).await?;

    assert_eq!(r.get(&c1.chunk.id).await?.unwrap(), c1.blob);
    assert_eq!(r.get(&c2.chunk.id).await?.unwrap(), c2.blob);
    r.sync().await?; // waits for the read repairs
    assert!(holds(&*sa, &c1).await, "corrupt copy on a not repaired");
    assert!(holds(&*sa, &c2).await, "missing copy on a not repaired");

    // Every copy corrupt: an error, never bad bytes.
    for s in [&sa, &sb] {
        s.delete(&c2.chunk.id).await?;
        s.put(&c2.chunk.id, Bytes::from_static(b"garbage")).await?;
    }
    let e = r.get(&c2.chunk.id).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains(&ua) && e.to_string().contains(&ub), "{e}");
    Ok(())
}

/// SIGCONT on drop, so a failing test never leaves a server stopped.
struct Stopped(u32);
impl Stopped {
    fn new(pid: u32) -> Result<Stopped> {
        let st = Command::new("kill").args(["-STOP", &pid.to_string()]).status()?;
        anyhow::ensure!(st.success(), "kill -STOP {pid}");
        Ok(Stopped(pid))
    }
}
impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0.to_string()]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_replica_is_hedged_around() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (pa, pb) = (free_port(), free_port());
    let a = start_redis_on(tmp.path(), pa, &[])?;
    let _b = start_redis_on(tmp.path(), pb, &[])?;
    let (ua, ub) = (format!("redis://127.0.0.1:{pa}/0"), format!("redis://127.0.0.1:{pb}/0"));
    // A request to a stalled server would wait 120 s: only the hedge (after
    // 20 ms) can answer in time.
    let mut cfg = router_cfg(None);
    cfg.open.timeout = Duration::from_secs(120);
    cfg.open.attempts = 1;
    cfg.hedge_delay = Duration::from_millis(20);
    let r = router(&[ua, ub], &cfg).await?;
    let c = chunk(7, 30_000);
    r.put(&c.chunk.id, c.blob.clone()).await?;

    let _stopped = Stopped::new(a.pid())?;
    let got = tokio::time::timeout(Duration::from_secs(60), r.get(&c.chunk.id))
        .await
        .context("read waited for the stalled replica: no hedge")??;
    assert_eq!(got.unwrap(), c.blob);
    Ok(())
}

/// `chunkstore --store ... --queue-dir ...` arguments.
fn store_args(urls: &[&str], queue: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for u in urls {
        v.push("--store".to_string());
        v.push(u.to_string());
    }
    v.extend(["--queue-dir".to_string(), queue.display().to_string()]);
    v.extend(["--timeout-ms".to_string(), "1000".to_string()]);
    v
}

fn count_queue_files(q: &Path) -> usize {
    let mut n = 0;
    for t in std::fs::read_dir(q).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(t.path()).into_iter().flatten().flatten() {
            let name = f.file_name();
            let name = name.to_string_lossy();
            if name.len() == 64 && !name.starts_with('.') {
                n += 1;
            }
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_survives_kill9_of_the_router_process() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&da)?;
    std::fs::create_dir_all(&db)?;
    let (pa, pb) = (free_port(), free_port());
    let _a = start_redis_on(&da, pa, DURABLE)?;
    let local = format!("dir://{}", tmp.path().join("local").display());
    let (ua, ub) = (format!("redis://127.0.0.1:{pa}/0"), format!("redis://127.0.0.1:{pb}/0"));
    let qdir = tmp.path().join("queue");
    let args = store_args(&[&local, &ua, &ub], &qdir);

    // b is down. `chunkstore put` reads chunks from a pipe we keep open, so
    // it is still running (mid-run) when it gets killed.
    let mut cmd = Command::new(bin("chunkstore"));
    cmd.arg("put").args(&args).args(["--chunk-size", "65536", "-"]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
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
        (0..8 * 65536u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    stdin.write_all(&data)?;
    stdin.flush()?;
    // Each line is printed after its put was acknowledged.
    let mut acked: Vec<ChunkId> = Vec::new();
    wait_for("8 acknowledged chunks", Duration::from_secs(120), || {
        while let Ok(line) = rx.try_recv() {
            let id = line.split_whitespace().nth(2).context("put output")?.parse()?;
            acked.push(id);
        }
        Ok((acked.len() == 8).then_some(()))
    })?;
    assert_eq!(count_queue_files(&qdir), 8);
    put.kill9();
    drop(stdin);

    // b comes back; a new router process drains the queue.
    let _b = start_redis_on(&db, pb, DURABLE)?;
    let out = Command::new(bin("chunkstore")).arg("repair").args(&args).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "repair failed: {text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("queue: 8 written, 0 failed"), "{text}");
    assert!(text.contains("0 remaining"), "{text}");
    assert_eq!(count_queue_files(&qdir), 0);
    let sb = open(&ub, &quick_opts()).await?;
    for id in &acked {
        let blob = sb.get(id).await?.with_context(|| format!("b lacks acknowledged {id}"))?;
        verify_blob(id, &blob)?;
    }

    // Re-replication from the local store: one copy lost on a, one rotten.
    let sa = open(&ua, &quick_opts()).await?;
    sa.delete(&acked[0]).await?;
    sa.delete(&acked[1]).await?;
    sa.put(&acked[1], Bytes::from_static(b"rotten")).await?;
    let out = Command::new(bin("chunkstore"))
        .arg("repair")
        .args(&args)
        .args(["--all-local", "--verify"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "repair failed: {text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("replicate: 8 ids: 22 copies present, 1 written, 1 repaired"), "{text}");
    for id in &acked[..2] {
        let blob = sa.get(id).await?.context("a not repaired")?;
        verify_blob(id, &blob)?;
    }
    Ok(())
}
