//! `flist convert`: any readable flist → a native zosfs flist.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use zosfs_flist::pack::{Counters, PackOptions, Source, pack};
use zosfs_store::{RouterConfig, StoreUrl};

use super::{Ctx, ReadStoreArgs};

#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// The flist to convert (rfs `.fl`, 0-fs `.flist`, or native).
    pub input: PathBuf,
    /// Output `.flist` file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Where the input's chunks are (required unless --use-flist-routes).
    #[arg(long = "from-store", value_delimiter = ',')]
    pub from: Vec<String>,
    /// Without --from-store: read from the network stores the input
    /// records (zdb://, redis:// only; off by default: see `flist cat`).
    #[arg(long, env = "ZOSFS_USE_FLIST_ROUTES")]
    pub use_flist_routes: bool,
    /// Where the re-encoded chunks go (repeatable, required): the stores the
    /// new flist's readers use, e.g. the hub.
    #[arg(short, long = "store", value_delimiter = ',', required = true)]
    pub stores: Vec<String>,
    /// Chunk size of the new flist.
    #[arg(long, default_value_t = zosfs_store::chunk::DEFAULT_CHUNK_SIZE as u32)]
    pub chunk_size: u32,
}

pub fn run(ctx: &Ctx, a: ConvertArgs) -> Result<ExitCode> {
    let tree = ctx.open_tree(&a.input)?;
    let urls = a.stores.iter().map(|u| u.parse::<StoreUrl>()).collect::<Result<Vec<_>, _>>()?;
    let mut opts = PackOptions {
        chunking: zosfs_flist::Chunking::Fixed { size: a.chunk_size },
        routes: urls.iter().map(|u| u.redacted()).collect(),
        tags: tree.header().tags.clone().into_iter().collect(),
        ..PackOptions::default()
    };
    opts.tags.insert("converted-from".into(), tree.header().tool.clone());
    // Said here, not by the store opener: in this command `--store` is
    // where the new chunks go, and the input's stores are `--from-store`.
    if a.from.is_empty() && (tree.header().routes.is_empty() || !a.use_flist_routes) {
        anyhow::bail!(
            "{}: give --from-store URL (where its chunks are){}",
            a.input.display(),
            match tree.header().routes.is_empty() {
                true => ": it records no store route".to_string(),
                false => format!(
                    ", or --use-flist-routes to read from the stores it records ({})",
                    tree.header().routes.join(", ")
                ),
            }
        );
    }
    let rt = super::runtime()?;
    let from = rt.block_on(
        ReadStoreArgs { stores: a.from.clone(), use_flist_routes: a.use_flist_routes }.open(&*tree),
    )?;
    let router = rt.block_on(zosfs_store::Router::open(&urls, &RouterConfig::default()))?;
    let to = router.clone();
    let counters = Arc::new(Counters::default());
    let r = pack(
        Source::Tree { tree: &*tree, from },
        to,
        rt.handle().clone(),
        &a.output,
        &opts,
        counters,
    )?;
    eprintln!(
        "converted {} inodes, {} bytes into {} chunks ({} uploaded)",
        r.tree.inodes, r.bytes_read, r.chunks, r.chunks_uploaded
    );
    crate::say_queued(&router, &a.stores);
    Ok(ExitCode::SUCCESS)
}
