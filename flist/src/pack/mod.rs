//! Packing: a directory or a tar stream becomes chunks in a store and an
//! flist that points to them.
//!
//! Sources are read into a [`builder::Builder`] (metadata) while file
//! contents stream through the [`pipeline`] (chunk, encode, dedup, upload);
//! then the tree is written in one deterministic pass.

pub mod builder;
mod convert;
mod dir;
pub mod pipeline;
mod tar;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::content::Store;
use crate::error::{Result, invalid};
use crate::model::{Chunking, Codec, Header};
use crate::native::{Writer, tool_version};
pub use builder::TreeCounts;
pub use pipeline::Counters;

/// What to pack.
pub enum Source<'a> {
    /// A directory on a local filesystem.
    Dir(PathBuf),
    /// A tar stream (a tar file, `docker export`, an OCI/docker layer).
    Tar(Box<dyn Read + Send>),
    /// Another flist (any format) whose chunks are read from `from`.
    Tree { tree: &'a dyn crate::tree::Tree, from: Store },
}

/// How to pack.
#[derive(Clone, Debug)]
pub struct PackOptions {
    pub chunking: Chunking,
    /// zstd level of the chunks (0: store uncompressed).
    pub level: i32,
    /// Store URLs to record in the header (already redacted).
    pub routes: Vec<String>,
    pub tags: BTreeMap<String, String>,
    /// Encoder threads (default: every core).
    pub workers: usize,
    /// Threads reading files of a directory source in parallel.
    pub readers: usize,
    /// Where the temporary database is built (default: next to the output).
    pub tmp_dir: Option<PathBuf>,
}

impl Default for PackOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        PackOptions {
            chunking: Chunking::Fixed { size: zosfs_store::chunk::DEFAULT_CHUNK_SIZE as u32 },
            level: zosfs_store::chunk::DEFAULT_LEVEL,
            routes: Vec::new(),
            tags: BTreeMap::new(),
            workers: cores,
            readers: cores.clamp(2, 8),
            tmp_dir: None,
        }
    }
}

impl PackOptions {
    /// Check chunking bounds against what the codec and stores accept.
    pub fn validate(&self) -> Result<()> {
        let (lo, hi) =
            (zosfs_store::chunk::CHUNK_SIZE_MIN as u32, zosfs_store::chunk::CHUNK_SIZE_MAX as u32);
        match self.chunking {
            Chunking::Fixed { size } if !(lo..=hi).contains(&size) => {
                Err(invalid(format!("chunk size {size} is outside {lo}..={hi} bytes")))
            }
            Chunking::FastCdc { min, avg, max }
                if !(min <= avg && avg <= max && max <= hi && min >= 4096 && avg >= lo / 4) =>
            {
                Err(invalid(format!(
                    "CDC bounds min {min} avg {avg} max {max} must satisfy 4096 <= min <= avg <= max <= {hi}"
                )))
            }
            _ if !(-7..=22).contains(&self.level) => {
                Err(invalid(format!("compression level {} is outside -7..=22", self.level)))
            }
            _ => Ok(()),
        }
    }

    /// CDC bounds for an average size: min = avg/4, max = avg*4 (capped).
    pub fn cdc(avg: u32) -> Chunking {
        let max = (avg.saturating_mul(4)).min(zosfs_store::chunk::CHUNK_SIZE_MAX as u32);
        Chunking::FastCdc { min: (avg / 4).max(4096), avg, max }
    }
}

/// What a pack did.
#[derive(Clone, Debug, Default)]
pub struct PackReport {
    pub tree: TreeCounts,
    pub chunks: u64,
    pub chunks_unique: u64,
    pub chunks_present: u64,
    pub chunks_uploaded: u64,
    pub bytes_read: u64,
    pub bytes_unique: u64,
    pub bytes_uploaded: u64,
}

/// Pack `source` into `out`, putting chunks into `store`. Must be called
/// outside the async runtime `rt` (it blocks).
pub fn pack(
    source: Source<'_>,
    store: Store,
    rt: tokio::runtime::Handle,
    out: &Path,
    opts: &PackOptions,
    counters: Arc<Counters>,
) -> Result<PackReport> {
    opts.validate()?;
    let header = Header {
        format_version: crate::FORMAT_VERSION,
        chunking: opts.chunking,
        codec: Codec::Zck1,
        compression_level: opts.level,
        tool: tool_version(),
        routes: opts.routes.clone(),
        tags: opts.tags.clone(),
    };
    let tmp_parent = match &opts.tmp_dir {
        Some(d) => d.clone(),
        None => out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let pipe = pipeline::Pipeline::start(
        store,
        rt.clone(),
        opts.chunking,
        opts.level,
        opts.workers,
        counters.clone(),
    );
    let built = match source {
        Source::Dir(path) => dir::read_dir_source(&path, &pipe, opts.readers, &counters),
        Source::Tar(r) => tar::read_tar_source(r, &pipe),
        Source::Tree { tree, from } => {
            convert::read_tree_source(tree, &from, &rt, &pipe, opts.readers, &counters)
        }
    };
    let (builder, contents) = match built {
        Ok(v) => v,
        Err(e) => {
            pipe.fail(crate::Error::new(crate::ErrorKind::Io, "source failed"));
            let _ = pipe.finish(0);
            return Err(e);
        }
    };
    let chunk_lists = pipe.finish(contents)?;
    let mut w = Writer::create_in(&tmp_parent, header)?;
    let tree = builder.write(&mut w, &chunk_lists)?;
    w.finish(out)?;
    use std::sync::atomic::Ordering::Relaxed;
    Ok(PackReport {
        tree,
        chunks: counters.chunks.load(Relaxed),
        chunks_unique: counters.chunks_unique.load(Relaxed),
        chunks_present: counters.chunks_present.load(Relaxed),
        chunks_uploaded: counters.chunks_uploaded.load(Relaxed),
        bytes_read: counters.bytes_read.load(Relaxed),
        bytes_unique: counters.bytes_unique.load(Relaxed),
        bytes_uploaded: counters.bytes_uploaded.load(Relaxed),
    })
}
