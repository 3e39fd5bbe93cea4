//! `chunkstore bench --only replicated`: put throughput of 1 MiB chunks
//! through the router to a local `chunkstore serve` (0-db protocol), and,
//! as the peer in the same run, raw `SET` of the same payloads to
//! redis-server with the same concurrency over the same client library.
//!
//! Both servers are started here (on free ports, in a temporary directory)
//! unless `--zdb` / `--redis` name running ones; serve keeps its values in
//! a `local://` store (the node's store), redis-server keeps everything in
//! memory. Payloads are encoded before timing starts. Rounds alternate
//! between the two sides (and which goes first), so drifting load on a
//! shared machine hits both alike; round 0 is an untimed warm-up.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use zosfs_store::chunk::{EncodedChunk, encode_with};
use zosfs_store::router::{RouterConfig, open_urls};
use zosfs_store::url::{Backend, NetAddr};
use zosfs_store::{ChunkStore, StoreUrl};

#[derive(clap::Args, Debug)]
pub struct ReplicatedArgs {
    /// A running 0-db-compatible server to measure (default: start
    /// `chunkstore serve` in a temporary directory).
    #[arg(long, value_name = "URL")]
    pub zdb: Option<String>,
    /// A running redis-server as the peer (default: start one).
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// Chunks per round.
    #[arg(long, default_value_t = 512)]
    pub replicated_chunks: usize,
    /// Puts in flight (connections) on both sides.
    #[arg(long, default_value_t = 8)]
    pub replicated_concurrency: usize,
    /// Plaintext bytes per chunk.
    #[arg(long, default_value_t = 1 << 20)]
    pub replicated_chunk_size: usize,
    /// Timed rounds per side (the best is reported).
    #[arg(long, default_value_t = 5)]
    pub replicated_rounds: usize,
    /// Value store of the started `chunkstore serve` (default: a local://
    /// store in the temporary directory).
    #[arg(long, value_name = "URL")]
    pub serve_values: Option<String>,
}

/// A server process killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn start_serve(dir: &std::path::Path, values: &str) -> Result<(Server, String)> {
    let exe = std::env::current_exe().context("locate the chunkstore binary")?;
    let mut child = Command::new(exe)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir)
        .args(["--values", values])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("start chunkstore serve")?;
    let stderr = child.stderr.take().expect("piped");
    let server = Server(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            if let Some(a) = line.strip_prefix("chunkstore serve: listening on ") {
                let _ = tx.send(a.to_string());
            } else {
                eprintln!("[serve] {line}");
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .context("chunkstore serve did not report its address (is `serve` built in?)")?;
    Ok((server, format!("zdb://{addr}/default")))
}

fn start_redis(dir: &std::path::Path) -> Result<(Server, String)> {
    let port = free_port()?;
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .context("start redis-server (Debian package redis-server)")?;
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("redis-server did not listen on port {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((server, format!("redis://127.0.0.1:{port}/0")))
}

/// Incompressible chunks, distinct per round (a re-put of an existing id
/// would measure the dedup path, not writes).
fn payloads(round: usize, n: usize, size: usize) -> Result<Vec<EncodedChunk>> {
    let mut out = Vec::with_capacity(n);
    let mut x = (round as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for _ in 0..n {
        let mut plain = vec![0u8; size];
        for w in plain.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes()[..w.len()]);
        }
        out.push(encode_with(&plain, 0)?);
    }
    Ok(out)
}

/// Split `chunks` over `conc` workers; each runs `put` on its share in order.
async fn fan_out<P, Fut>(chunks: Arc<Vec<EncodedChunk>>, conc: usize, put: P) -> Result<()>
where
    P: Fn(usize, EncodedChunk) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let mut set = tokio::task::JoinSet::new();
    for w in 0..conc {
        let (chunks, put) = (chunks.clone(), put.clone());
        set.spawn(async move {
            for c in chunks.iter().skip(w).step_by(conc) {
                put(w, c.clone()).await?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}

pub async fn run(a: &ReplicatedArgs) -> Result<()> {
    if a.replicated_concurrency == 0 || a.replicated_chunks == 0 || a.replicated_rounds == 0 {
        bail!(
            "--replicated-chunks, --replicated-concurrency and --replicated-rounds must be above 0"
        );
    }
    let tmp = tempfile::tempdir()?;
    let (_zdb, zdb_url) = match &a.zdb {
        Some(u) => (None, u.clone()),
        None => {
            let d = tmp.path().join("serve");
            std::fs::create_dir_all(&d)?;
            let values = match &a.serve_values {
                Some(v) => v.clone(),
                None => format!("local://{}", tmp.path().join("values").display()),
            };
            let (s, u) = start_serve(&d, &values)?;
            (Some(s), u)
        }
    };
    let (_redis, redis_url) = match &a.redis {
        Some(u) => (None, u.clone()),
        None => {
            let (s, u) = start_redis(tmp.path())?;
            (Some(s), u)
        }
    };
    let conc = a.replicated_concurrency;

    // Replicated put: the router (quorum, queue-free write path) over the
    // zdb client, one connection per put in flight.
    let mut cfg = RouterConfig::default();
    cfg.open.pool_size = conc;
    let router = open_urls(std::slice::from_ref(&zdb_url), &cfg).await?;
    // Peer: plain SET with the redis crate, one connection per worker.
    let client = redis::Client::open(redis_conn_info(&redis_url)?)?;
    let rcfg = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut conns = Vec::new();
    for _ in 0..conc {
        conns.push(client.get_multiplexed_async_connection_with_config(&rcfg).await?);
    }
    let conns = Arc::new(conns);

    let (mut best_zdb, mut best_redis) = (0f64, 0f64);
    for round in 0..=a.replicated_rounds {
        let serve_first = round % 2 == 0;
        for side in 0..2 {
            let to_serve = (side == 0) == serve_first;
            // Fresh payloads per side and round: a re-put would only measure
            // the identical-value path.
            let seed = round * 2 + usize::from(to_serve);
            let chunks = Arc::new(payloads(seed, a.replicated_chunks, a.replicated_chunk_size)?);
            let bytes: usize = chunks.iter().map(|c| c.blob.len()).sum();
            let t = Instant::now();
            if to_serve {
                let r = router.clone();
                fan_out(chunks, conc, move |_, c| {
                    let r = r.clone();
                    async move { Ok(r.put(&c.chunk.id, c.blob).await?) }
                })
                .await
                .with_context(|| format!("chunkstore serve, round {round}"))?;
            } else {
                let conns = conns.clone();
                fan_out(chunks, conc, move |w, c| redis_set(conns[w].clone(), c))
                    .await
                    .with_context(|| format!("redis-server, round {round}"))?;
            }
            let mbs = bytes as f64 / 1e6 / t.elapsed().as_secs_f64();
            if round > 0 {
                let best = if to_serve { &mut best_zdb } else { &mut best_redis };
                *best = best.max(mbs);
            }
        }
    }

    let mib = a.replicated_chunk_size as f64 / (1 << 20) as f64;
    crate::outln!(
        "replicated put, {} x {mib:.2} MiB chunks, {conc} in flight, best of {} alternating rounds:",
        a.replicated_chunks,
        a.replicated_rounds
    );
    crate::outln!("  router -> chunkstore serve ({zdb_url}): {best_zdb:8.1} MB/s");
    crate::outln!("  redis-server SET ({redis_url}): {best_redis:8.1} MB/s");
    crate::outln!("  ratio serve/redis: {:.2} (target >= 0.80)", best_zdb / best_redis);
    Ok(())
}

async fn redis_set(mut con: redis::aio::MultiplexedConnection, c: EncodedChunk) -> Result<()> {
    let blob: Bytes = c.blob;
    let _: () = redis::cmd("SET")
        .arg(c.chunk.id.as_bytes().as_slice())
        .arg(&blob[..])
        .query_async(&mut con)
        .await?;
    Ok(())
}

/// A redis crate connection target from our own URL syntax (TCP or unix).
fn redis_conn_info(url: &str) -> Result<redis::ConnectionInfo> {
    use redis::IntoConnectionInfo;
    let u: StoreUrl = url.parse()?;
    let s = match &u.backend {
        Backend::Redis { addr: NetAddr::Unix(p), db, .. } => {
            format!("redis+unix://{}?db={db}", p.display())
        }
        Backend::Redis { addr, db, .. } => format!("redis://{addr}/{db}"),
        _ => bail!("--redis wants a redis:// URL"),
    };
    let info = s.into_connection_info()?;
    Ok(match &u.backend {
        Backend::Redis { password: Some(pw), .. } => {
            let r = info.redis_settings().clone().set_password(pw.expose());
            info.set_redis_settings(r)
        }
        _ => info,
    })
}
