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
mod ns;
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
    /// Create, list, show, change and delete namespaces of a 0-db server.
    Ns(ns::NsArgs),
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

/// `-d`, `--pid-file`, `--log-file` of a serving command.
#[derive(clap::Args, Debug, Clone)]
pub struct DaemonArgs {
    /// Detach once serving; the command exits with the start-up outcome.
    #[arg(short = 'd', long)]
    pub daemon: bool,
    /// Write the serving process's pid here (removed at exit; a symlink
    /// at the path is refused).
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<std::path::PathBuf>,
    /// Append the log (stderr) here (a symlink at the path is refused).
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<std::path::PathBuf>,
}

impl DaemonArgs {
    pub fn options(&self) -> zosfs_store::process::daemon::DaemonOptions {
        zosfs_store::process::daemon::DaemonOptions {
            daemon: self.daemon,
            pid_file: self.pid_file.clone(),
            log_file: self.log_file.clone(),
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        // Starts its runtime itself, after detaching with -d.
        Cmd::Serve(a) => serve::run(a),
        cmd => runtime()?.block_on(run_async(cmd)),
    }
}

async fn run_async(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Put(a) => io::put(a).await,
        Cmd::Get(a) => io::get(a).await,
        Cmd::Has(a) => io::has(a).await,
        Cmd::Repair(a) => repair::repair(a).await,
        Cmd::Serve(_) => unreachable!("run() serves without a runtime of its own"),
        Cmd::Stat(a) => stat::stat(a).await,
        Cmd::Fsck(a) => fsck::fsck(a).await,
        Cmd::Gc(a) => gc::gc(a).await,
        Cmd::Ns(a) => ns::ns(a).await,
        Cmd::Own(a) => own::own(a).await,
        Cmd::Bench(a) => bench::bench(a).await,
        Cmd::DelayProxy(a) => delay_proxy::run(a).await,
        Cmd::ReadAll(a) => bench_shared::read_all_cmd(a).await,
    }
}
