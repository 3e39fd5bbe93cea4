//! `chunkstore bench`: benchmarks that print figures and ratios against a
//! peer measured in the same run. Parts are independent (`--only`):
//!
//! * `local`: the local store with the io_uring engine vs the pread/pwrite
//!   engine: put and get MB/s of 1 MiB chunks encoded with the codec
//!   (compressible and random data, concurrent puts), the uring/sync ratio,
//!   index bytes per chunk and the open time of a big store;
//! * `lazy`: a cold sequential LazyFile fill from a store with injected
//!   fetch latency, against one-fetch-at-a-time and the local ceilings
//!   (in `bench_lazy`);
//! * `replicated`: puts of 1 MiB chunks through the router to a local
//!   `chunkstore serve`, against redis-server SET of the same payloads
//!   with the same concurrency (in `bench_replicated`);
//! * `shared`: a process that does not own the node store reading it
//!   through the owner's socket, against the owner reading it (in
//!   `bench_shared`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use zosfs_store::chunk::{EncodedChunk, decode, encode};
use zosfs_store::engine::EngineChoice;
use zosfs_store::local::LocalStore;
use zosfs_store::{ChunkId, ChunkStore, OpenOptions};

use super::stat::human;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The local store: engines, codec data, index, open time.
    Local,
    /// LazyFile cold fill with injected fetch latency.
    Lazy,
    /// Router puts to chunkstore serve vs redis-server SET.
    Replicated,
    /// Node store read by a client process vs by its owner.
    Shared,
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Parts to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Part>,
    /// Directory for the benchmark stores (a temporary directory is made
    /// inside and removed afterwards; default: the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// 1 MiB chunks per data set (compressible and random).
    #[arg(long, default_value_t = 256)]
    pub chunks: usize,
    /// Operations in flight.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Records of the big store whose open time and index size are measured.
    #[arg(long, default_value_t = 1_000_000)]
    pub open_records: usize,
    /// Blob size of those records, bytes.
    #[arg(long, default_value_t = 64)]
    pub open_record_size: usize,
    /// Rounds per engine, run in alternating order (ABBA...); the best of
    /// each engine is shown, so load from other processes hurts both alike.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    #[command(flatten)]
    pub lazy: super::bench_lazy::LazyBenchArgs,
    #[command(flatten)]
    pub replicated: super::bench_replicated::ReplicatedArgs,
    #[command(flatten)]
    pub shared: super::bench_shared::SharedArgs,
}

pub async fn bench(a: BenchArgs) -> Result<ExitCode> {
    let parts = if a.only.is_empty() {
        vec![Part::Local, Part::Lazy, Part::Replicated, Part::Shared]
    } else {
        a.only.clone()
    };
    let base = a.dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("zosfs-bench.")
        .tempdir_in(&base)
        .with_context(|| format!("make a temp dir in {}", base.display()))?;
    for p in parts {
        match p {
            Part::Local => local(&a, tmp.path()).await?,
            Part::Lazy => super::bench_lazy::run(&a.lazy, tmp.path()).await?,
            Part::Replicated => super::bench_replicated::run(&a.replicated).await?,
            Part::Shared => {
                super::bench_shared::run(&a.shared, a.concurrency, a.rounds, tmp.path()).await?
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) const MIB: f64 = 1024.0 * 1024.0;
const ENGINES: [(EngineChoice, &str); 2] =
    [(EngineChoice::Uring, "io_uring"), (EngineChoice::Sync, "pread/pwrite")];

/// One encoded data set.
struct DataSet {
    name: &'static str,
    plain: Vec<Bytes>,
    blobs: Vec<(ChunkId, Bytes)>,
    encode_secs: f64,
    /// Decoding every blob back (AES-GCM open, decompression, BLAKE3 check).
    decode_secs: f64,
}

impl DataSet {
    fn plain_bytes(&self) -> u64 {
        self.plain.iter().map(|p| p.len() as u64).sum()
    }

    fn blob_bytes(&self) -> u64 {
        self.blobs.iter().map(|(_, b)| b.len() as u64).sum()
    }
}

#[derive(Default, Clone, Copy)]
struct Figures {
    put: f64,
    encode_put: f64,
    get_cold: f64,
    get_warm: f64,
}

impl Figures {
    fn max(self, o: Figures) -> Figures {
        Figures {
            put: self.put.max(o.put),
            encode_put: self.encode_put.max(o.encode_put),
            get_cold: self.get_cold.max(o.get_cold),
            get_warm: self.get_warm.max(o.get_warm),
        }
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

async fn local(a: &BenchArgs, dir: &Path) -> Result<()> {
    crate::outln!(
        "== local store: 1 MiB chunks, {} in flight, fdatasync per put (group commit)",
        a.concurrency
    );
    let cpus = cpus();
    crate::outln!(
        "   {cpus} CPUs, load average {}; best of {} rounds per engine, engines alternating",
        load_average(),
        a.rounds.max(1)
    );
    crate::outln!("   figures in MB/s of plaintext (blob MB/s in brackets)");
    for (kind, gen_fn) in
        [("compressible", text_chunk as fn(u64) -> Vec<u8>), ("random", random_chunk)]
    {
        let set = make_set(kind, a.chunks, gen_fn).await?;
        crate::outln!(
            "-- {kind}: {} chunks, {} plaintext -> {} blobs (ratio {:.2}); encode {:.0} MB/s, decode {:.0} MB/s on {cpus} CPUs",
            a.chunks,
            human(set.plain_bytes()),
            human(set.blob_bytes()),
            set.plain_bytes() as f64 / set.blob_bytes() as f64,
            set.plain_bytes() as f64 / MIB / set.encode_secs,
            set.plain_bytes() as f64 / MIB / set.decode_secs
        );
        let mut best = [Figures::default(); 2];
        for round in 0..a.rounds.max(1) {
            for k in 0..2 {
                let e = if round % 2 == 0 { k } else { 1 - k };
                let f = run_engine(a, dir, &set, ENGINES[e].0).await?;
                best[e] = best[e].max(f);
            }
        }
        let mut figs = Vec::new();
        for (i, (_, name)) in ENGINES.iter().enumerate() {
            let f = best[i];
            let ratio = set.plain_bytes() as f64 / set.blob_bytes() as f64;
            crate::outln!(
                "   {name:<13} put {:>7.0} [{:>6.0}]   encode+put {:>6.0}   get cold {:>7.0} [{:>6.0}]   get warm {:>7.0} [{:>6.0}]",
                f.put,
                f.put / ratio,
                f.encode_put,
                f.get_cold,
                f.get_cold / ratio,
                f.get_warm,
                f.get_warm / ratio
            );
            figs.push(f);
        }
        let (u, s) = (figs[0], figs[1]);
        crate::outln!(
            "   uring/sync    put {:.2}x   encode+put {:.2}x   get cold {:.2}x   get warm {:.2}x",
            u.put / s.put,
            u.encode_put / s.encode_put,
            u.get_cold / s.get_cold,
            u.get_warm / s.get_warm
        );
    }
    if a.open_records > 0 {
        open_time(a, dir).await?;
    }
    Ok(())
}

async fn make_set(name: &'static str, n: usize, f: fn(u64) -> Vec<u8>) -> Result<DataSet> {
    let plain: Vec<Bytes> = (0..n as u64).map(|i| Bytes::from(f(i))).collect();
    let t = Instant::now();
    let encoded = encode_all(&plain).await?;
    let encode_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    decode_all(&plain, &encoded).await?;
    let decode_secs = t.elapsed().as_secs_f64();
    let blobs = encoded.into_iter().map(|e| (e.chunk.id, e.blob)).collect();
    Ok(DataSet { name, plain, blobs, encode_secs, decode_secs })
}

fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Encode on the blocking pool, one task per CPU's worth in flight.
async fn encode_all(plain: &[Bytes]) -> Result<Vec<EncodedChunk>> {
    let out: Vec<Result<EncodedChunk>> = futures::stream::iter(plain.iter().cloned())
        .map(|p| async move { Ok(tokio::task::spawn_blocking(move || encode(&p)).await??) })
        .buffered(cpus() * 2)
        .collect()
        .await;
    out.into_iter().collect()
}

/// Decode every blob the same way and check it gives its plaintext back.
async fn decode_all(plain: &[Bytes], encoded: &[EncodedChunk]) -> Result<()> {
    let pairs = plain.iter().cloned().zip(encoded.iter().cloned());
    let out: Vec<Result<()>> = futures::stream::iter(pairs)
        .map(|(p, e)| async move {
            let back = tokio::task::spawn_blocking(move || decode(&e.blob, &e.chunk.key)).await??;
            anyhow::ensure!(back == p, "chunk {} decoded to other bytes", e.chunk.id);
            Ok(())
        })
        .buffered(cpus() * 2)
        .collect()
        .await;
    out.into_iter().collect()
}

async fn run_engine(
    a: &BenchArgs,
    dir: &Path,
    set: &DataSet,
    engine: EngineChoice,
) -> Result<Figures> {
    let opts = OpenOptions { engine, ..Default::default() };
    let plain_mb = set.plain_bytes() as f64 / MIB;
    let mut f = Figures::default();

    // Store put of encoded blobs.
    let path = dir.join(format!("{}-{engine:?}-put", set.name));
    {
        let store = Arc::new(LocalStore::open(&path, &opts)?);
        let t = Instant::now();
        put_all(&store, &set.blobs, a.concurrency).await?;
        f.put = plain_mb / t.elapsed().as_secs_f64();
    }
    // Reads of a reopened store: cold (page cache dropped), then warm.
    {
        let store = Arc::new(LocalStore::open(&path, &opts)?);
        store.drop_page_cache();
        let ids: Vec<ChunkId> = set.blobs.iter().map(|(id, _)| *id).collect();
        let t = Instant::now();
        let n = get_all(&store, &ids, a.concurrency).await?;
        f.get_cold = plain_mb / t.elapsed().as_secs_f64();
        anyhow::ensure!(n == set.blob_bytes(), "read back {n} bytes, stored {}", set.blob_bytes());
        let t = Instant::now();
        get_all(&store, &ids, a.concurrency).await?;
        f.get_warm = plain_mb / t.elapsed().as_secs_f64();
    }
    std::fs::remove_dir_all(&path)?;

    // Encode and put, pipelined: what a writer of plaintext sees.
    let path = dir.join(format!("{}-{engine:?}-e2e", set.name));
    {
        let store = Arc::new(LocalStore::open(&path, &opts)?);
        let t = Instant::now();
        let results: Vec<Result<()>> = futures::stream::iter(set.plain.iter().cloned())
            .map(|p| {
                let store = store.clone();
                async move {
                    let e = tokio::task::spawn_blocking(move || encode(&p)).await??;
                    store.put(&e.chunk.id, e.blob).await?;
                    Ok(())
                }
            })
            .buffer_unordered(a.concurrency)
            .collect()
            .await;
        results.into_iter().collect::<Result<()>>()?;
        f.encode_put = plain_mb / t.elapsed().as_secs_f64();
    }
    std::fs::remove_dir_all(&path)?;
    Ok(f)
}

async fn put_all(store: &Arc<LocalStore>, blobs: &[(ChunkId, Bytes)], conc: usize) -> Result<()> {
    let results: Vec<Result<()>> = futures::stream::iter(blobs.iter().cloned())
        .map(|(id, b)| {
            let store = store.clone();
            async move { Ok(tokio::spawn(async move { store.put(&id, b).await }).await??) }
        })
        .buffer_unordered(conc)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Total blob bytes read.
async fn get_all(store: &Arc<LocalStore>, ids: &[ChunkId], conc: usize) -> Result<u64> {
    let results: Vec<Result<u64>> = futures::stream::iter(ids.iter().copied())
        .map(|id| {
            let store = store.clone();
            async move {
                let b = tokio::spawn(async move { store.get(&id).await }).await??;
                Ok(b.with_context(|| format!("chunk {id} missing"))?.len() as u64)
            }
        })
        .buffer_unordered(conc)
        .collect()
        .await;
    results.into_iter().sum()
}

/// Build a store of many small records; time its open by snapshot and by
/// replay; measure index memory per chunk.
async fn open_time(a: &BenchArgs, dir: &Path) -> Result<()> {
    let n = a.open_records;
    crate::outln!("== big store: {n} records of {} bytes (io_uring engine)", a.open_record_size);
    let path = dir.join("big");
    let opts = OpenOptions { engine: EngineChoice::Uring, ..Default::default() };
    let t = Instant::now();
    let after_build = {
        let store = Arc::new(LocalStore::open(&path, &opts)?);
        let size = a.open_record_size;
        let results: Vec<Result<()>> = futures::stream::iter(0..n as u64)
            .map(|i| {
                let store = store.clone();
                async move {
                    let b = Bytes::from(random_bytes(i, size));
                    store.put(&ChunkId::of_blob(&b), b).await?;
                    Ok(())
                }
            })
            .buffer_unordered(1024)
            .collect()
            .await;
        results.into_iter().collect::<Result<()>>()?;
        store.local_stats()
    };
    let build = t.elapsed();
    crate::outln!(
        "   built in {:.1?} ({:.0} puts/s); {} on disk; index {:.1} B/chunk while writing",
        build,
        n as f64 / build.as_secs_f64(),
        human(after_build.disk_bytes()),
        after_build.index_memory as f64 / n as f64
    );
    let t = Instant::now();
    let store = LocalStore::open(&path, &opts)?;
    let fast = t.elapsed();
    let s = store.local_stats();
    anyhow::ensure!(s.chunks == n as u64, "reopened store has {} chunks, want {n}", s.chunks);
    anyhow::ensure!(store.open_report().from_snapshot, "the close snapshot was not used");
    // Heap bytes the index holds, counted from its allocations (an RSS
    // delta means nothing here: the allocator reuses what the build freed).
    crate::outln!(
        "   open by snapshot {:>8.1?}   index {:.1} B/chunk in memory, snapshot file {:.1} B/chunk",
        fast,
        s.index_memory as f64 / n as f64,
        s.snapshot_bytes as f64 / n as f64
    );
    drop(store);
    std::fs::remove_file(path.join("index"))?;
    let t = Instant::now();
    let store = LocalStore::open(&path, &opts)?;
    let slow = t.elapsed();
    let rep = store.open_report();
    anyhow::ensure!(store.local_stats().chunks == n as u64, "replayed store lost chunks");
    crate::outln!(
        "   open by replay   {:>8.1?}   ({} records, {} replayed); snapshot/replay {:.2}x",
        slow,
        rep.replayed_records,
        human(rep.replayed_bytes),
        fast.as_secs_f64() / slow.as_secs_f64()
    );
    drop(store);
    std::fs::remove_dir_all(&path)?;
    Ok(())
}

/// xorshift64* stream: fast, incompressible.
pub(super) fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn random_chunk(seed: u64) -> Vec<u8> {
    random_bytes(seed ^ 0xABCD_0000, 1 << 20)
}

/// Text-like data: words of a small vocabulary in a random order with
/// numbers, compressing about 3-4x with zstd (not the 100x of a repeated
/// string).
fn text_chunk(seed: u64) -> Vec<u8> {
    const WORDS: [&str; 32] = [
        "the",
        "chunk",
        "store",
        "node",
        "image",
        "flist",
        "mount",
        "read",
        "write",
        "cache",
        "index",
        "segment",
        "record",
        "replica",
        "quorum",
        "budget",
        "evict",
        "compact",
        "sync",
        "engine",
        "uring",
        "kernel",
        "page",
        "block",
        "device",
        "overlay",
        "layer",
        "volume",
        "container",
        "virtual",
        "machine",
        "zero",
    ];
    let rnd = random_bytes(seed, 1 << 19);
    let mut out = Vec::with_capacity((1 << 20) + 32);
    let mut i = 0;
    while out.len() < 1 << 20 {
        let r = rnd[i % rnd.len()];
        i += 1;
        if r < 24 {
            out.extend_from_slice(
                format!("{} ", u16::from_le_bytes([r, rnd[(i * 7) % rnd.len()]])).as_bytes(),
            );
        } else {
            out.extend_from_slice(WORDS[(r % 32) as usize].as_bytes());
            out.push(if r % 13 == 0 { b'\n' } else { b' ' });
        }
    }
    out.truncate(1 << 20);
    out
}
