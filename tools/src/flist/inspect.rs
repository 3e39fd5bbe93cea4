//! `flist inspect`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use zosfs_flist::legacy::Format;
use zosfs_flist::native::Version;
use zosfs_flist::{Flist, Kind};

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
    let format = zosfs_flist::legacy::sniff(&a.flist)?;
    let native = if format == Format::Native { Some(ctx.open_native(&a.flist)?) } else { None };
    crate::outln!("format:       {}", format_line(&format, native.as_ref()));
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
    if let Some(fl) = native {
        crate::outln!("content:      {}", fl.digest()?);
    }
    Ok(ExitCode::SUCCESS)
}

/// `native 2.0` (major.minor of the native format), or the legacy format.
fn format_line(format: &Format, native: Option<&Flist>) -> String {
    match native {
        Some(fl) => {
            let v = fl.version();
            let newer = if v > Version::CURRENT {
                format!(
                    " (newer than this zosfs's {}: fields it added are not shown)",
                    Version::CURRENT
                )
            } else {
                String::new()
            };
            format!("native {v}{newer}")
        }
        None if *format == Format::Rfs => "rfs .fl (legacy)".into(),
        None => "0-fs .flist (legacy)".into(),
    }
}
