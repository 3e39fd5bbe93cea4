//! The reader API every flist format offers ([`Tree`]), with path
//! resolution and a tree walk built on it. The native reader
//! ([`crate::Flist`]) and the legacy readers implement it, so `ls`, `cat`,
//! `unpack` and `verify` are written once.

use std::collections::HashSet;

use crate::codec::DataChunk;
use crate::error::{Error, ErrorKind, Result, not_found};
use crate::model::{DirEntry, Header, Ino, Inode, Kind, ROOT_INO, Xattr};
use crate::names::{components, join, show};

/// Deepest directory nesting a walk or a path resolution accepts (a damaged
/// flist could otherwise describe an endless chain).
pub const MAX_DEPTH: usize = 4096;

/// Symlinks followed in one path resolution (like Linux's 40).
pub const MAX_SYMLINKS: usize = 40;

/// Read access to one flist.
pub trait Tree: Send + Sync {
    fn header(&self) -> &Header;

    fn getattr(&self, ino: Ino) -> Result<Inode>;

    /// The entry `name` in directory `parent`; Ok(None) when absent,
    /// Err(NotADirectory) when `parent` is not a directory.
    fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Option<DirEntry>>;

    /// Up to `limit` entries of `dir` in byte order of their names, starting
    /// after the name `after` (None: from the start). `.` and `..` are not
    /// included.
    fn readdir(&self, dir: Ino, after: Option<&[u8]>, limit: usize) -> Result<Vec<DirEntry>>;

    /// The chunks of a regular file, in order; their lengths add up to its size.
    fn data(&self, ino: Ino) -> Result<Vec<DataChunk>>;

    fn root(&self) -> Ino {
        ROOT_INO
    }

    fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        let inode = self.getattr(ino)?;
        if inode.kind != Kind::Symlink {
            return Err(Error::new(ErrorKind::WrongType, format!("inode {ino} is not a symlink")));
        }
        Ok(inode.target)
    }

    fn xattrs(&self, ino: Ino) -> Result<Vec<Xattr>> {
        Ok(self.getattr(ino)?.xattrs)
    }

    /// Every entry of `dir` (pages through [`Tree::readdir`]).
    fn readdir_all(&self, dir: Ino) -> Result<Vec<DirEntry>> {
        let mut out: Vec<DirEntry> = Vec::new();
        loop {
            let after = out.last().map(|e| e.name.clone());
            let page = self.readdir(dir, after.as_deref(), 1024)?;
            let done = page.len() < 1024;
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }

    /// Resolve a path from the root without following a final symlink
    /// (`lstat` semantics); symlinks in the middle are followed inside the
    /// flist (absolute targets start again at its root). `..` stops at the root.
    fn resolve(&self, path: &[u8]) -> Result<Inode> {
        resolve_from(self, path, false)
    }

    /// Like [`Tree::resolve`] but follows a final symlink too (`stat`).
    fn resolve_follow(&self, path: &[u8]) -> Result<Inode> {
        resolve_from(self, path, true)
    }
}

fn resolve_from<T: Tree + ?Sized>(t: &T, path: &[u8], follow_last: bool) -> Result<Inode> {
    // Stack of directories from the root to the current one, so `..` works
    // for directories reached through symlinks too.
    let mut stack: Vec<Inode> = vec![t.getattr(t.root())?];
    let mut pending: Vec<Vec<u8>> = components(path).rev().map(|c| c.to_vec()).collect();
    let mut links = 0usize;
    while let Some(name) = pending.pop() {
        let cur = stack.last().expect("stack never empty").clone();
        if name == b".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        if cur.kind != Kind::Dir {
            return Err(Error::new(
                ErrorKind::NotADirectory,
                format!("resolve {}: a parent of {} is not a directory", show(path), show(&name)),
            ));
        }
        let Some(e) = t.lookup(cur.ino, &name)? else {
            return Err(not_found(format!("{} in {}", show(&name), show(path))));
        };
        let inode = t.getattr(e.ino)?;
        let last = pending.is_empty();
        if inode.kind == Kind::Symlink && (!last || follow_last) {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("resolve {}: too many levels of symbolic links", show(path)),
                ));
            }
            if inode.target.starts_with(b"/") {
                stack.truncate(1);
            }
            pending.extend(components(&inode.target).rev().map(|c| c.to_vec()));
            continue;
        }
        if stack.len() > MAX_DEPTH {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("resolve {}: too deep", show(path)),
            ));
        }
        stack.push(inode);
    }
    Ok(stack.pop().expect("stack never empty"))
}

/// What a walk callback wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Go on (into this entry's children if it is a directory).
    Continue,
    /// Do not descend into this directory.
    Skip,
}

/// Depth-first pre-order walk from `start` (path `prefix`), children in byte
/// order of their names. `f` gets each path (relative, `b""` for the start)
/// and inode. Hardlinked files are reported once per name. A directory seen
/// twice (a damaged flist with a cycle) is an error, not an endless loop.
pub fn walk<T: Tree + ?Sized>(
    t: &T,
    start: Ino,
    prefix: &[u8],
    f: &mut dyn FnMut(&[u8], &Inode) -> Result<Step>,
) -> Result<()> {
    let root = t.getattr(start)?;
    let mut seen_dirs: HashSet<Ino> = HashSet::new();
    // Explicit stack of (path, inode) so depth costs heap, not call stack.
    let mut stack: Vec<(Vec<u8>, Inode, usize)> = vec![(prefix.to_vec(), root, 0)];
    while let Some((path, inode, depth)) = stack.pop() {
        if f(&path, &inode)? == Step::Skip || inode.kind != Kind::Dir {
            continue;
        }
        if !seen_dirs.insert(inode.ino) {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("directory {} (inode {}) appears twice", show(&path), inode.ino),
            ));
        }
        if depth >= MAX_DEPTH {
            return Err(Error::new(ErrorKind::Corrupt, format!("{} is too deep", show(&path))));
        }
        let entries = t.readdir_all(inode.ino)?;
        for e in entries.into_iter().rev() {
            let child = t.getattr(e.ino)?;
            if child.kind != e.kind {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!(
                        "entry {} says {:?}, inode says {:?}",
                        show(&e.name),
                        e.kind,
                        child.kind
                    ),
                ));
            }
            stack.push((join(&path, &e.name), child, depth + 1));
        }
    }
    Ok(())
}
