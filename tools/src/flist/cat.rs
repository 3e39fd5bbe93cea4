//! `flist cat`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use futures::StreamExt;
use zosfs_flist::Kind;
use zosfs_flist::content::stream_file;
use zosfs_flist::names::path_bytes;

use super::{Ctx, ReadStoreArgs};

#[derive(clap::Args, Debug)]
pub struct CatArgs {
    pub flist: PathBuf,
    /// Path of a file inside the flist (symlinks are followed inside it).
    pub path: PathBuf,
    #[command(flatten)]
    pub store: ReadStoreArgs,
}

pub fn run(ctx: &Ctx, a: CatArgs) -> Result<ExitCode> {
    let tree = ctx.open_tree(&a.flist)?;
    let inode = tree.resolve_follow(path_bytes(&a.path))?;
    if inode.kind != Kind::File {
        bail!("{}: is a {}, not a file", a.path.display(), inode.kind.name());
    }
    let data = tree.data(inode.ino)?;
    let rt = super::runtime()?;
    rt.block_on(async {
        let store = a.store.open(&*tree).await?;
        let mut out = std::io::stdout().lock();
        let mut s = std::pin::pin!(stream_file(store, data, 8));
        while let Some(chunk) = s.next().await {
            out.write_all(&chunk?)?;
        }
        out.flush()?;
        Ok(ExitCode::SUCCESS)
    })
}
