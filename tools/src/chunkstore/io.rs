//! put / get / has.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use zosfs_store::chunk::{DEFAULT_CHUNK_SIZE, decode, encode_with};
use zosfs_store::{ChunkId, ChunkKey, ChunkStore};

use super::StoreArgs;

#[derive(clap::Args, Debug)]
pub struct PutArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Chunk size in bytes for splitting files.
    #[arg(long, default_value_t = DEFAULT_CHUNK_SIZE)]
    pub chunk_size: usize,
    /// zstd level (0: no compression).
    #[arg(long, default_value_t = zosfs_store::chunk::DEFAULT_LEVEL)]
    pub level: i32,
    /// Files to store (`-` for stdin).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Chunk id (64 hex digits).
    pub id: ChunkId,
    /// Decode with this key and print the plaintext instead of the blob.
    #[arg(long)]
    pub key: Option<ChunkKey>,
}

#[derive(clap::Args, Debug)]
pub struct HasArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(required = true)]
    pub ids: Vec<ChunkId>,
}

fn open_input(p: &PathBuf) -> Result<Box<dyn Read>> {
    if p.as_os_str() == "-" {
        return Ok(Box::new(std::io::stdin().lock()));
    }
    Ok(Box::new(std::fs::File::open(p).with_context(|| format!("open {}", p.display()))?))
}

/// Prints `<file> <index> <id> <key> <len>` per chunk.
pub async fn put(a: PutArgs) -> Result<ExitCode> {
    if !(zosfs_store::chunk::CHUNK_SIZE_MIN..=zosfs_store::chunk::CHUNK_SIZE_MAX)
        .contains(&a.chunk_size)
    {
        bail!("--chunk-size {} is outside 64 KiB..4 MiB", a.chunk_size);
    }
    let store = a.store.open().await?;
    let mut out = std::io::stdout().lock();
    for f in &a.files {
        let mut input = open_input(f)?;
        let mut buf = vec![0u8; a.chunk_size];
        for index in 0u64.. {
            let n =
                read_full(&mut input, &mut buf).with_context(|| format!("read {}", f.display()))?;
            if n == 0 && index > 0 {
                break;
            }
            let enc = encode_with(&buf[..n], a.level)?;
            store.put(&enc.chunk.id, enc.blob).await?;
            writeln!(out, "{} {index} {} {} {}", f.display(), enc.chunk.id, enc.chunk.key, n)?;
            if n < buf.len() {
                break;
            }
        }
    }
    store.sync().await?;
    crate::say_queued(&store, &a.store.write.stores);
    Ok(ExitCode::SUCCESS)
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..])? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

pub async fn get(a: GetArgs) -> Result<ExitCode> {
    let store = a.store.open().await?;
    let Some(blob) = store.get(&a.id).await? else {
        bail!("chunk {} not found in {}", a.id, store.url());
    };
    let bytes = match a.key {
        Some(key) => decode(&blob, &key)?,
        None => blob.to_vec(),
    };
    std::io::stdout().lock().write_all(&bytes)?;
    // Let read repairs this read started finish before exiting.
    store.sync().await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn has(a: HasArgs) -> Result<ExitCode> {
    let store = a.store.open().await?;
    let present = store.has_many(&a.ids).await?;
    let mut missing = 0;
    for (id, ok) in a.ids.iter().zip(present) {
        if !ok {
            crate::outln!("missing {id}");
            missing += 1;
        }
    }
    Ok(if missing == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
