//! `flist unpack`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use zosfs_flist::unpack::{UnpackOptions, unpack};

use super::{Ctx, ReadStoreArgs};

#[derive(clap::Args, Debug)]
pub struct UnpackArgs {
    pub flist: PathBuf,
    #[command(flatten)]
    pub store: ReadStoreArgs,
    /// Files filled at once.
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Do not give entries the flist's owners: everything belongs to the
    /// caller (the default when not running as root, like tar).
    #[arg(long)]
    pub no_same_owner: bool,
    /// Give entries the flist's owners even when not root (needs the
    /// privilege to chown; the default as root).
    #[arg(long, conflicts_with = "no_same_owner")]
    pub same_owner: bool,
    /// Skip character and block devices (counted in the summary).
    #[arg(long)]
    pub no_devices: bool,
    /// Give DEST itself the mode, owner and mtime of the flist's root
    /// (default: DEST keeps its own).
    #[arg(long)]
    pub same_root_perms: bool,
    /// Destination directory (created if missing; must not hold the names).
    pub dest: PathBuf,
}

pub fn run(ctx: &Ctx, a: UnpackArgs) -> Result<ExitCode> {
    let tree = ctx.open_tree(&a.flist)?;
    let rt = super::runtime()?;
    let store = rt.block_on(a.store.open(&*tree))?;
    let mut opts = UnpackOptions::default();
    if let Some(j) = a.jobs {
        opts.jobs = j;
    }
    opts.same_owner = (opts.same_owner || a.same_owner) && !a.no_same_owner;
    opts.devices = !a.no_devices;
    opts.root_attrs = a.same_root_perms;
    let r = unpack(&*tree, store, rt.handle().clone(), &a.dest, &opts)?;
    eprintln!(
        "unpacked {} entries: {} files, {} bytes, {} extra hardlinks, {} devices skipped into {}",
        r.entries,
        r.files,
        r.bytes,
        r.hardlinks,
        r.devices_skipped,
        a.dest.display()
    );
    Ok(ExitCode::SUCCESS)
}
