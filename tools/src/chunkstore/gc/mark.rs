//! Mark: the chunk ids every kept flist references.
//!
//! Any flist that cannot be read fails the whole mark: a sweep that missed
//! one kept flist would delete its chunks, so nothing may be deleted then.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use indicatif::ProgressBar;
use zosfs_flist::{Kind, Step, Tree};
use zosfs_store::ChunkId;

/// What the kept flists reference.
pub struct Marked {
    pub flists: Vec<PathBuf>,
    pub ids: HashSet<ChunkId>,
}

/// File names taken from a directory given to `--keep` (native `.flist`,
/// 0-fs `.flist`, rfs `.fl`; the flist crate detects the format).
fn is_flist_name(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("flist" | "fl"))
}

/// The flist files named by `paths`: files as given, directories searched
/// recursively for flist names (symlinked directories are not followed,
/// so a loop cannot make the search endless).
pub fn find_flists(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let md = std::fs::metadata(p).with_context(|| format!("--keep {}", p.display()))?;
        if md.is_dir() {
            search_dir(p, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        // An empty keep set would make every chunk garbage.
        bail!(
            "no flist (*.flist, *.fl) found under --keep; refusing to treat every chunk as garbage"
        );
    }
    Ok(out)
}

fn search_dir(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let ctx = || format!("--keep: read directory {}", dir.display());
    for e in std::fs::read_dir(dir).with_context(ctx)? {
        let e = e.with_context(ctx)?;
        let path = e.path();
        let ft = e.file_type().with_context(ctx)?;
        if ft.is_dir() {
            search_dir(&path, out)?;
        } else if is_flist_name(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// Read every flist and collect the store id of each chunk of each file.
pub fn mark(paths: &[PathBuf]) -> Result<Marked> {
    let flists = find_flists(paths)?;
    let bar = ProgressBar::new(flists.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("mark {pos}/{len} flists, {msg} chunk ids")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut ids = HashSet::new();
    let opts = zosfs_flist::OpenOptions::default();
    for f in &flists {
        zosfs_flist::legacy::open_any(f, &opts)
            .and_then(|tree| add_chunks(&*tree, &mut ids, &bar))
            .with_context(|| {
                format!("kept flist {} cannot be read; nothing was deleted", f.display())
            })?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(Marked { flists, ids })
}

/// The chunk ids of every regular file of `tree` (each inode once: hard
/// links share their chunks).
fn add_chunks(
    tree: &dyn Tree,
    ids: &mut HashSet<ChunkId>,
    bar: &ProgressBar,
) -> zosfs_flist::Result<()> {
    let mut seen = HashSet::new();
    let mut files = Vec::new();
    zosfs_flist::walk(tree, tree.root(), b"", &mut |_, inode| {
        if inode.kind == Kind::File && seen.insert(inode.ino) {
            files.push(inode.ino);
        }
        Ok(Step::Continue)
    })?;
    for ino in files {
        ids.extend(tree.data(ino)?.iter().map(|c| c.store_id()));
        bar.set_message(ids.len().to_string());
    }
    Ok(())
}
