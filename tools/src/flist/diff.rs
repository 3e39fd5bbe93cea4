//! `flist diff A B`: paths added (`+`), removed (`-`) and changed (`M`,
//! with what changed), in path order.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use zosfs_flist::{Inode, Kind, Tree};

use super::{Ctx, fmt, ls::all_entries};

#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    pub a: PathBuf,
    pub b: PathBuf,
}

/// What is compared per path: everything but the inode number.
#[derive(PartialEq, Eq)]
struct Summary {
    inode: Inode,
    content: Vec<zosfs_store::ChunkId>,
}

fn summaries(tree: &dyn Tree) -> Result<BTreeMap<Vec<u8>, Summary>> {
    let mut out = BTreeMap::new();
    for (path, mut inode) in all_entries(tree)? {
        let content = if inode.kind == Kind::File {
            tree.data(inode.ino)?.iter().map(|c| c.store_id()).collect()
        } else {
            Vec::new()
        };
        inode.ino = 0;
        inode.parent = 0;
        out.insert(path, Summary { inode, content });
    }
    Ok(out)
}

fn changes(a: &Summary, b: &Summary) -> Vec<&'static str> {
    let (x, y) = (&a.inode, &b.inode);
    let mut v = Vec::new();
    if x.kind != y.kind {
        v.push("type");
    }
    if x.perm != y.perm {
        v.push("mode");
    }
    if x.uid != y.uid || x.gid != y.gid {
        v.push("owner");
    }
    if x.mtime_ns != y.mtime_ns {
        v.push("mtime");
    }
    if x.size != y.size {
        v.push("size");
    }
    if a.content != b.content {
        v.push("content");
    }
    if x.target != y.target {
        v.push("target");
    }
    if x.rdev != y.rdev {
        v.push("device");
    }
    if x.xattrs != y.xattrs {
        v.push("xattrs");
    }
    if x.nlink != y.nlink && x.kind != Kind::Dir {
        v.push("links");
    }
    v
}

pub fn run(ctx: &Ctx, a: DiffArgs) -> Result<ExitCode> {
    let ta = ctx.open_tree(&a.a)?;
    let tb = ctx.open_tree(&a.b)?;
    let sa = summaries(&*ta)?;
    let sb = summaries(&*tb)?;
    let mut n = 0usize;
    let show = |p: &[u8]| if p.is_empty() { "/".to_string() } else { fmt::name(p) };
    for (p, x) in &sa {
        match sb.get(p) {
            None => crate::outln!("- {}", show(p)),
            Some(y) => {
                let c = changes(x, y);
                if c.is_empty() {
                    continue;
                }
                crate::outln!("M {} ({})", show(p), c.join(", "));
            }
        }
        n += 1;
    }
    for p in sb.keys().filter(|p| !sa.contains_key(*p)) {
        crate::outln!("+ {}", show(p));
        n += 1;
    }
    eprintln!("{n} difference(s)");
    Ok(if n == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
