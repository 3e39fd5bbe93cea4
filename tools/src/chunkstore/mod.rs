//! `chunkstore` subcommands. Each lives in its own module; this file only
//! parses arguments and dispatches.

mod bench;
mod bench_lazy;
mod bench_replicated;
mod bench_shared;
mod delay_proxy;
mod fsck;
mod gc;
mod io;
mod own;
mod repair;
mod serve;
mod stat;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use zosfs_store::{Router, RouterConfig};

/// Operate zosfs chunk stores.
///
/// STORE URLs: local:///path, dir:///path, zdb://[:pw@]host:port/ns,
/// zdb+unix:///sock?ns=name, redis://host:port/db; prefix a URL with
/// `00-7f=` to route only ids whose first byte is in that range. Several
/// --store flags replicate. Passwords never appear in output.
#[derive(Parser, Debug)]
#[command(name = "chunkstore", version)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Store selection shared by the subcommands that talk to stores.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    #[command(flatten)]
    pub write: crate::WriteStores,
    /// Replication queue directory (default: under the first local:// store).
    #[arg(long, env = "ZOSFS_QUEUE_DIR")]
    pub queue_dir: Option<std::path::PathBuf>,
    /// Milliseconds a read waits for one replica before also asking the next.
    #[arg(long, default_value_t = 50)]
    pub hedge_ms: u64,
    /// Network timeout per request, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
}

impl StoreArgs {
    pub fn config(&self) -> RouterConfig {
        let mut cfg = RouterConfig {
            quorum: self.write.quorum,
            queue_dir: self.queue_dir.clone(),
            hedge_delay: std::time::Duration::from_millis(self.hedge_ms),
            ..Default::default()
        };
        cfg.open.timeout = std::time::Duration::from_millis(self.timeout_ms);
        cfg
    }

    pub async fn open(&self) -> Result<std::sync::Arc<Router>> {
        Ok(zosfs_store::router::open_urls(&self.write.stores, &self.config()).await?)
    }

    /// The store URLs without passwords, for messages.
    pub fn stores_redacted(&self) -> String {
        crate::redacted(&self.write.stores).join(", ")
    }
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Encode files as chunks, store them, print one id per chunk.
    Put(io::PutArgs),
    /// Write the blob of a chunk id to stdout (or decode it with --key).
    Get(io::GetArgs),
    /// Exit 0 if every id is present, 1 otherwise; prints the missing ones.
    Has(io::HasArgs),
    /// Finish replication now: drain the queue, re-replicate ids.
    Repair(repair::RepairArgs),
    // Help text: the doc comment of ServeArgs.
    Serve(serve::ServeArgs),
    /// Counts, bytes, disk bytes, hit ratio and engine of stores.
    Stat(stat::StatArgs),
    /// Verify every record of a local store; quarantine bad ones.
    Fsck(fsck::FsckArgs),
    // Help text: the doc comment of GcArgs.
    Gc(gc::GcArgs),
    // Help text: the doc comment of OwnArgs.
    Own(own::OwnArgs),
    /// Benchmarks with ratios against a peer run in the same invocation.
    Bench(bench::BenchArgs),
    /// A TCP proxy adding a fixed delay to every request (benchmarks).
    DelayProxy(delay_proxy::DelayProxyArgs),
    /// Read every chunk of a store and print `bytes seconds role` (the
    /// client side of `bench --only shared`).
    #[command(hide = true)]
    ReadAll(bench_shared::ReadAllArgs),
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let rt = runtime()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Put(a) => io::put(a).await,
            Cmd::Get(a) => io::get(a).await,
            Cmd::Has(a) => io::has(a).await,
            Cmd::Repair(a) => repair::repair(a).await,
            Cmd::Serve(a) => serve::serve(a).await,
            Cmd::Stat(a) => stat::stat(a).await,
            Cmd::Fsck(a) => fsck::fsck(a).await,
            Cmd::Gc(a) => gc::gc(a).await,
            Cmd::Own(a) => own::own(a).await,
            Cmd::Bench(a) => bench::bench(a).await,
            Cmd::DelayProxy(a) => delay_proxy::run(a).await,
            Cmd::ReadAll(a) => bench_shared::read_all_cmd(a).await,
        }
    })
}
