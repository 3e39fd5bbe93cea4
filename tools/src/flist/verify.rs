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
    Bad(String),
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
    let (checked, problems) = rt.block_on(async {
        let mut stores: Vec<(StoreUrl, Arc<dyn ChunkStore>)> = Vec::new();
        for u in &urls {
            stores.push((u.clone(), open_backend(u, &OpenOptions::default()).await?));
        }
        let mut work = Vec::new();
        for (id, (chunk, path)) in &chunks {
            for (u, s) in &stores {
                if u.route.contains(id.prefix()) {
                    work.push((*id, chunk.clone(), path.clone(), u.redacted(), s.clone()));
                }
            }
        }
        let checked = work.len();
        let results: Vec<(ChunkId, Vec<u8>, String, Outcome)> = futures::stream::iter(work)
            .map(|(id, chunk, path, url, store)| async move {
                let outcome = check(&*store, &id, chunk).await;
                (id, path, url, outcome)
            })
            .buffer_unordered(a.jobs.max(1))
            .collect()
            .await;
        anyhow::Ok((checked, results))
    })?;
    let mut bad = 0usize;
    let mut lines: Vec<String> = problems
        .into_iter()
        .filter_map(|(id, path, url, o)| match o {
            Outcome::Ok => None,
            Outcome::Missing => Some(format!("missing {id} on {url} (in {})", fmt::name(&path))),
            Outcome::Bad(why) => {
                Some(format!("bad {id} on {url} (in {}): {why}", fmt::name(&path)))
            }
        })
        .collect();
    lines.sort();
    for l in &lines {
        crate::outln!("{l}");
        bad += 1;
    }
    eprintln!(
        "verified {} chunks on {} store(s): {} checks, {} problem(s)",
        chunks.len(),
        urls.len(),
        checked,
        bad
    );
    Ok(if bad == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

async fn check(store: &dyn ChunkStore, id: &ChunkId, chunk: DataChunk) -> Outcome {
    let blob = match store.get(id).await {
        Ok(Some(b)) => b,
        Ok(None) => return Outcome::Missing,
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
