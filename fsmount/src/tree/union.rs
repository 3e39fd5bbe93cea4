//! Several trees shown as one (`--flist A --flist B`): an entry of a later
//! layer hides the same path in earlier ones; directories present in
//! several layers are merged (the latest layer's attributes win); a
//! non-directory hides directories of that name below it.
//!
//! Union inode numbers are `layer << 56 | inode` of the winning entry, so
//! they are stable across mounts of the same layer list.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::sync::Arc;

use parking_lot::RwLock;

use super::{Attr, Content, DirEntry, Ino, Kind, Tree, TreeStats};
use crate::error::{Error, ErrorKind, Result, invalid};

const LAYER_SHIFT: u32 = 56;
/// Most layers a union takes (the layer index lives in the top byte).
pub const MAX_LAYERS: usize = 255;

/// (layer, inode in that layer), latest layer first.
type Parts = Vec<(usize, Ino)>;

pub struct UnionTree {
    layers: Vec<Arc<dyn Tree>>,
    nodes: RwLock<HashMap<Ino, Parts>>,
    root: Ino,
}

fn encode(layer: usize, ino: Ino) -> Result<Ino> {
    if ino >> LAYER_SHIFT != 0 {
        return Err(invalid(format!("inode {ino} of layer {layer} is too large to layer")));
    }
    Ok(((layer as u64) << LAYER_SHIFT) | ino)
}

impl UnionTree {
    /// `layers`: lowest first, as given on the command line.
    pub fn new(layers: Vec<Arc<dyn Tree>>) -> Result<UnionTree> {
        if layers.is_empty() || layers.len() > MAX_LAYERS {
            return Err(invalid(format!("{} layers: give 1 to {MAX_LAYERS}", layers.len())));
        }
        let parts: Parts = layers.iter().enumerate().rev().map(|(l, t)| (l, t.root())).collect();
        let (top, top_ino) = parts[0];
        let root = encode(top, top_ino)?;
        let mut nodes = HashMap::new();
        nodes.insert(root, parts);
        Ok(UnionTree { layers, nodes: RwLock::new(nodes), root })
    }

    fn parts(&self, ino: Ino) -> Parts {
        if let Some(p) = self.nodes.read().get(&ino) {
            return p.clone();
        }
        // Never handed out by lookup/readdir in this session: decode it.
        vec![((ino >> LAYER_SHIFT) as usize, ino & ((1 << LAYER_SHIFT) - 1))]
    }

    fn top(&self, ino: Ino) -> Result<(&Arc<dyn Tree>, Ino)> {
        let (l, i) = self.parts(ino)[0];
        let t = self
            .layers
            .get(l)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("inode {ino}: no layer {l}")))?;
        Ok((t, i))
    }

    /// Register an entry found as `found` (latest first) and give its attr
    /// the union inode.
    fn register(&self, found: Parts, mut attr: Attr) -> Result<Attr> {
        let (l, i) = found[0];
        attr.ino = encode(l, i)?;
        self.nodes.write().entry(attr.ino).or_insert(found);
        Ok(attr)
    }
}

impl Tree for UnionTree {
    fn root(&self) -> Ino {
        self.root
    }

    fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Attr> {
        let mut found: Parts = Vec::new();
        let mut winner: Option<Attr> = None;
        for (l, dir) in self.parts(parent) {
            match self.layers[l].lookup(dir, name) {
                Ok(a) => {
                    let is_dir = a.kind == Kind::Dir;
                    match &winner {
                        None => {
                            found.push((l, a.ino));
                            winner = Some(a);
                        }
                        Some(_) if is_dir => found.push((l, a.ino)),
                        Some(_) => break,
                    }
                    if !is_dir {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        match winner {
            Some(a) => self.register(found, a),
            None => Err(Error::new(ErrorKind::NotFound, format!("{name:?} not found"))),
        }
    }

    fn getattr(&self, ino: Ino) -> Result<Attr> {
        let (t, i) = self.top(ino)?;
        let mut a = t.getattr(i)?;
        a.ino = ino;
        Ok(a)
    }

    fn readdir(&self, ino: Ino) -> Result<Vec<DirEntry>> {
        let mut order: Vec<OsString> = Vec::new();
        let mut merged: HashMap<OsString, (Parts, Attr)> = HashMap::new();
        // Names whose merge is closed (a non-directory was met).
        let mut closed: HashSet<OsString> = HashSet::new();
        for (l, dir) in self.parts(ino) {
            for e in self.layers[l].readdir(dir)? {
                let is_dir = e.attr.kind == Kind::Dir;
                match merged.get_mut(&e.name) {
                    None => {
                        if !is_dir {
                            closed.insert(e.name.clone());
                        }
                        order.push(e.name.clone());
                        merged.insert(e.name, (vec![(l, e.attr.ino)], e.attr));
                    }
                    Some((parts, _)) if !closed.contains(&e.name) => {
                        if is_dir {
                            parts.push((l, e.attr.ino));
                        } else {
                            closed.insert(e.name);
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        order.sort();
        let mut out = Vec::with_capacity(order.len());
        for name in order {
            if let Some((parts, attr)) = merged.remove(&name) {
                out.push(DirEntry { attr: self.register(parts, attr)?, name });
            }
        }
        Ok(out)
    }

    fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        let (t, i) = self.top(ino)?;
        t.readlink(i)
    }

    fn listxattr(&self, ino: Ino) -> Result<Vec<OsString>> {
        let (t, i) = self.top(ino)?;
        t.listxattr(i)
    }

    fn getxattr(&self, ino: Ino, name: &OsStr) -> Result<Option<Vec<u8>>> {
        let (t, i) = self.top(ino)?;
        t.getxattr(i, name)
    }

    fn open(&self, ino: Ino) -> Result<Arc<dyn Content>> {
        let (t, i) = self.top(ino)?;
        t.open(i)
    }

    fn stats(&self) -> TreeStats {
        self.layers.iter().map(|t| t.stats()).fold(TreeStats::default(), |a, b| TreeStats {
            files: a.files + b.files,
            bytes: a.bytes + b.bytes,
        })
    }
}
