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
    let bad = |why: String| corrupt(format!("{shown}: {why}"));
    let f = File::open(src).map_err(|e| Error::io(format!("open {shown}"), e))?;
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
/// or `~/.cache/zosfs/flists`, else under the temp dir.
pub fn default_cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("ZOSFS_FLIST_CACHE") {
        return PathBuf::from(p);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/cache/zosfs/flists");
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("zosfs/flists");
    }
    if let Some(p) = std::env::var_os("HOME") {
        return PathBuf::from(p).join(".cache/zosfs/flists");
    }
    std::env::temp_dir().join("zosfs-flists")
}

/// Unpack `src` into `cache/<blake3 of src>` unless it is there already;
/// `check` validates the unpacked copy before it becomes visible.
pub fn unpack_cached(
    src: &Path,
    cache: &Path,
    check: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    unpack_once(src, cache, "", "CURRENT", |dir| extract_archive(src, dir), check)
}

/// Unpack `src` once into the directory `cache/<blake3 of src><suffix>`:
/// `extract` fills a fresh temporary directory beside it, `check` validates
/// that, and an atomic rename makes it visible; the directory counts as
/// complete when it holds `marker`. Concurrent unpackers of one file all
/// end up using the copy renamed into place first.
pub fn unpack_once(
    src: &Path,
    cache: &Path,
    suffix: &str,
    marker: &str,
    extract: impl FnOnce(&Path) -> Result<()>,
    check: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let final_dir = cache.join(format!("{}{suffix}", file_hash(src)?));
    let complete = || final_dir.join(marker).is_file();
    if complete() {
        return Ok(final_dir);
    }
    std::fs::create_dir_all(cache)
        .map_err(|e| Error::io(format!("create flist cache {}", cache.display()), e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(cache)
        .map_err(|e| Error::io(format!("create temp dir in {}", cache.display()), e))?;
    extract(tmp.path())?;
    check(tmp.path())?;
    let tmp = tmp.keep();
    match std::fs::rename(&tmp, &final_dir) {
        Ok(()) => Ok(final_dir),
        // Another process unpacked the same file first: use its copy.
        Err(_) if complete() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(final_dir)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(Error::io(format!("rename into {}", final_dir.display()), e))
        }
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
