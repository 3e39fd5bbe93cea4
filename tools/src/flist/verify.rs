//! `flist verify`: every chunk on every replica whose route covers it,
//! with the right hash and a correct decode.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use futures::StreamExt;
use zosfs_flist::DataChunk;
use zosfs_store::open_backend;
use zosfs_store::{ChunkId, ChunkStore, OpenOptions, StoreUrl};

use super::{Ctx, ReadStoreArgs, fmt, ls::all_entries};

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    pub flist: PathBuf,
    #[command(flatten)]
    pub store: ReadStoreArgs,
    /// Chunks checked at once.
    #[arg(long, default_value_t = 16)]
    pub jobs: usize,
}

enum Outcome {
    Ok,
    Missing,
    /// The store answered with wrong bytes, or they do not decode.
    Bad(String),
    /// The store could not be asked (down, timed out): says nothing about
    /// the chunk. The store is then skipped for the chunks left.
    Unreachable,
    /// Not asked: its store was found unreachable before.
    Skipped,
}

/// A store under check; `down` holds why it was found unreachable.
struct Target {
    url: String,
    store: Arc<dyn ChunkStore>,
    down: std::sync::OnceLock<String>,
}

pub fn run(ctx: &Ctx, a: VerifyArgs) -> Result<ExitCode> {
    let tree = ctx.open_tree(&a.flist)?;
    let urls: Vec<StoreUrl> =
        a.store.urls(&*tree)?.iter().map(|u| u.parse()).collect::<Result<_, _>>()?;
    // One chunk, one first path naming it (for messages).
    let mut chunks: HashMap<ChunkId, (DataChunk, Vec<u8>)> = HashMap::new();
    for (path, inode) in all_entries(&*tree)? {
        if inode.kind == zosfs_flist::Kind::File {
            for c in tree.data(inode.ino)? {
                chunks.entry(c.store_id()).or_insert_with(|| (c, path.clone()));
            }
        }
    }
    let rt = super::runtime()?;
    let (targets, problems) = rt.block_on(async {
        let mut targets: Vec<(StoreUrl, Arc<Target>)> = Vec::new();
        for u in &urls {
            let store = open_backend(u, &OpenOptions::default()).await?;
            let t = Target { url: u.redacted(), store, down: Default::default() };
            targets.push((u.clone(), Arc::new(t)));
        }
        let mut work = Vec::new();
        for (id, (chunk, path)) in &chunks {
            for (u, t) in &targets {
                if u.route.contains(id.prefix()) {
                    work.push((*id, chunk.clone(), path.clone(), t.clone()));
                }
            }
        }
        let results: Vec<(ChunkId, Vec<u8>, Arc<Target>, Outcome)> = futures::stream::iter(work)
            .map(|(id, chunk, path, t)| async move {
                let outcome = check(&t, &id, chunk).await;
                (id, path, t, outcome)
            })
            .buffer_unordered(a.jobs.max(1))
            .collect()
            .await;
        anyhow::Ok((targets, results))
    })?;
    let checked = problems.len();
    let skipped =
        problems.iter().filter(|p| matches!(p.3, Outcome::Unreachable | Outcome::Skipped)).count();
    let mut lines: Vec<String> = problems
        .into_iter()
        .filter_map(|(id, path, t, o)| match o {
            Outcome::Ok | Outcome::Unreachable | Outcome::Skipped => None,
            Outcome::Missing => {
                Some(format!("missing {id} on {} (in {})", t.url, fmt::name(&path)))
            }
            Outcome::Bad(why) => {
                Some(format!("bad {id} on {} (in {}): {why}", t.url, fmt::name(&path)))
            }
        })
        .collect();
    lines.sort();
    // One line per unreachable store: its chunks are not known bad.
    for (_, t) in &targets {
        if let Some(why) = t.down.get() {
            lines.push(format!("unreachable {}: {why} (its chunks were not checked)", t.url));
        }
    }
    for l in &lines {
        crate::outln!("{l}");
    }
    let not_done = match skipped {
        0 => String::new(),
        n => format!(", {n} not done (store unreachable)"),
    };
    eprintln!(
        "verified {} chunks on {} store(s): {} checks{not_done}, {} problem(s)",
        chunks.len(),
        urls.len(),
        checked - skipped,
        lines.len()
    );
    Ok(if lines.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

async fn check(t: &Target, id: &ChunkId, chunk: DataChunk) -> Outcome {
    if t.down.get().is_some() {
        return Outcome::Skipped;
    }
    let blob = match t.store.get(id).await {
        Ok(Some(b)) => b,
        Ok(None) => return Outcome::Missing,
        Err(e) if e.kind() == zosfs_store::ErrorKind::Unavailable => {
            let _ = t.down.set(e.chain());
            return Outcome::Unreachable;
        }
        Err(e) => return Outcome::Bad(e.chain()),
    };
    if let Err(e) = zosfs_store::chunk::verify_blob(id, &blob) {
        if chunk.as_native().is_some() {
            return Outcome::Bad(e.to_string());
        }
    }
    match tokio::task::spawn_blocking(move || chunk.decode(&blob)).await {
        Ok(Ok(_)) => Outcome::Ok,
        Ok(Err(e)) => Outcome::Bad(format!("{e:#}")),
        Err(e) => Outcome::Bad(e.to_string()),
    }
}
