//! The distribution form of a native flist: one file holding a tar of the
//! RocksDB directory, zstd-compressed with a frame checksum. Readers unpack
//! it once into a cache directory named by the BLAKE3 of the file and open
//! that copy read-only.
//!
//! Extraction trusts nothing: members must be plain files with simple names,
//! the total size is capped, the zstd checksum is checked (a bit flip or a
//! truncation is an error), and the copy only becomes visible in the cache
//! (atomic rename) after the database opened and every block checksum passed.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result, corrupt};

/// zstd level of the outer compression (flists are small; ratio matters).
const ZSTD_LEVEL: i32 = 15;

/// Unpacked size cap: no flist database comes near this, a zstd bomb does.
const MAX_UNPACKED: u64 = 16 << 30;

/// Files of a RocksDB directory that belong in the archive (not the info
/// log, not the lock file).
fn wanted(name: &str) -> bool {
    !(name == "LOCK" || name.starts_with("LOG"))
}

/// Member names we accept on extraction: RocksDB's own file names.
fn safe_member(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Write `db_dir` as a `.flist` file at `out` (via a temporary file in the
/// same directory, renamed into place after fsync). Deterministic framing:
/// sorted members, zero owners and times.
pub fn write_archive(db_dir: &Path, out: &Path) -> Result<()> {
    let io = |what: &str, e| Error::io(format!("write {}: {what}", out.display()), e);
    let mut names: Vec<String> = std::fs::read_dir(db_dir)
        .map_err(|e| io("list database", e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| wanted(n))
        .collect();
    names.sort();
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".flist-")
        .tempfile_in(parent)
        .map_err(|e| io("create temporary file", e))?;
    let mut enc = zstd::stream::write::Encoder::new(
        BufWriter::new(tmp.reopen().map_err(|e| io("reopen", e))?),
        ZSTD_LEVEL,
    )
    .map_err(|e| io("zstd", e))?;
    enc.include_checksum(true).map_err(|e| io("zstd", e))?;
    let mut tar = tar::Builder::new(enc);
    for name in &names {
        let path = db_dir.join(name);
        let mut f = File::open(&path).map_err(|e| io(name, e))?;
        let len = f.metadata().map_err(|e| io(name, e))?.len();
        let mut h = tar::Header::new_ustar();
        h.set_path(name).map_err(|e| io(name, e))?;
        h.set_size(len);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        tar.append(&h, &mut f).map_err(|e| io(name, e))?;
    }
    let enc = tar.into_inner().map_err(|e| io("tar", e))?;
    let mut w = enc.finish().map_err(|e| io("zstd", e))?;
    w.flush().map_err(|e| io("flush", e))?;
    let f = w.into_inner().map_err(|e| io("flush", e.into_error()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(|e| io("chmod", e))?;
    }
    f.sync_all().map_err(|e| io("fsync", e))?;
    drop(f);
    tmp.persist(out).map_err(|e| io("rename into place", e.error))?;
    Ok(())
}

/// BLAKE3 of a file, hex.
pub fn file_hash(path: &Path) -> Result<String> {
    let f = File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let mut h = blake3::Hasher::new();
    h.update_reader(BufReader::with_capacity(1 << 20, f))
        .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    Ok(h.finalize().to_hex().to_string())
}

/// Extract the `.flist` file `src` into the empty directory `dest`.
pub fn extract_archive(src: &Path, dest: &Path) -> Result<()> {
    let shown = src.display().to_string();
    let f = File::open(src).map_err(|e| Error::io(format!("open {shown}"), e))?;
    extract_from(f, &shown, dest)
}

/// Extract an opened `.flist` file (named `shown` in errors) into `dest`.
fn extract_from(f: File, shown: &str, dest: &Path) -> Result<()> {
    let bad = |why: String| corrupt(format!("{shown}: {why}"));
    let dec = zstd::stream::read::Decoder::new(f)
        .map_err(|e| Error::with_source(ErrorKind::Corrupt, format!("{shown}: zstd"), e))?;
    let mut tar = tar::Archive::new(dec);
    let mut total = 0u64;
    let mut count = 0usize;
    let entries = tar.entries().map_err(|e| {
        Error::with_source(ErrorKind::Corrupt, format!("{shown}: not an flist file (tar)"), e)
    })?;
    for entry in entries {
        let mut entry = entry.map_err(|e| {
            Error::with_source(ErrorKind::Corrupt, format!("{shown}: damaged or truncated"), e)
        })?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if entry.header().entry_type() != tar::EntryType::Regular || !safe_member(&name) {
            return Err(bad(format!("unexpected member {name:?} (not an flist file)")));
        }
        let size = entry.header().size().map_err(|e| {
            Error::with_source(ErrorKind::Corrupt, format!("{shown}: member {name}"), e)
        })?;
        total = total.saturating_add(size);
        if total > MAX_UNPACKED {
            return Err(bad(format!("unpacks to more than {MAX_UNPACKED} bytes")));
        }
        let path = dest.join(&name);
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| bad(format!("member {name:?}: {e}")))?;
        std::io::copy(&mut entry, &mut out).map_err(|e| {
            Error::with_source(ErrorKind::Corrupt, format!("{shown}: damaged or truncated"), e)
        })?;
        count += 1;
    }
    // Read the zstd stream to its end so its checksum is checked even when
    // the damage is past the tar trailer.
    let mut rest = tar.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(|e| {
        Error::with_source(ErrorKind::Corrupt, format!("{shown}: damaged or truncated"), e)
    })?;
    if count == 0 {
        return Err(bad("empty archive (not an flist file)".into()));
    }
    Ok(())
}

/// Where unpacked flists are cached: `$ZOSFS_FLIST_CACHE`, else
/// `/var/cache/zosfs/flists` for root, else `$XDG_CACHE_HOME/zosfs/flists`
/// or `~/.cache/zosfs/flists`, else `/tmp/zosfs-flists-<uid>`. Whichever
/// it is, [`unpack_once`] makes it 0700 and refuses it when it is not a
/// directory of this user (see [`private_cache_dir`]).
pub fn default_cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("ZOSFS_FLIST_CACHE") {
        return PathBuf::from(p);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        return PathBuf::from("/var/cache/zosfs/flists");
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("zosfs/flists");
    }
    if let Some(p) = std::env::var_os("HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join(".cache/zosfs/flists");
    }
    // Per user: a directory shared by users would let one plant unpacked
    // copies another opens.
    std::env::temp_dir().join(format!("zosfs-flists-{uid}"))
}

/// Make `cache` a private directory of this user: created 0700 (parents as
/// usual), an existing one must be a real directory (not a symlink) owned
/// by the effective uid and is tightened to 0700. Whoever else could write
/// it could plant an unpacked copy under the name of a hash we trust.
pub fn private_cache_dir(cache: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let shown = cache.display();
    if let Some(parent) = cache.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("create flist cache parent {}", parent.display()), e))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(cache) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(format!("create flist cache {shown}"), e)),
    }
    let md = std::fs::symlink_metadata(cache)
        .map_err(|e| Error::io(format!("stat flist cache {shown}"), e))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if !md.file_type().is_dir() || md.uid() != uid {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "flist cache {shown} must be a directory (not a symlink) owned by uid {uid}; \
                 it is a {} owned by uid {}: remove it or set ZOSFS_FLIST_CACHE",
                if md.file_type().is_symlink() { "symlink" } else { "file or directory" },
                md.uid()
            ),
        ));
    }
    if md.mode() & 0o077 != 0 {
        std::fs::set_permissions(cache, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(format!("chmod 0700 flist cache {shown}"), e))?;
    }
    Ok(())
}

/// Unpack `src` into `cache/<blake3 of src>` unless it is there already;
/// `check` validates the unpacked copy before it becomes visible.
pub fn unpack_cached(
    src: &Path,
    cache: &Path,
    check: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let shown = src.display().to_string();
    let extract = |copy: &Path, dir: &Path| {
        let f = File::open(copy).map_err(|e| Error::io(format!("open {shown}"), e))?;
        extract_from(f, &shown, dir)
    };
    unpack_once(src, cache, "", "CURRENT", extract, check)
}

/// Copy `src` to the new file `dest` through one descriptor, returning the
/// BLAKE3 (hex) of exactly the bytes copied.
fn copy_hashed(src: &Path, dest: &Path) -> Result<String> {
    let mut from = BufReader::with_capacity(
        1 << 20,
        File::open(src).map_err(|e| Error::io(format!("open {}", src.display()), e))?,
    );
    let mut to = BufWriter::with_capacity(
        1 << 20,
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dest)
            .map_err(|e| Error::io(format!("create {}", dest.display()), e))?,
    );
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(format!("read {}", src.display()), e)),
        };
        h.update(&buf[..n]);
        to.write_all(&buf[..n]).map_err(|e| Error::io(format!("write {}", dest.display()), e))?;
    }
    to.flush().map_err(|e| Error::io(format!("write {}", dest.display()), e))?;
    Ok(h.finalize().to_hex().to_string())
}

/// Unpack `src` once into the directory `cache/<blake3 of src><suffix>`:
/// `extract(copy, dir)` fills a fresh directory from `copy`, `check`
/// validates that, and an atomic rename makes it visible; the directory
/// counts as complete when it holds `marker`. Concurrent unpackers of one
/// file all end up using the copy renamed into place first.
///
/// The name is the hash of the bytes extracted: `src` is copied once into
/// a private temporary directory while hashed, and `extract` reads only
/// that copy, so a file changed between hashing and extraction cannot put
/// other content under a trusted name. (A complete copy found under the
/// hash read first is used as it is: it was made from bytes of that hash.)
pub fn unpack_once(
    src: &Path,
    cache: &Path,
    suffix: &str,
    marker: &str,
    extract: impl FnOnce(&Path, &Path) -> Result<()>,
    check: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    private_cache_dir(cache)?;
    let done = |hash: &str| {
        let dir = cache.join(format!("{hash}{suffix}"));
        dir.join(marker).is_file().then_some(dir)
    };
    if let Some(dir) = done(&file_hash(src)?) {
        return Ok(dir);
    }
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(cache)
        .map_err(|e| Error::io(format!("create temp dir in {}", cache.display()), e))?;
    let copy = tmp.path().join("source");
    let hash = copy_hashed(src, &copy)?;
    if let Some(dir) = done(&hash) {
        return Ok(dir);
    }
    let out = tmp.path().join("unpacked");
    std::fs::create_dir(&out).map_err(|e| Error::io(format!("create {}", out.display()), e))?;
    extract(&copy, &out)?;
    check(&out)?;
    let final_dir = cache.join(format!("{hash}{suffix}"));
    match std::fs::rename(&out, &final_dir) {
        Ok(()) => Ok(final_dir),
        // Another process unpacked the same bytes first: use its copy.
        Err(_) if done(&hash).is_some() => Ok(final_dir),
        Err(e) => Err(Error::io(format!("rename into {}", final_dir.display()), e)),
    }
}

/// Read a whole small file (used by tests and format sniffing).
pub fn sniff(path: &Path, n: usize) -> Result<Vec<u8>> {
    let mut f = File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// The bytes extracted are the bytes named: the file is swapped for
    /// another one after it was read for hashing, and the copy under the
    /// first content's hash still holds the first content.
    #[test]
    fn the_extracted_bytes_are_the_hashed_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, cache) = (tmp.path().join("in"), tmp.path().join("cache"));
        let (first, second) = (b"first content".to_vec(), b"planted content".to_vec());
        std::fs::write(&src, &first).unwrap();
        let dir = unpack_once(
            &src,
            &cache,
            "",
            "data",
            |copy, dir| {
                // The swap an attacker would make between hash and extract.
                std::fs::write(&src, &second).unwrap();
                std::fs::copy(copy, dir.join("data")).map(drop).map_err(|e| Error::io("copy", e))
            },
            |_| Ok(()),
        )
        .unwrap();
        assert_eq!(dir, cache.join(blake3::hash(&first).to_hex().as_str()));
        assert_eq!(std::fs::read(dir.join("data")).unwrap(), first);
        // The swapped file gets its own copy, named by its own bytes.
        let dir2 = unpack_once(
            &src,
            &cache,
            "",
            "data",
            |copy, dir| {
                std::fs::copy(copy, dir.join("data")).map(drop).map_err(|e| Error::io("copy", e))
            },
            |_| Ok(()),
        )
        .unwrap();
        assert_eq!(dir2, cache.join(blake3::hash(&second).to_hex().as_str()));
        assert_eq!(std::fs::read(dir2.join("data")).unwrap(), second);
        // Nothing but the two copies is left (no temp dirs, no sources).
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 2);
    }

    #[test]
    fn the_cache_is_private_and_a_symlink_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("c");
        std::fs::create_dir(&cache).unwrap();
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
        private_cache_dir(&cache).unwrap();
        assert_eq!(std::fs::metadata(&cache).unwrap().mode() & 0o777, 0o700);
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&cache, &link).unwrap();
        let e = private_cache_dir(&link).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains("symlink"), "{e}");
    }
}
