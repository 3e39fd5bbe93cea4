//! Helpers for the remote-store and router tests: redis-server with
//! options, restarts on a fixed port, test chunks, the 0-db replay peer.

pub mod replay;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Result;
use zosfs_store::chunk::{EncodedChunk, encode};
use zosfs_store::{ChunkStore, DynStore, OpenOptions, StoreUrl};

use crate::{ChildGuard, free_port, wait_port};

/// redis-server on `port` (no persistence) with extra arguments, e.g.
/// `["--requirepass", "pw"]`.
pub fn start_redis_on(dir: &Path, port: u16, extra: &[&str]) -> Result<ChildGuard> {
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ])
    .arg("--dir")
    .arg(dir)
    .args(extra)
    .stdout(Stdio::null());
    let guard = ChildGuard::spawn(cmd, format!("redis-server :{port}"))?;
    wait_port(port, Duration::from_secs(10))?;
    Ok(guard)
}

/// redis-server on a free port with extra arguments.
pub fn start_redis_with(dir: &Path, extra: &[&str]) -> Result<(ChildGuard, u16)> {
    let port = free_port();
    Ok((start_redis_on(dir, port, extra)?, port))
}

/// Short timeouts so failure tests finish quickly.
pub fn quick_opts() -> OpenOptions {
    OpenOptions { timeout: Duration::from_secs(2), attempts: 2, pool_size: 4, ..Default::default() }
}

/// Open one backend from a URL string.
pub async fn open(url: &str, opts: &OpenOptions) -> zosfs_store::Result<DynStore> {
    let u: StoreUrl = url.parse()?;
    zosfs_store::open_backend(&u, opts).await
}

/// Distinct, deterministic test chunks of about `size` bytes.
pub fn chunk(i: u64, size: usize) -> EncodedChunk {
    let mut plain = vec![0u8; size];
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for b in plain.iter_mut() {
        // xorshift: incompressible, so blobs keep their size.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    encode(&plain).expect("encode")
}

/// Whether `store` holds exactly `blob` under `id`.
pub async fn holds(store: &dyn ChunkStore, c: &EncodedChunk) -> bool {
    matches!(store.get(&c.chunk.id).await, Ok(Some(b)) if b == c.blob)
}

/// `chunkstore serve` on 127.0.0.1:`port` with its data (journals, and
/// values in a local:// store) under `data`; restartable on the same data
/// and port.
pub fn start_serve_on(data: &Path, port: u16) -> Result<ChildGuard> {
    std::fs::create_dir_all(data)?;
    let mut cmd = Command::new(crate::bin("chunkstore"));
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(data)
        .arg("--values")
        .arg(format!("local://{}", data.join("values").display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let guard = ChildGuard::spawn(cmd, format!("chunkstore serve :{port}"))?;
    wait_port(port, Duration::from_secs(30))?;
    Ok(guard)
}
