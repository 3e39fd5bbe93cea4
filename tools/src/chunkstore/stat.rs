//! `chunkstore stat`: counts, bytes, disk bytes, hit ratio, engine.
//!
//! A `local://` store reports the figures of its owner, the process that
//! serves it to the node (segments, dead bytes, index memory, and every
//! process's gets and puts); other stores report what their backend knows.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use zosfs_store::engine::EngineChoice;
use zosfs_store::local::LocalStats;
use zosfs_store::node::{NodeStore, Role};
use zosfs_store::url::Backend;
use zosfs_store::{OpenOptions, StoreStats, StoreUrl};

#[derive(clap::Args, Debug)]
pub struct StatArgs {
    /// Store URLs (each reported on its own).
    #[arg(
        short,
        long = "store",
        env = "ZOSFS_STORE",
        hide_env_values = true,
        value_delimiter = ',',
        required = true
    )]
    pub stores: Vec<String>,
    /// I/O engine for local stores: auto, uring or sync.
    #[arg(long, default_value = "auto")]
    pub engine: EngineChoice,
}

/// The directory of a `local://` URL, or a clear error.
pub(super) fn local_path(url: &str) -> Result<PathBuf> {
    let u: StoreUrl = url.parse()?;
    match u.backend {
        Backend::Local { path } => Ok(path),
        _ => bail!("{} is not a local:// store", u.redacted()),
    }
}

pub async fn stat(a: StatArgs) -> Result<ExitCode> {
    for s in &a.stores {
        let url: StoreUrl = s.parse()?;
        if let Backend::Local { path } = &url.backend {
            let opts = OpenOptions { engine: a.engine, ..Default::default() };
            let store = NodeStore::open(path, &opts)?;
            print_local(&url.redacted(), &store.local_stats().await?);
            print_role(&store.role());
            print_queue(&path.join("replication-queue"))?;
        } else {
            let store = zosfs_store::open_backend(&url, &OpenOptions::default()).await?;
            print_generic(&url.redacted(), &store.stats().await?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_local(name: &str, s: &LocalStats) {
    crate::outln!("{name}");
    crate::outln!("  chunks          {}", s.chunks);
    crate::outln!("  bytes           {} ({})", s.blob_bytes, human(s.blob_bytes));
    crate::outln!("  disk bytes      {} ({})", s.disk_bytes(), human(s.disk_bytes()));
    crate::outln!("  segments        {} ({} dead bytes)", s.segments, s.dead_bytes);
    crate::outln!("  index snapshot  {}", human(s.snapshot_bytes));
    let per = if s.chunks > 0 { s.index_memory as f64 / s.chunks as f64 } else { 0.0 };
    crate::outln!("  index memory    {} ({per:.1} B/chunk)", human(s.index_memory));
    match s.hit_ratio() {
        Some(r) => crate::outln!("  hit ratio       {:.3} ({} of {} gets)", r, s.hits, s.gets),
        None => crate::outln!("  hit ratio       - (no gets since open)"),
    }
    crate::outln!("  puts            {}", s.puts);
    crate::outln!("  evictions       {}", s.evictions);
    match s.budget {
        Some(b) => crate::outln!("  budget          {} ({})", b, human(b)),
        None => crate::outln!("  budget          none"),
    }
    crate::outln!("  engine          {}", s.engine);
}

/// The router's replication queue kept under this store: writes that a
/// replica has not taken yet (a pack that said "queued").
fn print_queue(dir: &std::path::Path) -> Result<()> {
    let pending = zosfs_store::Router::pending_at(dir)?;
    let n: usize = pending.iter().map(|p| p.ids.len()).sum();
    if n == 0 {
        crate::outln!("  queued          0");
        return Ok(());
    }
    crate::outln!(
        "  queued          {n} chunks not yet on their replicas (`chunkstore repair` pushes them now)"
    );
    for p in &pending {
        crate::outln!("    {} chunks for {}", p.ids.len(), p.target);
    }
    Ok(())
}

fn print_role(r: &Role) {
    match r {
        Role::Owner => {
            crate::outln!("  owner           this process (nobody else had the store open)")
        }
        Role::Client { owner_pid, socket } => {
            crate::outln!("  owner           pid {owner_pid} ({})", socket.display())
        }
    }
}

fn print_generic(name: &str, s: &StoreStats) {
    crate::outln!("{name}");
    crate::outln!("  chunks          {}", s.chunks);
    crate::outln!("  bytes           {} ({})", s.bytes, human(s.bytes));
    if let Some(d) = s.disk_bytes {
        crate::outln!("  disk bytes      {d} ({})", human(d));
    }
    if s.gets > 0 {
        crate::outln!(
            "  hit ratio       {:.3} ({} of {} gets)",
            s.hits as f64 / s.gets as f64,
            s.hits,
            s.gets
        );
    }
    if let Some(e) = &s.engine {
        crate::outln!("  engine          {e}");
    }
}

/// Bytes in binary units.
pub(super) fn human(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{b} B") } else { format!("{v:.1} {}", UNITS[u]) }
}
