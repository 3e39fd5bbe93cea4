//! `chunkstore gc`: compact a local store now (give back the space of
//! deleted and evicted chunks).

use std::process::ExitCode;

use anyhow::Result;
use zosfs_store::engine::EngineChoice;
use zosfs_store::node::NodeStore;
use zosfs_store::{OpenOptions, StoreUrl};

use super::stat::{human, local_path};

#[derive(clap::Args, Debug)]
pub struct GcArgs {
    /// The local store (local:///path).
    #[arg(short, long = "store", env = "ZOSFS_STORE", hide_env_values = true)]
    pub store: String,
    /// I/O engine: auto, uring or sync.
    #[arg(long, default_value = "auto")]
    pub engine: EngineChoice,
}

pub async fn gc(a: GcArgs) -> Result<ExitCode> {
    let path = local_path(&a.store)?;
    let name = a.store.parse::<StoreUrl>()?.redacted();
    // Through the store's owner when another process serves it.
    let store = NodeStore::open(&path, &OpenOptions { engine: a.engine, ..Default::default() })?;
    let t = std::time::Instant::now();
    let r = store.gc().await?;
    crate::outln!("{name}");
    crate::outln!("  segments compacted  {}", r.segments_compacted);
    crate::outln!("  records copied      {} ({})", r.records_copied, human(r.bytes_copied));
    crate::outln!(
        "  disk bytes          {} -> {} ({} freed) in {:.2?}",
        human(r.disk_bytes_before),
        human(r.disk_bytes_after),
        human(r.disk_bytes_before.saturating_sub(r.disk_bytes_after)),
        t.elapsed()
    );
    if r.quarantined > 0 {
        crate::outln!("  quarantined         {} unreadable chunks", r.quarantined);
    }
    Ok(ExitCode::SUCCESS)
}
