//! `chunkstore bench --only shared`: reading the node store from a process
//! that does not own it (through the owner's socket) against the owner
//! reading the same chunks itself, in the same run.
//!
//! This process fills a store with 1 MiB random blobs and owns it. Each
//! round, in alternating order: the owner reads every chunk with N in
//! flight; then a child process (`chunkstore read-all`, this binary) opens
//! the same store, becomes a client, and reads every chunk with N in
//! flight. Both read warm (the page cache holds the segments), so the ratio
//! is the cost of the socket hop. Best of the rounds on each side.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::StreamExt;
use zosfs_store::node::{NodeStore, Role};
use zosfs_store::{ChunkId, ChunkStore, OpenOptions};

use super::bench::random_bytes;

#[derive(clap::Args, Debug)]
pub struct SharedArgs {
    /// MiB of chunks (1 MiB each) the shared-store bench reads.
    #[arg(long, default_value_t = 1024)]
    pub shared_mib: usize,
}

#[derive(clap::Args, Debug)]
pub struct ReadAllArgs {
    /// The store (local:///path); it must be owned by another process for
    /// a client measurement.
    #[arg(long)]
    pub store: String,
    /// Reads in flight.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
}

/// Read every chunk of `store` with `n` in flight: (bytes, seconds).
async fn read_all(store: &NodeStore, ids: &[ChunkId], n: usize) -> Result<(u64, f64)> {
    let t = Instant::now();
    let sizes: Vec<Result<u64>> = futures::stream::iter(ids.iter().copied())
        .map(|id| async move {
            let b = store.get(&id).await?.with_context(|| format!("chunk {id} missing"))?;
            Ok(b.len() as u64)
        })
        .buffer_unordered(n.max(1))
        .collect()
        .await;
    let bytes = sizes.into_iter().sum::<Result<u64>>()?;
    Ok((bytes, t.elapsed().as_secs_f64()))
}

/// `chunkstore read-all` (hidden): the client side of the bench. Prints
/// `bytes seconds role`.
pub async fn read_all_cmd(a: ReadAllArgs) -> Result<std::process::ExitCode> {
    let path = super::stat::local_path(&a.store)?;
    let store = NodeStore::open(&path, &OpenOptions::default())?;
    let mut ids = store.list_ids().await?;
    ids.sort();
    let (bytes, secs) = read_all(&store, &ids, a.concurrency).await?;
    let role = match store.role() {
        Role::Owner => "owner",
        Role::Client { .. } => "client",
    };
    crate::outln!("{bytes} {secs} {role}");
    Ok(std::process::ExitCode::SUCCESS)
}

fn client_round(url: &str, n: usize) -> Result<f64> {
    let exe = std::env::current_exe().context("locate chunkstore")?;
    let out = Command::new(exe)
        .args(["read-all", "--store", url, "--concurrency", &n.to_string()])
        .output()
        .context("run chunkstore read-all")?;
    if !out.status.success() {
        bail!("read-all failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = text.split_whitespace().collect();
    if f.len() != 3 || f[2] != "client" {
        bail!("read-all answered {text:?}: it should have been a client of this process");
    }
    let (bytes, secs): (f64, f64) = (f[0].parse()?, f[1].parse()?);
    Ok(bytes / super::bench::MIB / secs)
}

pub async fn run(a: &SharedArgs, concurrency: usize, rounds: usize, dir: &Path) -> Result<()> {
    let path = dir.join("shared");
    let url = format!("local://{}", path.display());
    let store = NodeStore::open(&path, &OpenOptions::default())?;
    if store.role() != Role::Owner {
        bail!("{url}: this process should own its new store");
    }
    crate::outln!(
        "== shared node store: {} MiB of 1 MiB chunks read warm, {concurrency} in flight; best of {} rounds each, alternating",
        a.shared_mib,
        rounds.max(1)
    );
    let mut ids = Vec::with_capacity(a.shared_mib);
    for i in 0..a.shared_mib as u64 {
        let blob = Bytes::from(random_bytes(i ^ 0x5EED_0000, 1 << 20));
        let id = ChunkId::of_blob(&blob);
        store.put(&id, blob).await?;
        ids.push(id);
    }
    ids.sort();
    // One warm-up read so both sides find the segments in the page cache.
    read_all(&store, &ids, concurrency).await?;
    let (mut owner, mut client) = (0f64, 0f64);
    for round in 0..rounds.max(1) {
        for k in 0..2 {
            if (k + round) % 2 == 0 {
                let (bytes, secs) = read_all(&store, &ids, concurrency).await?;
                owner = owner.max(bytes as f64 / super::bench::MIB / secs);
            } else {
                let u = url.clone();
                let c =
                    tokio::task::spawn_blocking(move || client_round(&u, concurrency)).await??;
                client = client.max(c);
            }
        }
    }
    crate::outln!("   owner reads itself       {owner:>7.0} MB/s");
    crate::outln!("   another process (client) {client:>7.0} MB/s");
    crate::outln!("   client/owner             {:.2}x", client / owner);
    Ok(())
}
