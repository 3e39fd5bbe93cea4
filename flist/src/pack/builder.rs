//! An in-memory tree built while a source is read (directory walk or tar
//! stream, where entries may come in any order, be repeated, or imply their
//! parents), then written to an flist in one deterministic pass: inode
//! numbers follow a depth-first walk in byte order of names, so the same
//! tree always gives the same flist.

use std::collections::BTreeMap;

use zosfs_store::ChunkRef;

use crate::error::{Error, ErrorKind, Result, corrupt, invalid};
use crate::model::{Ino, Inode, Kind, ROOT_INO, Xattr};
use crate::names::{check_name, show};
use crate::native::Writer;

/// Attributes of a node as the source gives them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attrs {
    pub kind: Kind,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub rdev: u64,
    pub target: Vec<u8>,
    pub xattrs: Vec<Xattr>,
}

impl Attrs {
    /// A directory the source implies but never describes (tar parents).
    pub fn implicit_dir() -> Attrs {
        Attrs {
            kind: Kind::Dir,
            perm: 0o755,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            rdev: 0,
            target: Vec::new(),
            xattrs: Vec::new(),
        }
    }
}

/// Index of a file's content in the pack pipeline's results.
pub type ContentId = usize;

#[derive(Debug)]
struct Node {
    attrs: Attrs,
    children: BTreeMap<Vec<u8>, usize>,
    content: Option<ContentId>,
}

/// The tree being packed. Node 0 is the root directory.
#[derive(Debug)]
pub struct Builder {
    nodes: Vec<Node>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    pub fn new() -> Builder {
        Builder {
            nodes: vec![Node {
                attrs: Attrs::implicit_dir(),
                children: BTreeMap::new(),
                content: None,
            }],
        }
    }

    /// Set the root directory's attributes.
    pub fn set_root(&mut self, attrs: Attrs) -> Result<()> {
        if attrs.kind != Kind::Dir {
            return Err(invalid("the root of an flist must be a directory"));
        }
        self.nodes[0].attrs = attrs;
        Ok(())
    }

    /// The directory node holding `names[..len-1]`, creating implicit
    /// directories when `create` is set. A parent that exists but is not a
    /// directory (a symlink, say) is refused: following it could lead
    /// outside the tree.
    fn parent_of(&mut self, names: &[&[u8]], create: bool, whole: &[u8]) -> Result<usize> {
        let mut cur = 0usize;
        for name in &names[..names.len().saturating_sub(1)] {
            check_name(name)?;
            cur = match self.nodes[cur].children.get(*name) {
                Some(&child) => {
                    let k = self.nodes[child].attrs.kind;
                    if k != Kind::Dir {
                        return Err(Error::new(
                            ErrorKind::Escape,
                            format!(
                                "{}: parent {} is a {}, not a directory",
                                show(whole),
                                show(name),
                                k.name()
                            ),
                        ));
                    }
                    child
                }
                None if create => {
                    let id = self.push(Attrs::implicit_dir(), None);
                    self.nodes[cur].children.insert(name.to_vec(), id);
                    id
                }
                None => {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!("{}: parent {} does not exist", show(whole), show(name)),
                    ));
                }
            };
        }
        Ok(cur)
    }

    fn push(&mut self, attrs: Attrs, content: Option<ContentId>) -> usize {
        self.nodes.push(Node { attrs, children: BTreeMap::new(), content });
        self.nodes.len() - 1
    }

    /// Add (or replace, as a later tar member does) the entry at `names`.
    /// Returns its node. Directories that exist keep their children.
    pub fn insert(
        &mut self,
        names: &[&[u8]],
        attrs: Attrs,
        content: Option<ContentId>,
        whole: &[u8],
    ) -> Result<usize> {
        let Some(last) = names.last() else {
            self.set_root(attrs)?;
            return Ok(0);
        };
        check_name(last)?;
        let parent = self.parent_of(names, true, whole)?;
        if let Some(&old) = self.nodes[parent].children.get(*last) {
            if self.nodes[old].attrs.kind == Kind::Dir && attrs.kind == Kind::Dir {
                self.nodes[old].attrs = attrs;
                return Ok(old);
            }
        }
        let id = self.push(attrs, content);
        self.nodes[parent].children.insert(last.to_vec(), id);
        Ok(id)
    }

    /// Add the name `names` for the existing node `node` (a hardlink).
    pub fn link_node(&mut self, names: &[&[u8]], node: usize, whole: &[u8]) -> Result<()> {
        let Some(last) = names.last() else {
            return Err(invalid(format!("{}: cannot hardlink the root", show(whole))));
        };
        check_name(last)?;
        if self.nodes[node].attrs.kind == Kind::Dir {
            return Err(invalid(format!("{}: hardlink to a directory", show(whole))));
        }
        let parent = self.parent_of(names, true, whole)?;
        self.nodes[parent].children.insert(last.to_vec(), node);
        Ok(())
    }

    /// The node at `names`, without following symlinks.
    pub fn find(&self, names: &[&[u8]]) -> Option<usize> {
        let mut cur = 0usize;
        for n in names {
            cur = *self.nodes[cur].children.get(*n)?;
        }
        Some(cur)
    }

    /// Write the tree: inodes numbered depth-first in name order from
    /// [`ROOT_INO`]; `contents[id]` is the chunk list of content `id`.
    pub fn write(&self, w: &mut Writer, contents: &[Vec<ChunkRef>]) -> Result<TreeCounts> {
        let mut ino_of: Vec<Ino> = vec![0; self.nodes.len()];
        let mut parent_of: Vec<Ino> = vec![0; self.nodes.len()];
        let mut nlink: Vec<u32> = vec![0; self.nodes.len()];
        let mut order: Vec<usize> = Vec::new();
        let mut next = ROOT_INO;
        // Pass 1: number inodes and count links.
        let mut stack = vec![(0usize, ROOT_INO)];
        while let Some((n, parent)) = stack.pop() {
            nlink[n] += 1;
            if ino_of[n] != 0 {
                continue; // another name of a hardlinked file
            }
            ino_of[n] = next;
            parent_of[n] = if n == 0 { ROOT_INO } else { parent };
            next += 1;
            order.push(n);
            let this = ino_of[n];
            for &child in self.nodes[n].children.values().rev() {
                stack.push((child, this));
            }
        }
        let mut counts = TreeCounts::default();
        // Pass 2: write inodes, entries and chunk lists.
        for &n in &order {
            let node = &self.nodes[n];
            let a = &node.attrs;
            let ino = ino_of[n];
            let chunks: &[ChunkRef] = match (a.kind, node.content) {
                (Kind::File, Some(c)) => contents
                    .get(c)
                    .ok_or_else(|| corrupt(format!("content {c} was never chunked")))?,
                _ => &[],
            };
            let size = match a.kind {
                Kind::File => chunks.iter().map(|c| u64::from(c.len)).sum(),
                Kind::Symlink => a.target.len() as u64,
                _ => 0,
            };
            let subdirs =
                node.children.values().filter(|&&c| self.nodes[c].attrs.kind == Kind::Dir).count()
                    as u32;
            let inode = Inode {
                ino,
                kind: a.kind,
                perm: a.perm & 0o7777,
                uid: a.uid,
                gid: a.gid,
                mtime_ns: a.mtime_ns,
                size,
                rdev: a.rdev,
                nlink: if a.kind == Kind::Dir { 2 + subdirs } else { nlink[n] },
                parent: parent_of[n],
                target: a.target.clone(),
                xattrs: a.xattrs.clone(),
            };
            w.put_inode(&inode)?;
            if a.kind == Kind::File {
                w.put_chunks(ino, chunks)?;
                counts.bytes += size;
                counts.chunks += chunks.len() as u64;
            }
            counts.inodes += 1;
            for (name, &child) in &node.children {
                w.put_dirent(ino, name, ino_of[child], self.nodes[child].attrs.kind)?;
                counts.entries += 1;
            }
        }
        Ok(counts)
    }
}

/// What [`Builder::write`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeCounts {
    pub inodes: u64,
    pub entries: u64,
    pub bytes: u64,
    pub chunks: u64,
}
