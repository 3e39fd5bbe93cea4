//! `chunkstore` subcommands. Each lives in its own module; this file only
//! parses arguments and dispatches.

mod io;

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
    /// Store URL (repeatable: writes go to every matching store).
    #[arg(short, long = "store", env = "ZOSFS_STORE", value_delimiter = ',', required = true)]
    pub stores: Vec<String>,
    /// Stores that must take a write (default: all matching).
    #[arg(long)]
    pub quorum: Option<usize>,
}

impl StoreArgs {
    pub async fn open(&self) -> Result<std::sync::Arc<Router>> {
        let cfg = RouterConfig { quorum: self.quorum, ..Default::default() };
        Ok(zosfs_store::router::open_urls(&self.stores, &cfg).await?)
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
        }
    })
}
