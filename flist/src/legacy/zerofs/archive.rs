//! The 0-fs package: a tar archive (gzip-compressed, or plain) holding one
//! SQLite database named `flistdb.sqlite3` (0-flist writes it as
//! `./flistdb.sqlite3`). Only that member is extracted, into a cache
//! directory named by the BLAKE3 of the package, so no member name can
//! write anywhere else; every other member is skipped. The gzip CRC and
//! length are checked (the stream is read to its end), so truncation and
//! bit flips are errors.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result, corrupt};
use crate::native::archive::unpack_once;

/// Name of the database inside the package.
pub const DB_NAME: &str = "flistdb.sqlite3";

/// Largest database we extract (real ones are a few MiB; a gzip bomb is not).
const MAX_DB: u64 = 4 << 30;

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];

/// Does this look like a 0-fs package (gzip, or a POSIX/GNU tar)?
pub fn sniff(head: &[u8]) -> bool {
    head.starts_with(GZIP_MAGIC) || head.get(257..262) == Some(b"ustar")
}

fn damaged(shown: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::with_source(ErrorKind::Corrupt, format!("{shown}: damaged or truncated"), e)
}

/// Extract the database of package `src` to `dest` (a file path).
pub fn extract_db(src: &Path, dest: &Path) -> Result<()> {
    extract_db_named(src, &src.display().to_string(), dest)
}

/// [`extract_db`] naming the package `shown` in errors (`src` may be a
/// private copy of it).
fn extract_db_named(src: &Path, shown: &str, dest: &Path) -> Result<()> {
    let shown = shown.to_string();
    let mut f = File::open(src).map_err(|e| Error::io(format!("open {shown}"), e))?;
    let mut head = [0u8; 2];
    let n = f.read(&mut head).map_err(|e| Error::io(format!("read {shown}"), e))?;
    drop(f);
    let f = BufReader::new(File::open(src).map_err(|e| Error::io(format!("open {shown}"), e))?);
    let input: Box<dyn Read> = if head[..n] == *GZIP_MAGIC {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let mut tar = tar::Archive::new(input);
    let entries = tar.entries().map_err(|e| {
        Error::with_source(ErrorKind::Corrupt, format!("{shown}: not a 0-fs flist (tar)"), e)
    })?;
    let mut found = false;
    for entry in entries {
        let mut entry = entry.map_err(damaged(&shown))?;
        let path = entry.path_bytes();
        let name = path.strip_prefix(b"./").unwrap_or(&path);
        if name != DB_NAME.as_bytes() {
            // Directories (`./`) and anything else a writer added: skipped.
            std::io::copy(&mut entry, &mut std::io::sink()).map_err(damaged(&shown))?;
            continue;
        }
        if found {
            return Err(corrupt(format!("{shown}: holds {DB_NAME} twice")));
        }
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(corrupt(format!("{shown}: {DB_NAME} is not a regular file")));
        }
        let size = entry.header().size().map_err(damaged_tar(&shown))?;
        if size > MAX_DB {
            return Err(corrupt(format!("{shown}: {DB_NAME} of {size} bytes (limit {MAX_DB})")));
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dest)
            .map_err(|e| Error::io(format!("create {}", dest.display()), e))?;
        let copied =
            std::io::copy(&mut (&mut entry).take(MAX_DB), &mut out).map_err(damaged(&shown))?;
        if copied != size {
            return Err(corrupt(format!("{shown}: {DB_NAME} is truncated")));
        }
        out.sync_all().map_err(|e| Error::io(format!("fsync {}", dest.display()), e))?;
        found = true;
    }
    // Read to the end so the gzip trailer (CRC32 and length) is checked even
    // when the damage lies past the tar end marker.
    let mut rest = tar.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(damaged(&shown))?;
    if !found {
        return Err(corrupt(format!("{shown}: no {DB_NAME} inside (not a 0-fs flist)")));
    }
    Ok(())
}

fn damaged_tar(shown: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::with_source(ErrorKind::Corrupt, format!("{shown}: bad tar header"), e)
}

/// Extract `src` once into `cache/<blake3 of src>.0fs/` and return the
/// database path; `check` validates a fresh copy before it becomes visible.
pub fn unpack_cached(
    src: &Path,
    cache: &Path,
    check: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let dir = unpack_once(
        src,
        cache,
        ".0fs",
        DB_NAME,
        |copy, dir| extract_db_named(copy, &src.display().to_string(), &dir.join(DB_NAME)),
        |dir| check(&dir.join(DB_NAME)),
    )?;
    Ok(dir.join(DB_NAME))
}

/// Write the package: `db` as `./flistdb.sqlite3` in a gzip-compressed tar
/// (the layout 0-flist writes).
pub fn write_package(db: &Path, out: &Path) -> Result<()> {
    let io = |what: &str, e| Error::io(format!("write {}: {what}", out.display()), e);
    let f = File::create(out).map_err(|e| io("create", e))?;
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut src = File::open(db).map_err(|e| io("open database", e))?;
    let len = src.metadata().map_err(|e| io("stat database", e))?.len();
    let mut h = tar::Header::new_gnu();
    // Raw name bytes: `set_path` would drop the leading `./` 0-flist writes.
    let name = format!("./{DB_NAME}");
    h.as_gnu_mut().expect("a GNU header").name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_size(len);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    tar.append(&h, &mut src).map_err(|e| io("tar", e))?;
    let gz = tar.into_inner().map_err(|e| io("tar", e))?;
    let f = gz.finish().map_err(|e| io("gzip", e))?;
    f.sync_all().map_err(|e| io("fsync", e))?;
    Ok(())
}
