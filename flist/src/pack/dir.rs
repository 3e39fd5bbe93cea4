//! Directory source: walk with lstat (symlinks are never followed below the
//! root), then read file contents on several threads.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::builder::{Attrs, Builder, ContentId};
use super::pipeline::{Counters, Pipeline};
use crate::error::{Error, ErrorKind, Result};
use crate::model::Kind;
use crate::names::{path_bytes, show};
use crate::sys;

fn attrs_of(path: &Path, m: &Metadata) -> Result<Attrs> {
    let shown = || path.display().to_string();
    let kind = Kind::from_mode(m.mode()).ok_or_else(|| {
        Error::new(ErrorKind::InvalidInput, format!("{}: unknown file type", shown()))
    })?;
    let target = if kind == Kind::Symlink {
        let t =
            std::fs::read_link(path).map_err(|e| Error::io(format!("readlink {}", shown()), e))?;
        path_bytes(&t).to_vec()
    } else {
        Vec::new()
    };
    let xattrs = sys::lxattrs(path_bytes(path))
        .map_err(|e| Error::io(format!("read xattrs of {}", shown()), e))?;
    Ok(Attrs {
        kind,
        perm: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        rdev: if matches!(kind, Kind::CharDev | Kind::BlockDev) { m.rdev() } else { 0 },
        target,
        xattrs,
    })
}

/// Walk `root` into a builder; read every regular file's content into the
/// pipeline. Returns the builder and the number of content ids.
pub(super) fn read_dir_source(
    root: &Path,
    pipe: &Pipeline,
    readers: usize,
    counters: &Arc<Counters>,
) -> Result<(Builder, usize)> {
    let meta =
        std::fs::metadata(root).map_err(|e| Error::io(format!("stat {}", root.display()), e))?;
    if !meta.is_dir() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{} is not a directory", root.display()),
        ));
    }
    let mut b = Builder::new();
    b.set_root(attrs_of(root, &meta)?)?;
    let mut files: Vec<(PathBuf, u64)> = Vec::new();
    let mut links: HashMap<(u64, u64), usize> = HashMap::new();
    let mut stack: Vec<(PathBuf, Vec<Vec<u8>>)> = vec![(root.to_path_buf(), Vec::new())];
    while let Some((dir, names)) = stack.pop() {
        let mut entries: Vec<(Vec<u8>, PathBuf)> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(format!("list {}", dir.display()), e))?
            .map(|e| {
                let e = e.map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
                Ok((path_bytes(Path::new(&e.file_name())).to_vec(), e.path()))
            })
            .collect::<Result<_>>()?;
        entries.sort();
        for (name, path) in entries {
            let m = std::fs::symlink_metadata(&path)
                .map_err(|e| Error::io(format!("lstat {}", path.display()), e))?;
            let mut child_names = names.clone();
            child_names.push(name);
            let refs: Vec<&[u8]> = child_names.iter().map(|n| n.as_slice()).collect();
            let whole = path_bytes(&path);
            if !m.is_dir() && m.nlink() > 1 {
                if let Some(&node) = links.get(&(m.dev(), m.ino())) {
                    b.link_node(&refs, node, whole)?;
                    continue;
                }
            }
            let attrs = attrs_of(&path, &m)?;
            let content: Option<ContentId> = if attrs.kind == Kind::File {
                files.push((path.clone(), m.len()));
                Some(files.len() - 1)
            } else {
                None
            };
            let kind = attrs.kind;
            let node = b.insert(&refs, attrs, content, whole)?;
            if kind != Kind::Dir && m.nlink() > 1 {
                links.insert((m.dev(), m.ino()), node);
            }
            if kind == Kind::Dir {
                stack.push((path, child_names));
            }
        }
    }
    counters.files_total.store(files.len() as u64, Ordering::Relaxed);
    counters.bytes_total.store(files.iter().map(|(_, s)| s).sum(), Ordering::Relaxed);
    read_contents(&files, pipe, readers)?;
    Ok((b, files.len()))
}

/// Read files `0..files.len()` (content id = index) on `readers` threads.
fn read_contents(files: &[(PathBuf, u64)], pipe: &Pipeline, readers: usize) -> Result<()> {
    let next = AtomicUsize::new(0);
    let first_err: std::sync::Mutex<Option<Error>> = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..readers.max(1).min(files.len().max(1)) {
            let sink = pipe.sink();
            let next = &next;
            let first_err = &first_err;
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= files.len() || pipe.failed() {
                        return;
                    }
                    let path = &files[i].0;
                    let r = std::fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(path)
                        .map_err(|e| Error::io(format!("open {}", path.display()), e))
                        .and_then(|mut f| {
                            sink.chunk_reader(i, &mut f)
                                .map_err(|e| e.context_prefix(show(path_bytes(path))))
                        });
                    if let Err(e) = r {
                        let mut slot = first_err.lock().expect("error lock");
                        if slot.is_none() {
                            *slot = Some(e);
                        }
                        pipe.fail(Error::new(ErrorKind::Io, "a file could not be read"));
                        return;
                    }
                }
            });
        }
    });
    match first_err.into_inner().expect("error lock") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
