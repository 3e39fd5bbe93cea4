//! `chunkstore repair`: finish replication now.
//!
//! * `--drain` (the default when nothing else is asked): push every entry
//!   of the replication queue to its store, once, without backoff;
//! * `--ids ID...` / `--ids-from FILE` / `--all-local`: make sure every
//!   matching store holds each chunk, copying it from a good replica
//!   (`--verify` also reads every copy back and replaces corrupt ones).
//!
//! Progress goes to stderr, the summary to stdout. Exit status 0 when
//! everything asked is done, 1 when something is left (still queued,
//! unreadable, failed).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use zosfs_store::router::{DrainReport, Event, Outcome, ReplicateReport, RouterConfig};
use zosfs_store::{ChunkId, ChunkStore};

use super::StoreArgs;

#[derive(clap::Args, Debug)]
pub struct RepairArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Push the replication queue to its stores now (default when no ids are given).
    #[arg(long)]
    pub drain: bool,
    /// Chunk ids to re-replicate to every matching store.
    #[arg(long, num_args = 1..)]
    pub ids: Vec<ChunkId>,
    /// File with one chunk id per line (`-` for stdin; `#` starts a comment).
    #[arg(long)]
    pub ids_from: Option<PathBuf>,
    /// Re-replicate every chunk of the local store(s).
    #[arg(long)]
    pub all_local: bool,
    /// Read every copy back and replace corrupt ones (slower: reads all replicas).
    #[arg(long)]
    pub verify: bool,
    /// Print every chunk, not only failures and a progress line.
    #[arg(short, long)]
    pub verbose: bool,
}

pub async fn repair(a: RepairArgs) -> Result<ExitCode> {
    // This command drains the queue itself: no background drainer racing it.
    let cfg = RouterConfig { background_drain: false, ..a.store.config() };
    let router = zosfs_store::router::open_urls(&a.store.write.stores, &cfg).await?;
    let mut ids = a.ids.clone();
    if let Some(p) = &a.ids_from {
        ids.extend(read_ids(p)?);
    }
    if a.all_local {
        ids.extend(router.local_ids().await?);
    }
    let replicate = !ids.is_empty() || a.all_local;
    let drain = a.drain || !replicate;
    let mut left = 0usize;
    let mut progress = Progress::new(a.verbose);

    if drain {
        if router.queue_dir().is_none() {
            bail!(
                "no replication queue: give --queue-dir or a local:// store (stores: {})",
                a.store.stores_redacted()
            );
        }
        let rep = router.drain_queue(&mut |e| progress.event(e)).await?;
        progress.finish();
        print_drain(&rep);
        left += rep.remaining;
    }
    if replicate {
        ids.sort();
        ids.dedup();
        progress.total = ids.len();
        let rep = router.replicate(&ids, a.verify, &mut |e| progress.event(e)).await?;
        progress.finish();
        print_replicate(&rep);
        left += rep.failed + rep.unreadable + rep.queued;
    }
    router.sync().await?;
    Ok(if left == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn read_ids(p: &PathBuf) -> Result<Vec<ChunkId>> {
    let input: Box<dyn BufRead> = if p.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(p).with_context(|| format!("open {}", p.display()))?,
        ))
    };
    let mut ids = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("read {}", p.display()))?;
        let word = line.split('#').next().unwrap_or("").trim();
        if word.is_empty() {
            continue;
        }
        // Accept `chunkstore put` output too: the id is its third column.
        let cols: Vec<&str> = word.split_whitespace().collect();
        let tok = if cols.len() >= 3 { cols[2] } else { cols[0] };
        ids.push(tok.parse().with_context(|| format!("{}:{}", p.display(), n + 1))?);
    }
    Ok(ids)
}

/// Per-event lines (verbose or failures) and a throttled progress line.
struct Progress {
    verbose: bool,
    total: usize,
    seen: std::collections::HashSet<ChunkId>,
    last: Instant,
}

impl Progress {
    fn new(verbose: bool) -> Self {
        Progress { verbose, total: 0, seen: Default::default(), last: Instant::now() }
    }

    fn event(&mut self, e: &Event) {
        let mut err = std::io::stderr().lock();
        let bad = matches!(
            e.outcome,
            Outcome::Queued(_)
                | Outcome::Failed(_)
                | Outcome::Unreadable(_)
                | Outcome::UnknownTarget
        );
        if self.verbose || bad {
            let _ = writeln!(err, "{} {}: {}", e.id, e.target, describe(&e.outcome));
        }
        self.seen.insert(e.id);
        if self.last.elapsed().as_secs() >= 1 {
            self.last = Instant::now();
            let of = if self.total > 0 { format!(" of {}", self.total) } else { String::new() };
            let _ = writeln!(err, "... {} chunks{of}", self.seen.len());
        }
    }

    fn finish(&mut self) {
        self.seen.clear();
    }
}

fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Written => "written".into(),
        Outcome::Present => "present".into(),
        Outcome::Repaired => "corrupt copy replaced".into(),
        Outcome::Queued(why) => format!("still queued: {why}"),
        Outcome::Failed(why) => format!("FAILED: {why}"),
        Outcome::Unreadable(why) => format!("UNREADABLE: {why}"),
        Outcome::UnknownTarget => "queued for a store not given with --store; left alone".into(),
    }
}

fn print_drain(r: &DrainReport) {
    crate::outln!(
        "queue: {} written, {} failed (kept), {} for other stores, {} quarantined, {} remaining",
        r.written,
        r.failed,
        r.unknown,
        r.quarantined,
        r.remaining
    );
}

fn print_replicate(r: &ReplicateReport) {
    crate::outln!(
        "replicate: {} ids: {} copies present, {} written, {} repaired, {} queued, {} failed, {} unreadable",
        r.ids,
        r.present,
        r.written,
        r.repaired,
        r.queued,
        r.failed,
        r.unreadable
    );
}
