//! `flist ls` and `flist stat`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use zosfs_flist::names::{join, path_bytes};
use zosfs_flist::{Inode, Kind, Step, Tree, walk};

use super::{Ctx, fmt};

#[derive(clap::Args, Debug)]
pub struct LsArgs {
    /// Long listing: mode, links, owner, size, mtime, name (-> target).
    #[arg(short = 'l')]
    pub long: bool,
    /// Recurse into subdirectories (prints paths).
    #[arg(short = 'R')]
    pub recursive: bool,
    pub flist: PathBuf,
    /// Directory (or entry) inside the flist; default the root.
    pub path: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct StatArgs {
    pub flist: PathBuf,
    /// Path inside the flist (a final symlink is not followed).
    pub path: PathBuf,
}

fn line(out: &mut impl Write, long: bool, shown: &[u8], inode: &Inode) -> std::io::Result<()> {
    let mut name = fmt::name(shown);
    if name.is_empty() {
        name = ".".into();
    }
    if !long {
        return writeln!(out, "{name}");
    }
    let target = if inode.kind == Kind::Symlink {
        format!(" -> {}", fmt::name(&inode.target))
    } else {
        String::new()
    };
    writeln!(
        out,
        "{} {:>3} {:>5} {:>5} {:>12} {} {name}{target}",
        fmt::mode(inode),
        inode.nlink,
        inode.uid,
        inode.gid,
        fmt::size(inode),
        &fmt::time_ns(inode.mtime_ns)[..16],
    )
}

pub fn run_ls(ctx: &Ctx, a: LsArgs) -> Result<ExitCode> {
    let tree = ctx.open_tree(&a.flist)?;
    let start_path = a.path.as_deref().map(path_bytes).unwrap_or(b"").to_vec();
    let start = tree.resolve(&start_path)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if start.kind != Kind::Dir {
        line(&mut out, a.long, &start_path, &start)?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let prefix: Vec<u8> =
        zosfs_flist::names::components(&start_path).fold(Vec::new(), |acc, c| join(&acc, c));
    if a.recursive {
        walk(&*tree, start.ino, &prefix, &mut |path, inode| {
            if !path.is_empty() && path != prefix.as_slice() {
                line(&mut out, a.long, path, inode)
                    .map_err(|e| zosfs_flist::Error::io("write", e))?;
            }
            Ok(Step::Continue)
        })?;
    } else {
        for e in tree.readdir_all(start.ino)? {
            let inode = tree.getattr(e.ino)?;
            line(&mut out, a.long, &e.name, &inode)?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_stat(ctx: &Ctx, a: StatArgs) -> Result<ExitCode> {
    let tree = ctx.open_tree(&a.flist)?;
    let p = path_bytes(&a.path);
    let i = tree.resolve(p)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "path:   {}", fmt::name(p))?;
    writeln!(out, "type:   {}", i.kind.name())?;
    writeln!(out, "inode:  {}", i.ino)?;
    writeln!(out, "mode:   {:o} ({})", i.mode(), fmt::mode(&i))?;
    writeln!(out, "links:  {}", i.nlink)?;
    writeln!(out, "uid:    {}", i.uid)?;
    writeln!(out, "gid:    {}", i.gid)?;
    writeln!(out, "size:   {}", i.size)?;
    writeln!(out, "mtime:  {} ({} ns)", fmt::time_ns(i.mtime_ns), i.mtime_ns)?;
    if matches!(i.kind, Kind::CharDev | Kind::BlockDev) {
        let (ma, mi) = i.rdev_major_minor();
        writeln!(out, "device: {ma}, {mi}")?;
    }
    if i.kind == Kind::Symlink {
        writeln!(out, "target: {}", fmt::name(&i.target))?;
    }
    for x in &i.xattrs {
        writeln!(out, "xattr:  {}={}", fmt::name(&x.name), fmt::value(&x.value))?;
    }
    if i.kind == Kind::File {
        let data = tree.data(i.ino)?;
        writeln!(out, "chunks: {}", data.len())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Used by `inspect` and `diff`: every (path, inode) of a tree.
pub fn all_entries(tree: &dyn Tree) -> Result<Vec<(Vec<u8>, Inode)>> {
    let mut v = Vec::new();
    walk(tree, tree.root(), b"", &mut |p, i| {
        v.push((p.to_vec(), i.clone()));
        Ok(Step::Continue)
    })?;
    Ok(v)
}
