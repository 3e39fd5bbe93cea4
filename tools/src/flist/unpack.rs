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
    let r = unpack(&*tree, store, rt.handle().clone(), &a.dest, &opts)?;
    eprintln!(
        "unpacked {} entries: {} files, {} bytes, {} extra hardlinks into {}",
        r.entries,
        r.files,
        r.bytes,
        r.hardlinks,
        a.dest.display()
    );
    Ok(ExitCode::SUCCESS)
}
