//! Readers for the flist formats that came before zosfs, so real Zero-OS
//! flists can be listed, read, unpacked, verified and converted:
//!
//! * [`rfs`] — rfs `.fl`: a SQLite database (`inode`, `extra`, `block`,
//!   `tag`, `route` tables); chunks BLAKE2b-256, snappy, AES-256-GCM.
//! * [`zerofs`] — 0-fs / 0-flist `.flist`: a tar.gz holding a SQLite
//!   `entries` table of capnp `Dir` records; chunks BLAKE2b-128, snappy,
//!   XXTEA. Its capnp messages are read by [`capnp`] (wire format only).
//!
//! [`open_any`] sniffs a file's format by its first bytes.

pub mod capnp;
pub mod rfs;
pub mod zerofs;

use std::path::Path;

use rusqlite::types::ValueRef;

use crate::error::{Error, ErrorKind, Result, corrupt};
use crate::native::{Flist, OpenOptions, archive};
use crate::tree::Tree;

/// The formats [`open_any`] knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// zosfs: zstd-compressed tar of a RocksDB directory (or the directory).
    Native,
    /// rfs `.fl`: SQLite.
    Rfs,
    /// 0-fs `.flist`: tar (gzip) of a SQLite database.
    ZeroFs,
    /// An extracted 0-fs database (`flistdb.sqlite3`).
    ZeroFsDb,
}

/// Map a SQLite error of a legacy flist to a Corrupt error with `context`.
pub(crate) fn sql(context: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> Error {
    let c = context.into();
    move |e| Error::with_source(ErrorKind::Corrupt, c, e)
}

/// Open the SQLite database of a legacy flist (untrusted input)
/// read-only with `trusted_schema=OFF`: functions with side effects cannot
/// run from its schema (views, triggers, defaults), and every table in
/// `tables` must be a real table (`sqlite_master.type = 'table'`), not a
/// view posing as one, else the flist is refused naming the object.
pub(crate) fn open_untrusted(
    path: &Path,
    shown: &str,
    tables: &[&str],
) -> Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql(format!("{shown}: open SQLite flist")))?;
    conn.pragma_update(None, "trusted_schema", false)
        .map_err(sql(format!("{shown}: set trusted_schema=OFF")))?;
    for table in tables {
        match object_type(&conn, shown, table)?.as_deref() {
            Some("table") => {}
            Some(other) => {
                return Err(corrupt(format!(
                    "{shown}: {table:?} is a {other}, not a table; refusing this flist"
                )));
            }
            None => return Err(corrupt(format!("{shown}: no {table:?} table"))),
        }
    }
    Ok(conn)
}

/// The type (`table`, `view`, `index`, `trigger`) of the schema object
/// `name`, None when there is none.
pub(crate) fn object_type(
    conn: &rusqlite::Connection,
    shown: &str,
    name: &str,
) -> Result<Option<String>> {
    use rusqlite::OptionalExtension;
    conn.query_row(
        "SELECT type FROM sqlite_master WHERE name = ?1 ORDER BY type = 'table' DESC LIMIT 1",
        [name],
        |r| r.get::<_, String>(0),
    )
    .optional()
    .map_err(sql(format!("{shown}: damaged SQLite database")))
}

/// A column as raw bytes (TEXT or BLOB), None for NULL.
pub(crate) fn bytes_of(v: ValueRef<'_>) -> Option<Vec<u8>> {
    match v {
        ValueRef::Text(b) | ValueRef::Blob(b) => Some(b.to_vec()),
        _ => None,
    }
}

const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";

/// Which SQLite flist `path` is: rfs has an `inode` table, 0-fs `entries`.
fn sqlite_format(path: &Path) -> Result<Format> {
    let shown = path.display().to_string();
    let conn = open_untrusted(path, &shown, &[])?;
    let is_table = |name: &str| -> Result<bool> {
        Ok(object_type(&conn, &shown, name)?.as_deref() == Some("table"))
    };
    if is_table("entries")? && !is_table("inode")? { Ok(Format::ZeroFsDb) } else { Ok(Format::Rfs) }
}

/// Tell the format of an flist file from its first bytes.
pub fn sniff(path: &Path) -> Result<Format> {
    if path.is_dir() {
        return Ok(Format::Native);
    }
    let head = archive::sniff(path, 512)?;
    if head.starts_with(SQLITE_MAGIC) {
        sqlite_format(path)
    } else if head.starts_with(ZSTD_MAGIC) {
        Ok(Format::Native)
    } else if zerofs::archive::sniff(&head) {
        Ok(Format::ZeroFs)
    } else {
        Err(corrupt(format!(
            "{}: not an flist (neither a zosfs .flist, an rfs .fl nor a 0-fs .flist file)",
            path.display()
        )))
    }
}

/// Open an flist of any known format.
pub fn open_any(path: &Path, opts: &OpenOptions) -> Result<Box<dyn Tree>> {
    Ok(match sniff(path)? {
        Format::Native => Box::new(Flist::open_with(path, opts)?),
        Format::Rfs => Box::new(rfs::RfsFlist::open(path)?),
        Format::ZeroFs => Box::new(zerofs::ZeroFsFlist::open_with(path, opts)?),
        Format::ZeroFsDb => Box::new(zerofs::ZeroFsFlist::open_db(path)?),
    })
}
