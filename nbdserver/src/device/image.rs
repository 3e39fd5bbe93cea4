//! Image devices: a regular file inside an flist (`IMAGE.flist:/disk.raw`)
//! as the chunk source of a LazyFile, read through the flist crate's
//! [`FileSource`](zosfs_flist::source::FileSource) as an image
//! ([`FileChunks::image`]): a chunk whose key is the BLAKE3 of all-zero
//! plaintext is all zeros (the key is the hash of the plaintext), so it is
//! recorded as zeros: never fetched, reported HOLE|ZERO, and commit does
//! not upload it again.

use std::path::{Path, PathBuf};

use zosfs_flist::source::FileChunks;
use zosfs_flist::{Flist, Header, Kind, OpenOptions, Tree};

use crate::error::{Result, flist_err, invalid};

/// A file of an flist, resolved.
pub struct Image {
    pub flist: PathBuf,
    /// Path of the file inside the flist.
    pub path: String,
    pub header: Header,
    pub chunks: FileChunks,
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
        let header = fl.header().clone();
        let chunks = FileChunks::image(data, &header.chunking)
            .map_err(|e| flist_err(e).context_prefix(&shown))?;
        if chunks.size() != inode.size {
            return Err(invalid(format!(
                "{shown}: chunks hold {} bytes, the file is {} bytes",
                chunks.size(),
                inode.size
            )));
        }
        Ok(Image { flist: flist.to_path_buf(), path: path.to_string(), header, chunks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

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
}
