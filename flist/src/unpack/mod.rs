//! Unpacking: an flist and a store become a directory tree.
//!
//! Everything is created relative to directory file descriptors with
//! `O_NOFOLLOW` and the `*at` calls, so no symlink, `..` or absolute name —
//! in the flist or planted in the destination — can make it write outside
//! the destination: such an attempt fails with an error instead.
//!
//! Passes: (1) create directories, empty files, symlinks, devices, fifos and
//! sockets in walk order; (2) fill file contents in parallel (all-zero
//! chunks stay holes) and set their metadata; (3) hardlinks; (4) directory
//! metadata, deepest first (so read-only directories are filled first and
//! their mtimes are not disturbed by later creations).
//!
//! Metadata order per entry: owner, then xattrs (chown clears
//! security.capability), then mode (chown clears setuid), then mtime.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;

use crate::content::{DataChunk, Store, stream_file};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Ino, Inode, Kind};
use crate::names::{check_name, components, show};
use crate::sys;
use crate::tree::{Step, Tree, walk};

/// How to unpack.
#[derive(Clone, Debug)]
pub struct UnpackOptions {
    /// Files filled at once.
    pub jobs: usize,
    /// Chunk fetches in flight per file.
    pub ahead: usize,
    /// Give entries the flist's owners (default: when running as root,
    /// like tar; otherwise every entry belongs to the caller).
    pub same_owner: bool,
    /// Create device nodes (default); false skips them and counts them.
    pub devices: bool,
    /// Give `dest` itself the mode, owner and mtime of the flist's root
    /// (default false: DEST keeps its own; an flist must not loosen it).
    pub root_attrs: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        UnpackOptions {
            jobs: (cores * 2).max(4),
            ahead: 4,
            same_owner: sys::is_root(),
            devices: true,
            root_attrs: false,
        }
    }
}

/// What an unpack did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnpackReport {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
    pub hardlinks: u64,
    /// Device nodes not created (`devices: false`).
    pub devices_skipped: u64,
}

struct Item {
    path: Vec<u8>,
    inode: Inode,
}

/// Split a relative path into (parent names, last name).
fn split(path: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut names: Vec<&[u8]> = components(path).collect();
    let last = names.pop().unwrap_or(b"");
    (names, last)
}

/// Open the directory `names` below `root` one level at a time, refusing
/// symlinks (ELOOP) at every step.
fn open_below(root: &OwnedFd, names: &[&[u8]], whole: &[u8]) -> Result<OwnedFd> {
    let mut cur = root.try_clone().map_err(|e| Error::io("dup destination fd", e))?;
    for n in names {
        cur = sys::open_dir_at(cur.as_raw_fd(), n)
            .map_err(|e| Error::io(format!("open directory {} for {}", show(n), show(whole)), e))?;
    }
    Ok(cur)
}

/// Unpack `tree` into `dest` (created if missing; must not already hold
/// any of the names). Blocks; call it outside the runtime `rt`.
pub fn unpack<T: Tree + ?Sized>(
    tree: &T,
    store: Store,
    rt: tokio::runtime::Handle,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackReport> {
    // Read and check the whole tree before touching the destination.
    let items = plan(tree)?;
    std::fs::create_dir_all(dest)
        .map_err(|e| Error::io(format!("create {}", dest.display()), e))?;
    let root: OwnedFd =
        File::open(dest).map_err(|e| Error::io(format!("open {}", dest.display()), e))?.into();
    let mut report = UnpackReport::default();
    let files = create_entries(&root, &items, opts, &mut report)?;
    fill_files(tree, &root, &items, &files, store, rt, opts, &mut report)?;
    link_hardlinks(&root, &items, &mut report)?;
    finish_dirs(&root, &items, opts)?;
    Ok(report)
}

/// Every entry in walk order, names checked.
fn plan<T: Tree + ?Sized>(tree: &T) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    walk(tree, tree.root(), b"", &mut |path, inode| {
        if !path.is_empty() {
            let (_, name) = split(path);
            check_name(name).map_err(|e| {
                Error::new(ErrorKind::Escape, format!("refusing entry {}: {e}", show(path)))
            })?;
        } else if inode.kind != Kind::Dir {
            return Err(Error::new(ErrorKind::Corrupt, "the flist root is not a directory"));
        }
        items.push(Item { path: path.to_vec(), inode: inode.clone() });
        Ok(Step::Continue)
    })?;
    Ok(items)
}

/// Pass 1. Returns the indexes of the first name of every regular file.
fn create_entries(
    root: &OwnedFd,
    items: &[Item],
    opts: &UnpackOptions,
    report: &mut UnpackReport,
) -> Result<Vec<usize>> {
    let mut files = Vec::new();
    let mut first_name: HashMap<Ino, usize> = HashMap::new();
    // Open directories along the current walk path: (path, fd).
    let mut open: Vec<(Vec<u8>, OwnedFd)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        report.entries += 1;
        if item.path.is_empty() {
            continue; // the destination itself
        }
        let (parents, name) = split(&item.path);
        let parent_path = parents.join(&b'/');
        while open.last().is_some_and(|(p, _)| *p != parent_path) {
            open.pop();
        }
        let dir = match open.last() {
            Some((_, fd)) => fd,
            None if parent_path.is_empty() => root,
            None => {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!("{} comes before its directory", show(&item.path)),
                ));
            }
        };
        let dfd = dir.as_raw_fd();
        let ctx = |what: &str| format!("{what} {}", show(&item.path));
        let ino = &item.inode;
        match ino.kind {
            Kind::Dir => {
                sys::mkdirat(dfd, name, 0o700).map_err(|e| Error::io(ctx("mkdir"), e))?;
                let fd = sys::open_dir_at(dfd, name).map_err(|e| Error::io(ctx("open"), e))?;
                open.push((item.path.clone(), fd));
            }
            Kind::File => {
                if first_name.contains_key(&ino.ino) {
                    continue; // a hardlink: pass 3
                }
                first_name.insert(ino.ino, i);
                let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
                sys::openat(dfd, name, flags, 0o600).map_err(|e| Error::io(ctx("create"), e))?;
                files.push(i);
            }
            Kind::Symlink => {
                sys::symlinkat(&ino.target, dfd, name).map_err(|e| Error::io(ctx("symlink"), e))?;
                set_meta_at(dir, name, ino, &item.path, opts)?;
            }
            Kind::CharDev | Kind::BlockDev if !opts.devices => {
                report.devices_skipped += 1;
            }
            Kind::CharDev | Kind::BlockDev | Kind::Fifo | Kind::Socket => {
                let rdev =
                    if matches!(ino.kind, Kind::CharDev | Kind::BlockDev) { ino.rdev } else { 0 };
                sys::mknodat(dfd, name, ino.kind.mode_bits() | 0o600, rdev)
                    .map_err(|e| Error::io(ctx("mknod"), e))?;
                set_meta_at(dir, name, ino, &item.path, opts)?;
            }
        }
    }
    Ok(files)
}

/// Metadata of a non-directory, non-regular entry `name` in `dir`.
fn set_meta_at(
    dir: &OwnedFd,
    name: &[u8],
    ino: &Inode,
    path: &[u8],
    opts: &UnpackOptions,
) -> Result<()> {
    let ctx = |what: &str| format!("{what} {}", show(path));
    let dfd = dir.as_raw_fd();
    if opts.same_owner {
        sys::lchownat(dfd, name, ino.uid, ino.gid).map_err(|e| Error::io(ctx("chown"), e))?;
    }
    let proc = sys::proc_path(dir, name);
    for x in &ino.xattrs {
        sys::lsetxattr(&proc, x)
            .map_err(|e| Error::io(format!("set xattr {} on {}", show(&x.name), show(path)), e))?;
    }
    if ino.kind != Kind::Symlink {
        sys::chmodat(dfd, name, ino.perm).map_err(|e| Error::io(ctx("chmod"), e))?;
    }
    sys::set_mtime_at(dfd, name, ino.mtime_ns).map_err(|e| Error::io(ctx("set mtime of"), e))
}

/// Metadata of an open regular file or directory.
fn set_meta_fd(fd: &impl AsRawFd, ino: &Inode, path: &[u8], same_owner: bool) -> Result<()> {
    let ctx = |what: &str| format!("{what} {}", show(path));
    if same_owner {
        sys::fchown(fd, ino.uid, ino.gid).map_err(|e| Error::io(ctx("chown"), e))?;
    }
    for x in &ino.xattrs {
        sys::fsetxattr(fd, x)
            .map_err(|e| Error::io(format!("set xattr {} on {}", show(&x.name), show(path)), e))?;
    }
    sys::fchmod(fd, ino.perm).map_err(|e| Error::io(ctx("chmod"), e))?;
    sys::futimens(fd, ino.mtime_ns).map_err(|e| Error::io(ctx("set mtime of"), e))
}

/// Pass 2: contents and metadata of every regular file, `opts.jobs` at once.
#[allow(clippy::too_many_arguments)]
fn fill_files<T: Tree + ?Sized>(
    tree: &T,
    root: &OwnedFd,
    items: &[Item],
    files: &[usize],
    store: Store,
    rt: tokio::runtime::Handle,
    opts: &UnpackOptions,
    report: &mut UnpackReport,
) -> Result<()> {
    // Chunk lists are read here (the tree need not be Sync across tasks).
    let mut work = Vec::with_capacity(files.len());
    for &i in files {
        let item = &items[i];
        let data = tree.data(item.inode.ino).map_err(|e| e.context_prefix(show(&item.path)))?;
        let (parents, name) = split(&item.path);
        let dir = open_below(root, &parents, &item.path)?;
        let f: File = sys::openat(dir.as_raw_fd(), name, libc::O_WRONLY, 0)
            .map_err(|e| Error::io(format!("open {}", show(&item.path)), e))?
            .into();
        report.files += 1;
        report.bytes += item.inode.size;
        work.push((f, i, data));
        // Keep the number of open files bounded: fill in batches.
        if work.len() >= 256 {
            fill_batch(std::mem::take(&mut work), items, &store, &rt, opts)?;
        }
    }
    fill_batch(work, items, &store, &rt, opts)
}

fn fill_batch(
    work: Vec<(File, usize, Vec<DataChunk>)>,
    items: &[Item],
    store: &Store,
    rt: &tokio::runtime::Handle,
    opts: &UnpackOptions,
) -> Result<()> {
    let jobs: Vec<_> = work
        .into_iter()
        .map(|(f, i, data)| {
            let store = store.clone();
            let inode = items[i].inode.clone();
            let path = items[i].path.clone();
            let (ahead, same_owner) = (opts.ahead, opts.same_owner);
            async move { fill_one(Arc::new(f), inode, path, data, store, ahead, same_owner).await }
        })
        .collect();
    let results: Vec<Result<()>> =
        rt.block_on(futures::stream::iter(jobs).buffer_unordered(opts.jobs.max(1)).collect());
    results.into_iter().collect()
}

async fn fill_one(
    f: Arc<File>,
    inode: Inode,
    path: Vec<u8>,
    data: Vec<DataChunk>,
    store: Store,
    ahead: usize,
    same_owner: bool,
) -> Result<()> {
    let mut off = 0u64;
    let mut chunks = std::pin::pin!(stream_file(store, data, ahead));
    while let Some(plain) = chunks.next().await {
        let plain = plain.map_err(|e| e.context_prefix(show(&path)))?;
        let len = plain.len() as u64;
        let f = f.clone();
        let p = path.clone();
        tokio::task::spawn_blocking(move || {
            write_sparse(&f, &plain, off).map_err(|e| Error::io(format!("write {}", show(&p)), e))
        })
        .await
        .map_err(|e| Error::with_source(ErrorKind::Io, "write task", e))??;
        off += len;
    }
    tokio::task::spawn_blocking(move || {
        f.set_len(off).map_err(|e| Error::io(format!("truncate {}", show(&path)), e))?;
        set_meta_fd(&*f, &inode, &path, same_owner)
    })
    .await
    .map_err(|e| Error::with_source(ErrorKind::Io, "metadata task", e))?
}

/// Write `data` at `off`, leaving 4 KiB blocks of zeros as holes (the file
/// was created empty, so skipped blocks read as zeros): sparse files come
/// back sparse.
fn write_sparse(f: &File, data: &[u8], off: u64) -> std::io::Result<()> {
    const BLOCK: usize = 4096;
    let mut run_start: Option<usize> = None;
    let mut pos = 0;
    while pos < data.len() {
        let end = (pos + BLOCK).min(data.len());
        let zero = data[pos..end].iter().all(|&b| b == 0);
        match (zero, run_start) {
            (false, None) => run_start = Some(pos),
            (true, Some(s)) => {
                f.write_all_at(&data[s..pos], off + s as u64)?;
                run_start = None;
            }
            _ => {}
        }
        pos = end;
    }
    if let Some(s) = run_start {
        f.write_all_at(&data[s..], off + s as u64)?;
    }
    Ok(())
}

/// Pass 3: every further name of a hardlinked file.
fn link_hardlinks(root: &OwnedFd, items: &[Item], report: &mut UnpackReport) -> Result<()> {
    let mut first: HashMap<Ino, &[u8]> = HashMap::new();
    for item in items.iter().filter(|i| i.inode.kind == Kind::File) {
        let Some(&orig) = first.get(&item.inode.ino) else {
            first.insert(item.inode.ino, &item.path);
            continue;
        };
        let (op, oname) = split(orig);
        let (np, nname) = split(&item.path);
        let odir = open_below(root, &op, orig)?;
        let ndir = open_below(root, &np, &item.path)?;
        sys::linkat(odir.as_raw_fd(), oname, ndir.as_raw_fd(), nname).map_err(|e| {
            Error::io(format!("hardlink {} to {}", show(&item.path), show(orig)), e)
        })?;
        report.hardlinks += 1;
    }
    Ok(())
}

/// Pass 4: directory metadata, deepest first; the root's goes on `dest`
/// only with `root_attrs` (else DEST keeps its own mode and owner).
fn finish_dirs(root: &OwnedFd, items: &[Item], opts: &UnpackOptions) -> Result<()> {
    let dirs = items.iter().rev().filter(|i| i.inode.kind == Kind::Dir);
    for item in dirs.filter(|i| opts.root_attrs || !i.path.is_empty()) {
        let names: Vec<&[u8]> = components(&item.path).collect();
        let fd = open_below(root, &names, &item.path)?;
        set_meta_fd(&fd, &item.inode, &item.path, opts.same_owner)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
