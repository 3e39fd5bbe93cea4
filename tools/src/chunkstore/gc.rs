//! `chunkstore gc`: compact a local store (give back the space of deleted
//! and evicted chunks), and with `--keep` first delete every chunk no kept
//! flist references, by the three-phase rule of [`sweep`].

mod mark;
mod state;
mod sweep;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use zosfs_store::engine::EngineChoice;
use zosfs_store::node::NodeStore;
use zosfs_store::url::Backend;
use zosfs_store::{DynStore, OpenOptions, StoreUrl};

use super::stat::human;

/// Compact a local store now; with --keep, first delete every chunk that no
/// kept flist references.
///
/// With --keep, a chunk the kept flists do not reference is deleted only
/// after three runs, each at least --grace after the one before:
///
/// 1. suspect: found unreferenced, recorded, left in the store.
///
/// 2. hidden: still unreferenced; copied to the trash in the state
///    directory, then deleted from the store (a pack from now on sees it
///    missing and uploads it again).
///
/// 3. deleted: still unreferenced; the trash copy is removed.
///
/// A hidden chunk that a kept flist references again is put back. This is
/// safe with packs running at the same time as long as every pack finishes
/// and its flist is in the keep set within --grace of its start. --grace 0
/// deletes at once: unsafe while any pack writes to the store.
///
/// The state (suspects, trash) lives in --state, default
/// /var/lib/zosfs/gc/<first 16 hex of BLAKE3(store URL without password)>;
/// format: docs/formats/gc-state.md. A kept flist that cannot be read stops
/// the run before anything changes.
#[derive(clap::Args, Debug)]
pub struct GcArgs {
    /// The store: local:///path (compacted too), dir:///path, zdb://…, redis://….
    #[arg(short, long = "store", env = "ZOSFS_STORE", hide_env_values = true)]
    pub store: String,
    /// Flists to keep: files, or directories searched recursively for
    /// *.flist and *.fl. Without --keep, gc only compacts a local store.
    #[arg(long, num_args = 1.., value_name = "PATH")]
    pub keep: Vec<PathBuf>,
    /// Time between the phases (e.g. 90s, 30m, 1h, 2d; 0 = delete now, unsafe with running packs).
    #[arg(long, default_value = "1h", value_parser = parse_grace, requires = "keep")]
    pub grace: Duration,
    /// The gc state directory of this store.
    #[arg(long, value_name = "DIR", requires = "keep")]
    pub state: Option<PathBuf>,
    /// Print what would be hidden and deleted; change nothing.
    #[arg(long, requires = "keep")]
    pub dry_run: bool,
    /// I/O engine of a local store: auto, uring or sync.
    #[arg(long, default_value = "auto")]
    pub engine: EngineChoice,
}

/// `90s`, `30m`, `1h`, `2d` or plain seconds.
fn parse_grace(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("{s:?}: want a number and s, m, h or d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?}: unit {unit:?} is not s, m, h or d")),
    };
    n.checked_mul(mult).map(Duration::from_secs).ok_or_else(|| format!("{s:?}: too long"))
}

pub async fn gc(a: GcArgs) -> Result<ExitCode> {
    let url: StoreUrl = a.store.parse()?;
    let name = url.redacted();
    if url.route != zosfs_store::url::Route::ALL {
        bail!("{name}: gc takes a store URL without a route prefix");
    }
    // Mark before opening the store: an unreadable flist stops the run
    // before anything is touched.
    let marked = if a.keep.is_empty() { None } else { Some(mark::mark(&a.keep)?) };
    let local = match &url.backend {
        Backend::Local { path } => {
            // Through the store's owner when another process serves it.
            let opts = OpenOptions { engine: a.engine, ..Default::default() };
            Some(Arc::new(NodeStore::open(path, &opts)?))
        }
        _ if marked.is_none() => bail!("{name}: without --keep, gc compacts local:// stores only"),
        _ => None,
    };
    crate::outln!("{name}");
    if let Some(marked) = &marked {
        let store: DynStore = match &local {
            Some(s) => s.clone(),
            None => zosfs_store::open_backend(&url, &OpenOptions::default()).await?,
        };
        collect(&a, &name, &store, marked).await?;
    }
    if let Some(s) = local {
        if !a.dry_run {
            compact(&s).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The sweep with its report.
async fn collect(a: &GcArgs, name: &str, store: &DynStore, marked: &mark::Marked) -> Result<()> {
    if a.grace.is_zero() && !a.dry_run {
        eprintln!(
            "warning: --grace 0 deletes unreferenced chunks at once; a pack running now \
             against {name} may lose chunks it did not upload because they were present"
        );
    }
    let dir = a.state.clone().unwrap_or_else(|| state::default_dir(name));
    let state = state::StateDir::open(&dir, name)?;
    let sweep = sweep::Sweep {
        store,
        state: &state,
        referenced: &marked.ids,
        grace: a.grace,
        dry: a.dry_run,
        now: sweep::unix_now(),
    };
    let r = sweep.run().await?;
    let would = if a.dry_run { "would be " } else { "" };
    let row = |label: &str, value: String| crate::outln!("  {label:<20}{value}");
    row("kept flists", marked.flists.len().to_string());
    row("referenced chunks", marked.ids.len().to_string());
    row("stored chunks", format!("{} ({} unreferenced)", r.stored, r.unreferenced));
    row("suspects", format!("{} ({} new)", r.suspects, r.new_suspects));
    row(&format!("{would}restored"), r.restored.to_string());
    row(&format!("{would}hidden"), format!("{} ({})", r.hidden, human(r.hidden_bytes)));
    row(&format!("{would}deleted"), format!("{} ({})", r.deleted, human(r.deleted_bytes)));
    let trash = state.path().display();
    row("in trash", format!("{} ({}) in {trash}", r.trash_left, human(r.trash_left_bytes)));
    Ok(())
}

async fn compact(store: &NodeStore) -> Result<()> {
    let t = std::time::Instant::now();
    let r = store.gc().await?;
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_grace;

    #[test]
    fn grace_units() {
        assert_eq!(parse_grace("0").unwrap().as_secs(), 0);
        assert_eq!(parse_grace("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_grace("2h").unwrap().as_secs(), 7200);
        assert_eq!(parse_grace("1d").unwrap().as_secs(), 86400);
        assert!(parse_grace("1w").is_err());
        assert!(parse_grace("h").is_err());
        assert!(parse_grace("99999999999999999999d").is_err());
    }
}
