//! rfs `.fl` files (the "FungiList" format): one SQLite database.
//!
//! ```text
//! inode(ino INTEGER PRIMARY KEY, parent, name, size, uid, gid, mode, rdev, ctime, mtime)
//! extra(ino INTEGER PRIMARY KEY, data)      symlink targets
//! block(ino, id, key)                        a file's blocks in insertion order
//! tag(key PRIMARY KEY, value)                version, description, author, ...
//! route(start, end, url)                     first-id-byte ranges to stores
//! ```
//!
//! `mode` is the full Linux `st_mode`; times are seconds. The root is the
//! inode whose parent is 0. Blocks are 512 KiB of plaintext (the last one
//! shorter): key = BLAKE2b-256(plain); blob = AES-256-GCM(snappy(plain))
//! with that key and its first 12 bytes as nonce; id = BLAKE2b-256(blob).
//! rfs records neither xattrs nor hardlinks.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::{bytes_of, open_untrusted, sql};
use crate::codec::DataChunk;
pub use crate::codec::rfs::{decode_block, encode_block};
use crate::error::{Error, ErrorKind, Result, corrupt, not_found};
use crate::model::{Chunking, Codec, DirEntry, Header, Ino, Inode, Kind};
use crate::names::{check_name, show};
use crate::tree::Tree;

/// Plaintext bytes per rfs block.
pub const BLOCK_SIZE: u64 = 512 << 10;

/// An open rfs `.fl` file.
pub struct RfsFlist {
    conn: Mutex<Connection>,
    header: Header,
    root: Ino,
    block_size: u64,
}

/// A 32-byte id or key: raw, or 64 hex digits.
fn hash32(v: Option<Vec<u8>>, what: &str, ino: Ino) -> Result<[u8; 32]> {
    let v = v.ok_or_else(|| corrupt(format!("rfs inode {ino}: block without {what}")))?;
    if let Ok(a) = <[u8; 32]>::try_from(v.as_slice()) {
        return Ok(a);
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(&v, &mut out)
        .map_err(|_| corrupt(format!("rfs inode {ino}: {what} is not 32 bytes")))?;
    Ok(out)
}

/// Strip `user:password@` from a route URL whatever its scheme.
fn redact_route(url: &str) -> String {
    if let Ok(u) = url.parse::<zosfs_store::StoreUrl>() {
        return u.redacted();
    }
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

impl RfsFlist {
    pub fn open(path: &Path) -> Result<RfsFlist> {
        let shown = path.display().to_string();
        let conn = open_untrusted(path, &shown, &["inode", "extra", "block", "tag", "route"])
            .map_err(|e| e.context_prefix("rfs flist"))?;
        let root: Ino = conn
            .query_row("SELECT ino FROM inode WHERE parent = 0 ORDER BY ino LIMIT 1", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map_err(sql(format!("{shown}: not an rfs flist")))?
            .ok_or_else(|| corrupt(format!("{shown}: rfs flist has no root inode")))?
            as Ino;
        let mut tags = BTreeMap::new();
        {
            let mut st = conn
                .prepare("SELECT key, value FROM tag")
                .map_err(sql(format!("{shown}: tags")))?;
            let rows = st
                .query_map([], |r| Ok((bytes_of(r.get_ref(0)?), bytes_of(r.get_ref(1)?))))
                .map_err(sql(format!("{shown}: tags")))?;
            for row in rows {
                if let (Some(k), v) = row.map_err(sql(format!("{shown}: tags")))? {
                    let v = v.unwrap_or_default();
                    tags.insert(
                        String::from_utf8_lossy(&k).into_owned(),
                        String::from_utf8_lossy(&v).into_owned(),
                    );
                }
            }
        }
        let mut routes = Vec::new();
        {
            let mut st = conn
                .prepare("SELECT start, end, url FROM route")
                .map_err(sql(format!("{shown}: routes")))?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, Option<i64>>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        bytes_of(r.get_ref(2)?),
                    ))
                })
                .map_err(sql(format!("{shown}: routes")))?;
            for row in rows {
                let (s, e, url) = row.map_err(sql(format!("{shown}: routes")))?;
                let url = redact_route(&String::from_utf8_lossy(&url.unwrap_or_default()));
                let (s, e) = (s.unwrap_or(0).clamp(0, 255), e.unwrap_or(255).clamp(0, 255));
                routes.push(if (s, e) == (0, 255) {
                    url
                } else {
                    format!("{s:02x}-{e:02x}={url}")
                });
            }
        }
        let block_size = tags
            .get("block-size")
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|b| (4096..=(8 << 20)).contains(b))
            .unwrap_or(BLOCK_SIZE);
        let header = Header {
            format_version: 0,
            chunking: Chunking::Fixed { size: block_size as u32 },
            codec: Codec::Rfs,
            compression_level: 0,
            tool: tags.get("version").map(|v| format!("rfs {v}")).unwrap_or_else(|| "rfs".into()),
            routes,
            tags,
        };
        let f = RfsFlist { conn: Mutex::new(conn), header, root, block_size };
        if f.getattr(root)?.kind != Kind::Dir {
            return Err(corrupt(format!("{shown}: the rfs root is not a directory")));
        }
        Ok(f)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn kind_of(mode: i64, ino: Ino) -> Result<Kind> {
        Kind::from_mode(mode as u32)
            .ok_or_else(|| corrupt(format!("rfs inode {ino}: unknown mode {mode:o}")))
    }
}

impl Tree for RfsFlist {
    fn header(&self) -> &Header {
        &self.header
    }

    fn root(&self) -> Ino {
        self.root
    }

    fn getattr(&self, ino: Ino) -> Result<Inode> {
        let c = self.conn();
        let row = c
            .query_row(
                "SELECT parent, size, uid, gid, mode, rdev, mtime FROM inode WHERE ino = ?1",
                params![ino as i64],
                |r| {
                    Ok((
                        r.get::<_, Option<i64>>(0)?.unwrap_or(0),
                        r.get::<_, Option<i64>>(1)?.unwrap_or(0),
                        r.get::<_, Option<i64>>(2)?.unwrap_or(0),
                        r.get::<_, Option<i64>>(3)?.unwrap_or(0),
                        r.get::<_, Option<i64>>(4)?.unwrap_or(0),
                        r.get::<_, Option<i64>>(5)?.unwrap_or(0),
                        r.get::<_, Option<i64>>(6)?.unwrap_or(0),
                    ))
                },
            )
            .optional()
            .map_err(sql(format!("rfs inode {ino}")))?
            .ok_or_else(|| not_found(format!("inode {ino}")))?;
        let (parent, size, uid, gid, mode, rdev, mtime) = row;
        let kind = Self::kind_of(mode, ino)?;
        let target = if kind == Kind::Symlink {
            c.query_row("SELECT data FROM extra WHERE ino = ?1", params![ino as i64], |r| {
                Ok(bytes_of(r.get_ref(0)?))
            })
            .optional()
            .map_err(sql(format!("rfs inode {ino}: link target")))?
            .flatten()
            .unwrap_or_default()
        } else {
            Vec::new()
        };
        let nlink = if kind == Kind::Dir {
            let subdirs: i64 = c
                .query_row(
                    "SELECT count(*) FROM inode WHERE parent = ?1 AND ino != ?1 AND (mode & 61440) = 16384",
                    params![ino as i64],
                    |r| r.get(0),
                )
                .map_err(sql(format!("rfs inode {ino}: count subdirectories")))?;
            2 + subdirs.clamp(0, u32::MAX as i64 - 2) as u32
        } else {
            1
        };
        Ok(Inode {
            ino,
            kind,
            perm: mode as u32 & 0o7777,
            uid: uid as u32,
            gid: gid as u32,
            mtime_ns: mtime.saturating_mul(1_000_000_000),
            size: match kind {
                Kind::File => size.max(0) as u64,
                Kind::Symlink => target.len() as u64,
                _ => 0,
            },
            rdev: if matches!(kind, Kind::CharDev | Kind::BlockDev) { rdev as u64 } else { 0 },
            nlink,
            parent: if ino == self.root { ino } else { parent as u64 },
            target,
            xattrs: Vec::new(),
        })
    }

    fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Option<DirEntry>> {
        let p = self.getattr(parent)?;
        if p.kind != Kind::Dir {
            return Err(Error::new(ErrorKind::NotADirectory, format!("inode {parent}")));
        }
        if check_name(name).is_err() {
            return Ok(None);
        }
        let c = self.conn();
        let hit = c
            .query_row(
                "SELECT ino, mode FROM inode WHERE parent = ?1 AND ino != ?1 AND CAST(name AS BLOB) = ?2 LIMIT 1",
                params![parent as i64, name],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?.unwrap_or(0))),
            )
            .optional()
            .map_err(sql(format!("look up {} in rfs inode {parent}", show(name))))?;
        match hit {
            None => Ok(None),
            Some((ino, mode)) => Ok(Some(DirEntry {
                name: name.to_vec(),
                ino: ino as Ino,
                kind: Self::kind_of(mode, ino as Ino)?,
            })),
        }
    }

    fn readdir(&self, dir: Ino, after: Option<&[u8]>, limit: usize) -> Result<Vec<DirEntry>> {
        if after.is_none() && self.getattr(dir)?.kind != Kind::Dir {
            return Err(Error::new(ErrorKind::NotADirectory, format!("inode {dir}")));
        }
        let c = self.conn();
        let mut st = c
            .prepare_cached(
                "SELECT ino, CAST(name AS BLOB), mode FROM inode WHERE parent = ?1 AND ino != ?1 \
                 AND CAST(name AS BLOB) > ?2 ORDER BY CAST(name AS BLOB) LIMIT ?3",
            )
            .map_err(sql(format!("list rfs inode {dir}")))?;
        let rows = st
            .query_map(
                params![dir as i64, after.unwrap_or(b""), limit.min(i64::MAX as usize) as i64],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        bytes_of(r.get_ref(1)?),
                        r.get::<_, Option<i64>>(2)?.unwrap_or(0),
                    ))
                },
            )
            .map_err(sql(format!("list rfs inode {dir}")))?;
        let mut out = Vec::new();
        for row in rows {
            let (ino, name, mode) = row.map_err(sql(format!("list rfs inode {dir}")))?;
            let name = name.unwrap_or_default();
            check_name(&name).map_err(|e| corrupt(format!("rfs directory {dir}: {e}")))?;
            out.push(DirEntry { name, ino: ino as Ino, kind: Self::kind_of(mode, ino as Ino)? });
        }
        Ok(out)
    }

    fn data(&self, ino: Ino) -> Result<Vec<DataChunk>> {
        let inode = self.getattr(ino)?;
        if inode.kind != Kind::File {
            return Err(Error::new(ErrorKind::WrongType, format!("inode {ino} is not a file")));
        }
        let c = self.conn();
        let mut st = c
            .prepare_cached("SELECT id, key FROM block WHERE ino = ?1 ORDER BY rowid")
            .map_err(sql(format!("blocks of rfs inode {ino}")))?;
        let rows = st
            .query_map(params![ino as i64], |r| {
                Ok((bytes_of(r.get_ref(0)?), bytes_of(r.get_ref(1)?)))
            })
            .map_err(sql(format!("blocks of rfs inode {ino}")))?;
        let mut out = Vec::new();
        let mut left = inode.size;
        for row in rows {
            let (id, key) = row.map_err(sql(format!("blocks of rfs inode {ino}")))?;
            if left == 0 {
                return Err(corrupt(format!("rfs inode {ino}: more blocks than its size needs")));
            }
            let len = left.min(self.block_size);
            left -= len;
            out.push(DataChunk::Rfs {
                id: hash32(id, "id", ino)?,
                key: hash32(key, "key", ino)?,
                len: len as u32,
            });
        }
        if left != 0 {
            return Err(corrupt(format!("rfs inode {ino}: blocks hold fewer bytes than its size")));
        }
        Ok(out)
    }
}

/// Write an rfs `.fl` file describing `src` (a directory) and put its
/// blocks into `store`. Built from the published format description; used
/// for test fixtures and to hand trees to rfs-era tools.
pub fn write_fl(
    src: &Path,
    out: &Path,
    store: &dyn zosfs_store::ChunkStore,
    rt: &tokio::runtime::Handle,
    routes: &[String],
    tags: &[(&str, &str)],
) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let _ = std::fs::remove_file(out);
    let conn = Connection::open(out).map_err(sql(format!("create {}", out.display())))?;
    conn.execute_batch(
        "CREATE TABLE inode (ino INTEGER PRIMARY KEY AUTOINCREMENT, parent INTEGER, name VARCHAR(255), \
           size INTEGER, uid INTEGER, gid INTEGER, mode INTEGER, rdev INTEGER, ctime INTEGER, mtime INTEGER);
         CREATE INDEX parents ON inode (parent);
         CREATE TABLE extra (ino INTEGER PRIMARY KEY, data VARCHAR(4096));
         CREATE TABLE block (ino INTEGER, id VARCHAR(32), key VARCHAR(32));
         CREATE INDEX block_ino ON block (ino);
         CREATE TABLE tag (key VARCHAR(10) PRIMARY KEY, value VARCHAR(255));
         CREATE TABLE route (start integer, end integer, url VARCHAR(2048));",
    )
    .map_err(sql("create rfs schema"))?;
    let ins = |parent: i64, name: &[u8], m: &std::fs::Metadata| -> Result<i64> {
        conn.execute(
            "INSERT INTO inode (parent, name, size, uid, gid, mode, rdev, ctime, mtime) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                parent,
                String::from_utf8_lossy(name).into_owned(),
                m.size() as i64,
                m.uid() as i64,
                m.gid() as i64,
                m.mode() as i64,
                m.rdev() as i64,
                m.ctime(),
                m.mtime()
            ],
        )
        .map_err(sql("insert inode"))?;
        Ok(conn.last_insert_rowid())
    };
    let root_meta =
        std::fs::metadata(src).map_err(|e| Error::io(format!("stat {}", src.display()), e))?;
    let root = ins(0, b"/", &root_meta)?;
    let mut stack = vec![(src.to_path_buf(), root)];
    while let Some((dir, ino)) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(format!("list {}", dir.display()), e))?
            .filter_map(|e| e.ok())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let m = std::fs::symlink_metadata(&path)
                .map_err(|e| Error::io(format!("lstat {}", path.display()), e))?;
            let name = crate::names::path_bytes(std::path::Path::new(&e.file_name())).to_vec();
            let child = ins(ino, &name, &m)?;
            if m.file_type().is_symlink() {
                let t = std::fs::read_link(&path).map_err(|e| Error::io("readlink", e))?;
                conn.execute(
                    "INSERT INTO extra (ino, data) VALUES (?1, ?2)",
                    params![child, t.to_string_lossy().into_owned()],
                )
                .map_err(sql("insert extra"))?;
            } else if m.is_dir() {
                stack.push((path, child));
            } else if m.is_file() {
                let data = std::fs::read(&path)
                    .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
                for part in data.chunks(BLOCK_SIZE as usize) {
                    let (id, key, blob) = encode_block(part)?;
                    rt.block_on(store.put(&zosfs_store::ChunkId(id), blob.into()))?;
                    conn.execute(
                        "INSERT INTO block (ino, id, key) VALUES (?1, ?2, ?3)",
                        params![child, &id[..], &key[..]],
                    )
                    .map_err(sql("insert block"))?;
                }
            }
        }
    }
    for (k, v) in tags {
        conn.execute("INSERT INTO tag (key, value) VALUES (?1, ?2)", params![k, v])
            .map_err(sql("insert tag"))?;
    }
    for r in routes {
        conn.execute("INSERT INTO route (start, end, url) VALUES (0, 255, ?1)", params![r])
            .map_err(sql("insert route"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An rfs flist whose `table` is replaced by a view over a copy.
    fn with_view(tmp: &Path, table: &str) -> std::path::PathBuf {
        let src = tmp.join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("f"), b"hello").unwrap();
        let out = tmp.join("v.fl");
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store = zosfs_store::backend::mem::MemStore::new();
        write_fl(&src, &out, &store, rt.handle(), &[], &[]).unwrap();
        let conn = Connection::open(&out).unwrap();
        conn.execute_batch(&format!(
            "ALTER TABLE {table} RENAME TO real_{table}; \
             CREATE VIEW {table} AS SELECT * FROM real_{table};"
        ))
        .unwrap();
        out
    }

    #[test]
    fn a_view_posing_as_a_table_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for table in ["inode", "route"] {
            let fl = with_view(tmp.path(), table);
            let e = RfsFlist::open(&fl).err().unwrap();
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
            assert!(e.to_string().contains(&format!("{table:?} is a view, not a table")), "{e}");
            let any = crate::legacy::open_any(&fl, &Default::default()).err().unwrap();
            assert!(any.to_string().contains("is a view"), "{any}");
        }
    }

    #[test]
    fn flists_are_read_with_an_untrusted_schema() {
        let tmp = tempfile::tempdir().unwrap();
        let fl = with_view(tmp.path(), "tag");
        let conn = open_untrusted(&fl, "t", &[]).unwrap();
        let on: i64 = conn.query_row("PRAGMA trusted_schema", [], |r| r.get(0)).unwrap();
        assert_eq!(on, 0);
    }

    #[test]
    fn routes_lose_passwords() {
        assert_eq!(redact_route("zdb://:secret@hub:9900/ns"), "zdb://hub:9900/ns");
        assert_eq!(redact_route("s3://user:pw@host/bucket"), "s3://host/bucket");
    }
}
