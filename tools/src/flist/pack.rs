//! `flist pack`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use zosfs_flist::Chunking;
use zosfs_flist::pack::{Counters, PackOptions, Source, pack};
use zosfs_store::{RouterConfig, StoreUrl};

use super::Ctx;
use super::progress::Progress;

#[derive(clap::Args, Debug)]
pub struct PackArgs {
    /// Output `.flist` file.
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub write: crate::WriteStores,
    /// Chunk size in bytes (fixed chunking), or the average with --cdc.
    #[arg(long, default_value_t = zosfs_store::chunk::DEFAULT_CHUNK_SIZE as u32)]
    pub chunk_size: u32,
    /// Content-defined chunking (FastCDC): better dedup between versions.
    #[arg(long)]
    pub cdc: bool,
    /// zstd level of the chunks (0: no compression).
    #[arg(long, default_value_t = zosfs_store::chunk::DEFAULT_LEVEL, allow_negative_numbers = true)]
    pub compression_level: i32,
    /// A tag `key=value` (name, version, description, entrypoint, environment, ...).
    #[arg(long = "tag", value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,
    /// Encoder threads (default: every core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// No progress bar even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// A directory, a tar file, or `-` for a tar stream on stdin.
    pub source: PathBuf,
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("tag {s:?} is not key=value")),
    }
}

pub fn run(_ctx: &Ctx, a: PackArgs) -> Result<ExitCode> {
    let urls =
        a.write.stores.iter().map(|u| u.parse::<StoreUrl>()).collect::<Result<Vec<_>, _>>()?;
    let mut opts = PackOptions {
        chunking: if a.cdc {
            PackOptions::cdc(a.chunk_size)
        } else {
            Chunking::Fixed { size: a.chunk_size }
        },
        level: a.compression_level,
        routes: urls.iter().map(|u| u.redacted()).collect(),
        tags: a.tags.iter().cloned().collect::<BTreeMap<_, _>>(),
        ..PackOptions::default()
    };
    if let Some(w) = a.workers {
        opts.workers = w;
    }
    opts.validate()?;
    let source = if a.source.as_os_str() == "-" {
        Source::Tar(Box::new(std::io::stdin()))
    } else if a.source.is_dir() {
        Source::Dir(a.source.clone())
    } else if a.source.is_file() {
        let f = std::fs::File::open(&a.source)
            .with_context(|| format!("open {}", a.source.display()))?;
        Source::Tar(Box::new(std::io::BufReader::with_capacity(1 << 20, f)))
    } else {
        bail!("{}: not a directory, a tar file or -", a.source.display());
    };
    let rt = super::runtime()?;
    let cfg = RouterConfig { quorum: a.write.quorum, ..Default::default() };
    let router = rt.block_on(zosfs_store::Router::open(&urls, &cfg))?;
    let store = router.clone();
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let report = {
        let _bar = Progress::start(counters.clone(), !a.no_progress);
        pack(source, store, rt.handle().clone(), &a.output, &opts, counters.clone())?
    };
    let secs = started.elapsed().as_secs_f64();
    let size = std::fs::metadata(&a.output).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "packed {} entries ({} inodes), {} bytes in {} chunks: {} unique, {} uploaded ({} blob bytes), {} already stored; dedup {:.2}x; {:.1} MB/s; flist {} bytes",
        report.tree.entries + 1,
        report.tree.inodes,
        report.bytes_read,
        report.chunks,
        report.chunks_unique,
        report.chunks_uploaded,
        report.bytes_uploaded,
        report.chunks_present,
        counters.dedup_ratio(),
        report.bytes_read as f64 / secs.max(1e-6) / 1e6,
        size,
    );
    crate::say_queued(&router, &a.write.stores);
    Ok(ExitCode::SUCCESS)
}
