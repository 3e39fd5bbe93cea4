//! `flist inspect`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use zosfs_flist::Kind;

use super::{Ctx, ls::all_entries};

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    pub flist: PathBuf,
}

pub fn run(ctx: &Ctx, a: InspectArgs) -> Result<ExitCode> {
    let tree = ctx.open_tree(&a.flist)?;
    let h = tree.header();
    crate::outln!("flist:        {}", a.flist.display());
    if let Ok(m) = std::fs::metadata(&a.flist) {
        if m.is_file() {
            crate::outln!("file size:    {} bytes", m.len());
        }
    }
    crate::outln!("format:       {}", h.format_version);
    crate::outln!("tool:         {}", h.tool);
    crate::outln!("chunking:     {}", h.chunking);
    crate::outln!("codec:        {}", h.codec);
    // Legacy codecs name their (fixed) compression in the codec line.
    if h.codec == zosfs_flist::Codec::Zck1 {
        crate::outln!("compression:  zstd level {}", h.compression_level);
    }
    for r in &h.routes {
        crate::outln!("route:        {r}");
    }
    for (k, v) in &h.tags {
        crate::outln!("tag:          {k}={v}");
    }
    let entries = all_entries(&*tree)?;
    let mut by_kind: BTreeMap<Kind, u64> = BTreeMap::new();
    let mut seen: HashSet<u64> = HashSet::new();
    let mut bytes = 0u64;
    let mut refs = 0u64;
    let mut ref_bytes = 0u64;
    let mut unique: HashMap<zosfs_store::ChunkId, u64> = HashMap::new();
    let mut hardlinks = 0u64;
    for (_, inode) in &entries {
        if !seen.insert(inode.ino) {
            hardlinks += 1;
            continue;
        }
        *by_kind.entry(inode.kind).or_default() += 1;
        if inode.kind == Kind::File {
            bytes += inode.size;
            for c in tree.data(inode.ino)? {
                refs += 1;
                ref_bytes += c.len();
                unique.insert(c.store_id(), c.len());
            }
        }
    }
    crate::outln!("entries:      {} names, {} inodes", entries.len(), seen.len());
    for k in Kind::ALL {
        if let Some(n) = by_kind.get(&k) {
            crate::outln!("  {:<12} {n}", k.name());
        }
    }
    crate::outln!("hardlinks:    {hardlinks} extra names");
    crate::outln!("total bytes:  {bytes}");
    let unique_bytes: u64 = unique.values().sum();
    crate::outln!(
        "chunks:       {refs} references, {} unique ({unique_bytes} bytes)",
        unique.len()
    );
    let ratio = if unique_bytes == 0 { 1.0 } else { ref_bytes as f64 / unique_bytes as f64 };
    crate::outln!("dedup ratio:  {ratio:.3}");
    if zosfs_flist::legacy::sniff(&a.flist)? == zosfs_flist::legacy::Format::Native {
        crate::outln!("content:      {}", ctx.open_native(&a.flist)?.digest()?);
    }
    Ok(ExitCode::SUCCESS)
}
