//! `chunkstore fsck`: verify every record of a local store; quarantine bad
//! ones. Exit status 0 when clean, 1 when something was quarantined.

use std::process::ExitCode;

use anyhow::Result;
use zosfs_store::engine::EngineChoice;
use zosfs_store::local::FsckOptions;
use zosfs_store::node::NodeStore;
use zosfs_store::{OpenOptions, StoreUrl};

use super::stat::local_path;

#[derive(clap::Args, Debug)]
pub struct FsckArgs {
    /// The local store (local:///path).
    #[arg(short, long = "store", env = "ZOSFS_STORE", hide_env_values = true)]
    pub store: String,
    /// Also check BLAKE3(blob) == id (content-addressed stores only; not
    /// for a 0-db server's store, which keeps values under other ids).
    #[arg(long)]
    pub verify_ids: bool,
    /// I/O engine: auto, uring or sync.
    #[arg(long, default_value = "auto")]
    pub engine: EngineChoice,
}

pub async fn fsck(a: FsckArgs) -> Result<ExitCode> {
    let path = local_path(&a.store)?;
    let name = a.store.parse::<StoreUrl>()?.redacted();
    // Through the store's owner when another process serves it.
    let store = NodeStore::open(&path, &OpenOptions { engine: a.engine, ..Default::default() })?;
    let answer = store.fsck(&FsckOptions { verify_ids: a.verify_ids }).await?;
    let (open, r) = (answer.open, answer.report);
    crate::outln!("{name}");
    crate::outln!("  segments          {}", r.segments);
    crate::outln!(
        "  records           {} ({} live blobs, {} dead blobs, {} tombstones)",
        r.records,
        r.live_blobs,
        r.dead_blobs,
        r.tombstones
    );
    if open.truncated_bytes > 0 {
        crate::outln!("  torn tail cut     {} bytes (at open)", open.truncated_bytes);
    }
    for q in &open.quarantined {
        crate::outln!("  quarantined at open: {}", q.display());
    }
    crate::outln!(
        "  bad live records  {} (of which id mismatches: {})",
        r.bad_live,
        r.id_mismatches
    );
    crate::outln!("  dangling entries  {}", r.dangling);
    crate::outln!("  bad dead records  {}", r.bad_dead);
    crate::outln!("  damaged bytes     {}", r.damaged_bytes);
    for p in &r.problems {
        crate::outln!("  - {p}");
    }
    for q in &r.quarantined {
        crate::outln!("  quarantined: {}", q.display());
    }
    if r.is_clean() {
        crate::outln!("  clean");
        Ok(ExitCode::SUCCESS)
    } else {
        crate::outln!("  NOT clean: damaged chunks were moved aside and are now missing");
        Ok(ExitCode::from(1))
    }
}
