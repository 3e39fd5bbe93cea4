//! Image devices: a regular file inside an flist (`IMAGE.flist:/disk.raw`)
//! as the chunk source of a LazyFile.
//!
//! A chunk whose key is the BLAKE3 of all-zero plaintext is all zeros (the
//! key is the hash of the plaintext), so it is recorded as zeros: never
//! fetched, reported HOLE|ZERO, and commit does not upload it again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use zosfs_flist::{DataChunk, Flist, Header, Kind, OpenOptions, Tree};
use zosfs_store::lazy::{Layout, Origin};
use zosfs_store::{ChunkKey, ChunkRef};

use crate::error::{Error, ErrorKind, Result, invalid};

/// A file of an flist, resolved.
pub struct Image {
    pub flist: PathBuf,
    /// Path of the file inside the flist.
    pub path: String,
    pub header: Header,
    pub origins: Vec<Origin>,
    pub layout: Layout,
}

/// An flist error as a bad export spec, adding no text.
fn flist_err(e: zosfs_flist::Error) -> Error {
    Error::wrap(ErrorKind::InvalidInput, e)
}

/// Keys of all-zero chunks, per length (almost every chunk has one length).
#[derive(Default)]
pub struct ZeroKeys(HashMap<u32, ChunkKey>);

impl ZeroKeys {
    pub fn key(&mut self, len: u32) -> ChunkKey {
        *self
            .0
            .entry(len)
            .or_insert_with(|| ChunkKey(*blake3::hash(&vec![0u8; len as usize]).as_bytes()))
    }

    pub fn is_zero(&mut self, r: &ChunkRef) -> bool {
        self.key(r.len) == r.key
    }
}

/// The layout of `origins`: fixed when every chunk but the last has the
/// header's fixed size (compact in memory), explicit otherwise.
fn layout_of(header: &Header, origins: &[Origin]) -> Result<Layout> {
    let size: u64 = origins.iter().map(Origin::len).sum();
    if let zosfs_flist::Chunking::Fixed { size: cs } = header.chunking {
        let n = origins.len();
        let regular = origins.iter().take(n.saturating_sub(1)).all(|o| o.len() == u64::from(cs));
        let last_ok = origins.last().is_none_or(|o| o.len() <= u64::from(cs));
        if regular && last_ok {
            if let Ok(l) = Layout::fixed(cs, size) {
                return Ok(l);
            }
        }
    }
    Layout::from_lens(origins.iter().map(Origin::len)).map_err(Error::from)
}

impl Image {
    /// Open `flist` (unpacked once under `unpack_cache`) and resolve `path`
    /// to a regular file.
    pub fn open(flist: &Path, path: &str, unpack_cache: &Path) -> Result<Image> {
        let shown = format!("{}:{path}", flist.display());
        let opts = OpenOptions { cache_dir: unpack_cache.to_path_buf() };
        // Errors of opening name the flist file; those of resolving name
        // the path in the flist.
        let fl = Flist::open_with(flist, &opts).map_err(flist_err)?;
        let inode = fl
            .resolve_follow(path.as_bytes())
            .map_err(|e| flist_err(e).context_prefix(flist.display()))?;
        if inode.kind != Kind::File {
            return Err(invalid(format!("{shown} is a {}, not a file", inode.kind.name())));
        }
        if inode.size == 0 {
            return Err(invalid(format!("{shown} is empty")));
        }
        let data = fl.data(inode.ino).map_err(|e| flist_err(e).context_prefix(&shown))?;
        let mut zeros = ZeroKeys::default();
        let origins = data
            .iter()
            .map(|c| match c {
                DataChunk::Zck1(r) if zeros.is_zero(r) => Ok(Origin::Zeros(u64::from(r.len))),
                DataChunk::Zck1(r) => Ok(Origin::Chunk(*r)),
                _ => Err(invalid(format!(
                    "{shown}: chunks in a legacy codec; convert the flist first (flist convert)"
                ))),
            })
            .collect::<Result<Vec<Origin>>>()?;
        let total: u64 = origins.iter().map(Origin::len).sum();
        if total != inode.size {
            return Err(invalid(format!(
                "{shown}: chunks hold {total} bytes, the file is {} bytes",
                inode.size
            )));
        }
        let header = fl.header().clone();
        let layout = layout_of(&header, &origins)?;
        Ok(Image { flist: flist.to_path_buf(), path: path.to_string(), header, origins, layout })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_chunks_are_recognised_by_key() {
        let mut z = ZeroKeys::default();
        let zero = zosfs_store::chunk::encode(&[0u8; 4096]).unwrap().chunk;
        let data = zosfs_store::chunk::encode(&[1u8; 4096]).unwrap().chunk;
        assert!(z.is_zero(&zero));
        assert!(!z.is_zero(&data));
    }

    #[test]
    fn a_missing_flist_is_named_once() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.flist");
        let e = match Image::open(&missing, "/disk.raw", &dir.path().join("cache")) {
            Ok(_) => panic!("a missing flist opened"),
            Err(e) => e,
        };
        let msg = e.chain();
        assert_eq!(msg.matches(&missing.display().to_string()).count(), 1, "{msg}");
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{msg}");
    }

    #[test]
    fn layouts() {
        let h = |cs| Header {
            format_version: 1,
            chunking: zosfs_flist::Chunking::Fixed { size: cs },
            codec: zosfs_flist::Codec::Zck1,
            compression_level: 3,
            tool: String::new(),
            routes: vec![],
            tags: Default::default(),
        };
        let o = [Origin::Zeros(4096), Origin::Zeros(4096), Origin::Zeros(100)];
        assert_eq!(layout_of(&h(4096), &o).unwrap(), Layout::fixed(4096, 8292).unwrap());
        // Irregular chunks fall back to explicit boundaries.
        let o = [Origin::Zeros(4096), Origin::Zeros(100), Origin::Zeros(4096)];
        assert_eq!(layout_of(&h(4096), &o).unwrap().count(), 3);
        assert!(layout_of(&h(4096), &o).unwrap().fixed_chunk_size().is_none());
    }
}
