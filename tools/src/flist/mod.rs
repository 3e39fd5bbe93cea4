//! `flist` subcommands. Each lives in its own module; this file parses
//! arguments, opens flists and stores, and dispatches.

mod cat;
mod convert;
mod diff;
mod fmt;
mod inspect;
mod ls;
mod pack;
mod progress;
mod unpack;
mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use clap::{Parser, Subcommand};
use zosfs_flist::stores::{RoutePolicy, StoreOpener};
use zosfs_flist::{Flist, OpenOptions, Tree};
use zosfs_store::{ChunkStore, RouterConfig};

/// Make, read and check zosfs flists.
///
/// An flist is the metadata of an image (the tree, modes, owners, links,
/// xattrs and every file's chunk list); the chunks live in chunk stores.
/// STORE URLs: local:///path, dir:///path, zdb://[:pw@]host:port/ns,
/// zdb+unix:///sock?ns=name, redis://host:port/db; `00-7f=URL` routes by
/// the first id byte; several --store flags replicate.
#[derive(Parser, Debug)]
#[command(name = "flist", version)]
pub struct Cli {
    /// Directory where `.flist` files are unpacked once (by content hash).
    /// Default: /var/cache/zosfs/flists for root, else
    /// $XDG_CACHE_HOME/zosfs/flists, ~/.cache/zosfs/flists or
    /// /tmp/zosfs-flists-UID. It is made 0700 and must be a directory of
    /// this user (not a symlink), else it is refused.
    #[arg(long, global = true, env = "ZOSFS_FLIST_CACHE")]
    pub cache: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Pack a directory or a tar stream into chunks and an flist.
    Pack(pack::PackArgs),
    /// Restore the tree of an flist into a directory (as root: exactly).
    Unpack(unpack::UnpackArgs),
    /// List a directory of an flist.
    Ls(ls::LsArgs),
    /// Show everything an flist records about one path.
    Stat(ls::StatArgs),
    /// Write a file's content to stdout.
    Cat(cat::CatArgs),
    /// Summarise an flist: header, counts, sizes, chunks, dedup.
    Inspect(inspect::InspectArgs),
    /// Check that every chunk is on every replica and decodes correctly.
    Verify(verify::VerifyArgs),
    /// Paths added, removed and changed between two flists.
    Diff(diff::DiffArgs),
    /// Rewrite an flist (rfs `.fl`, 0-fs `.flist`, or native) as a native zosfs flist.
    Convert(convert::ConvertArgs),
}

/// Store selection for commands that read chunks.
#[derive(clap::Args, Debug, Clone)]
pub struct ReadStoreArgs {
    /// Store URL (repeatable). Required unless --use-flist-routes.
    #[arg(
        short,
        long = "store",
        env = "ZOSFS_STORE",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub stores: Vec<String>,
    /// Without --store: read chunks from the stores the flist records,
    /// network ones (zdb://, redis://) only. Off by default: an flist is
    /// untrusted and could name any local path or host.
    #[arg(long, env = "ZOSFS_USE_FLIST_ROUTES")]
    pub use_flist_routes: bool,
}

impl ReadStoreArgs {
    fn opener(&self) -> StoreOpener {
        let policy = if self.use_flist_routes { RoutePolicy::Remote } else { RoutePolicy::Refuse };
        StoreOpener::new(self.stores.clone(), RouterConfig::default()).route_policy(policy)
    }

    /// The URLs to use: given ones, else the flist's routes.
    pub fn urls(&self, tree: &dyn Tree) -> Result<Vec<String>> {
        Ok(self.opener().urls_for(tree.header())?)
    }

    /// The stores of the flist (see `zosfs_flist::stores`).
    pub async fn open(&self, tree: &dyn Tree) -> Result<Arc<dyn ChunkStore>> {
        Ok(self.opener().open_for(tree.header()).await?.1)
    }
}

/// Everything a command needs from the global options.
pub struct Ctx {
    pub open: OpenOptions,
}

impl Ctx {
    /// Open an flist of any supported format.
    pub fn open_tree(&self, path: &Path) -> Result<Box<dyn Tree>> {
        // The flist crate's errors name the path.
        Ok(zosfs_flist::legacy::open_any(path, &self.open)?)
    }

    pub fn open_native(&self, path: &Path) -> Result<Flist> {
        Ok(Flist::open_with(path, &self.open)?)
    }
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let mut open = OpenOptions::default();
    if let Some(c) = cli.cache {
        open.cache_dir = c;
    }
    let ctx = Ctx { open };
    match cli.cmd {
        Cmd::Pack(a) => pack::run(&ctx, a),
        Cmd::Unpack(a) => unpack::run(&ctx, a),
        Cmd::Ls(a) => ls::run_ls(&ctx, a),
        Cmd::Stat(a) => ls::run_stat(&ctx, a),
        Cmd::Cat(a) => cat::run(&ctx, a),
        Cmd::Inspect(a) => inspect::run(&ctx, a),
        Cmd::Verify(a) => verify::run(&ctx, a),
        Cmd::Diff(a) => diff::run(&ctx, a),
        Cmd::Convert(a) => convert::run(&ctx, a),
    }
}
