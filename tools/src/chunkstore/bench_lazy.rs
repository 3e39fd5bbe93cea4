//! `chunkstore bench --only lazy`: cold sequential fill of a LazyFile from
//! a store whose every fetch takes a fixed latency (a remote 0-db's round
//! trip), with parallel fetch and read-ahead, next to peers from the same
//! run: the same read with one fetch at a time and no read-ahead, a
//! background fill_all, warm reads of the filled file, writing the same
//! bytes to a new local file with fdatasync (the local disk ceiling), and
//! in-memory decoding alone (the CPU ceiling).
//!
//! Before measuring, page-cache and anonymous memory of twice the image
//! size is touched once (a scratch file written and deleted, a buffer
//! filled and freed): on a fresh VM the first touch of guest memory costs
//! ~10x, which would otherwise land on whichever run comes first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use zosfs_store::DynStore;
use zosfs_store::backend::mem::MemStore;
use zosfs_store::chunk::{CHUNK_SIZE_MAX, CHUNK_SIZE_MIN, decode};
use zosfs_store::engine::{EngineChoice, shared_engine};
use zosfs_store::lazy::testing::{DelayStore, put_chunks, sample_bytes};
use zosfs_store::lazy::{LazyFile, LazyOptions, LazyStats, Origin, StoreSource};

#[derive(clap::Args, Debug)]
pub struct LazyBenchArgs {
    /// Lazy bench: plaintext size of the image, MiB.
    #[arg(long = "lazy-size-mib", default_value_t = 256)]
    pub size_mib: usize,
    /// Lazy bench: chunk size, KiB.
    #[arg(long = "lazy-chunk-kib", default_value_t = 1024)]
    pub chunk_kib: usize,
    /// Lazy bench: latency injected into every fetch, ms.
    #[arg(long = "lazy-latency-ms", default_value_t = 20)]
    pub latency_ms: u64,
    /// Lazy bench: read-ahead in chunks.
    #[arg(long = "lazy-readahead", default_value_t = 16)]
    pub readahead: u32,
    /// Lazy bench: fetches in flight at most.
    #[arg(long = "lazy-depth", default_value_t = 16)]
    pub depth: usize,
    /// Lazy bench: size of each sequential read, KiB (FUSE reads 128 KiB).
    #[arg(long = "lazy-read-kib", default_value_t = 128)]
    pub read_kib: usize,
    /// Lazy bench: I/O engine (auto, uring, sync).
    #[arg(long = "lazy-engine", default_value = "auto")]
    pub engine: EngineChoice,
}

struct Image {
    content: Vec<u8>,
    origins: Vec<Origin>,
    mem: DynStore,
}

struct Run {
    name: String,
    took: Duration,
    stats: Option<LazyStats>,
}

/// Run the lazy part with its files in `dir`.
pub async fn run(a: &LazyBenchArgs, dir: &std::path::Path) -> Result<()> {
    let chunk = a.chunk_kib << 10;
    if !(CHUNK_SIZE_MIN..=CHUNK_SIZE_MAX).contains(&chunk) {
        bail!("--lazy-chunk-kib {} is outside 64..=4096", a.chunk_kib);
    }
    ensure!(a.size_mib > 0 && a.read_kib > 0 && a.depth > 0, "sizes and depth must be positive");
    let dir = tempfile::Builder::new()
        .prefix("lazy.")
        .tempdir_in(dir)
        .context("create the lazy bench directory")?;
    let engine = shared_engine(a.engine).context("open the I/O engine")?;
    let latency = Duration::from_millis(a.latency_ms);
    let image = make_image(a.size_mib << 20, chunk).await?;
    let size = image.content.len();
    warm_page_cache(dir.path(), 2 * size)?;
    crate::outln!(
        "lazy bench: {} MiB image, {} KiB chunks, {} ms per fetch, reads of {} KiB, engine {}, \
         cache in {}",
        a.size_mib,
        a.chunk_kib,
        a.latency_ms,
        a.read_kib,
        engine.name(),
        dir.path().display()
    );

    let base = LazyOptions { engine: Some(engine), ..Default::default() };
    let fast = LazyOptions {
        readahead: a.readahead,
        fetch_depth: a.depth,
        prefetch_depth: a.depth,
        ..base.clone()
    };
    let naive = LazyOptions { readahead: 0, fetch_depth: 1, ..base.clone() };
    let mut runs = Vec::new();

    let path = dir.path().join("fast");
    let (took, stats) = cold_sequential(&image, latency, &path, fast.clone(), a.read_kib).await?;
    let name = format!("cold sequential, read-ahead {}, depth {}", a.readahead, a.depth);
    runs.push(Run { name, took, stats: Some(stats) });

    let (took, stats) =
        cold_sequential(&image, latency, &dir.path().join("naive"), naive, a.read_kib).await?;
    let name = "peer: cold sequential, no read-ahead, depth 1".to_string();
    runs.push(Run { name, took, stats: Some(stats) });

    let (took, stats, warm) = fill_all_then_warm(&image, latency, dir.path(), fast, a).await?;
    runs.push(Run { name: format!("peer: fill_all, depth {}", a.depth), took, stats: Some(stats) });
    runs.push(Run {
        name: "peer: warm sequential (fully present)".into(),
        took: warm,
        stats: None,
    });

    let took = local_write(&image, &dir.path().join("plain"), chunk)?;
    runs.push(Run { name: "peer: plain write + fdatasync, no fetch".into(), took, stats: None });

    let took = decode_only(&image).await?;
    runs.push(Run { name: "peer: decode only, in memory, 1 thread".into(), took, stats: None });

    print_runs(&runs, size);
    let mbs = |r: &Run| size as f64 / r.took.as_secs_f64() / 1e6;
    crate::outln!(
        "  ratio cold read-ahead / cold one-at-a-time: {:.1}x",
        mbs(&runs[0]) / mbs(&runs[1])
    );
    let verdict = if mbs(&runs[0]) >= 200.0 { "met" } else { "NOT met" };
    crate::outln!("  target cold sequential >= 200 MB/s: {verdict} ({:.0} MB/s)", mbs(&runs[0]));
    Ok(())
}

/// Sample content cut into fixed chunks, encoded into a MemStore.
async fn make_image(size: usize, chunk: usize) -> Result<Image> {
    let content = sample_bytes(size, 1);
    let mem: DynStore = Arc::new(MemStore::new());
    let mut lens = vec![chunk; size / chunk];
    if size % chunk != 0 {
        lens.push(size % chunk);
    }
    let origins = put_chunks(&mem, &content, &lens, true).await?;
    Ok(Image { content, origins, mem })
}

fn open_source(image: &Image, latency: Duration) -> Arc<StoreSource> {
    let store = DelayStore::new(image.mem.clone(), latency);
    Arc::new(StoreSource::new(store, image.origins.clone()))
}

/// Read the whole image front to back, one read at a time, from a cold cache.
async fn cold_sequential(
    image: &Image,
    latency: Duration,
    path: &std::path::Path,
    opts: LazyOptions,
    read_kib: usize,
) -> Result<(Duration, LazyStats)> {
    let src = open_source(image, latency);
    let lf = LazyFile::open(path, src.layout()?, src, opts).await?;
    let read = read_kib << 10;
    let started = Instant::now();
    let mut off = 0usize;
    while off < image.content.len() {
        let got = lf.read(off as u64, read).await?;
        ensure!(got == image.content[off..off + got.len()], "wrong bytes read at {off}");
        ensure!(!got.is_empty(), "empty read at {off}");
        off += got.len();
    }
    let took = started.elapsed();
    let stats = lf.stats();
    lf.close().await?;
    Ok((took, stats))
}

/// Fill everything in the background, then read it all warm.
async fn fill_all_then_warm(
    image: &Image,
    latency: Duration,
    dir: &std::path::Path,
    opts: LazyOptions,
    a: &LazyBenchArgs,
) -> Result<(Duration, LazyStats, Duration)> {
    let src = open_source(image, latency);
    let lf = LazyFile::open(&dir.join("fill"), src.layout()?, src, opts).await?;
    let started = Instant::now();
    let report = lf.fill_all(None).wait().await?;
    let fill = started.elapsed();
    ensure!(report.failed == 0 && lf.is_fully_present(), "fill_all left chunks: {report:?}");
    let stats = lf.stats();
    let read = a.read_kib << 10;
    let started = Instant::now();
    let mut off = 0usize;
    while off < image.content.len() {
        let got = lf.read(off as u64, read).await?;
        ensure!(got == image.content[off..off + got.len()], "wrong bytes read at {off}");
        off += got.len();
    }
    let warm = started.elapsed();
    lf.close().await?;
    Ok((fill, stats, warm))
}

/// Write and delete `bytes` of scratch, and touch as much anonymous
/// memory, so later runs find memory the hypervisor has backed already.
fn warm_page_cache(dir: &std::path::Path, bytes: usize) -> Result<()> {
    use std::io::Write;
    let mut anon = vec![0u8; bytes];
    for page in anon.chunks_mut(4096) {
        page[0] = 1;
    }
    std::hint::black_box(&anon);
    drop(anon);
    let path = dir.join("warm-up");
    let mut f = std::fs::File::create(&path).context("create warm-up file")?;
    let block = vec![0x5au8; 1 << 20];
    for _ in 0..bytes.div_ceil(block.len()) {
        f.write_all(&block).context("write warm-up file")?;
    }
    drop(f);
    std::fs::remove_file(&path).context("remove warm-up file")?;
    Ok(())
}

/// The local ceiling: the same bytes written chunk by chunk to a new file,
/// then fdatasync, as a fill does without fetching or decoding.
fn local_write(image: &Image, path: &std::path::Path, chunk: usize) -> Result<Duration> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).context("create plain file")?;
    let started = Instant::now();
    for (i, piece) in image.content.chunks(chunk).enumerate() {
        f.write_all_at(piece, (i * chunk) as u64).context("write plain file")?;
    }
    f.sync_data().context("fdatasync plain file")?;
    Ok(started.elapsed())
}

async fn decode_only(image: &Image) -> Result<Duration> {
    let mut blobs = Vec::new();
    for o in &image.origins {
        if let Origin::Chunk(r) = o {
            blobs.push((*r, image.mem.get(&r.id).await?.context("blob missing")?));
        }
    }
    let started = Instant::now();
    for (r, blob) in &blobs {
        zosfs_store::chunk::verify_blob(&r.id, blob)?;
        let plain = decode(blob, &r.key)?;
        ensure!(plain.len() == r.len as usize);
    }
    Ok(started.elapsed())
}

fn print_runs(runs: &[Run], size: usize) {
    crate::outln!(
        "  {:<48} {:>9} {:>8} {:>8} {:>10}",
        "run",
        "MB/s",
        "fetches",
        "max fly",
        "mean fetch"
    );
    for r in runs {
        let mbs = size as f64 / r.took.as_secs_f64() / 1e6;
        match &r.stats {
            Some(s) => crate::outln!(
                "  {:<48} {:>9.1} {:>8} {:>8} {:>8.1}ms",
                r.name,
                mbs,
                s.fetched,
                s.max_fetches_in_flight,
                s.fetch_time_mean().as_secs_f64() * 1e3
            ),
            None => {
                crate::outln!("  {:<48} {:>9.1} {:>8} {:>8} {:>10}", r.name, mbs, "-", "-", "-")
            }
        }
    }
}
