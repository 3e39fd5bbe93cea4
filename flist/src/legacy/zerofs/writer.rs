//! Writing 0-fs flists from a directory (test fixtures, and handing trees
//! to 0-fs-era tools), following the published layout: one `Dir` record
//! per directory keyed by the BLAKE2b-128 of its path, one `ACI` record per
//! distinct owner/mode, chunks encoded with [`encode_block`].

use std::collections::VecDeque;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};
use zosfs_store::ChunkStore;

use super::schema::{AciRecord, Attrs, BlockRecord, DirRecord, InodeRecord, SpecialKind};
use super::schema::{encode_aci, encode_dir};
use super::{archive, hex_blake2b, path_key};
use crate::codec::zerofs::{DEFAULT_BLOCK_SIZE, encode_block};
use crate::error::{Error, ErrorKind, Result};
use crate::names::{join, path_bytes};

/// How to write.
#[derive(Clone, Debug)]
pub struct WriteOptions {
    /// `metadata.backend`: (host, port, namespace, password).
    pub backend: Option<(String, u16, String, String)>,
    /// Other `metadata` rows.
    pub tags: Vec<(String, String)>,
    /// Record numeric uid/gid in ACI records (0-flist ≥ 2.1); without,
    /// owners are only the names (here: the ids in decimal).
    pub aci_ids: bool,
    /// Bytes of chunk ids and keys (0-flist: 16).
    pub hash_len: usize,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions { backend: None, tags: Vec::new(), aci_ids: true, hash_len: 16 }
    }
}

fn sql(context: &str) -> impl FnOnce(rusqlite::Error) -> Error + '_ {
    move |e| Error::with_source(ErrorKind::Io, context.to_string(), e)
}

struct Ctx<'a> {
    conn: Connection,
    store: &'a dyn ChunkStore,
    rt: &'a tokio::runtime::Handle,
    opts: &'a WriteOptions,
}

impl Ctx<'_> {
    /// Store the ACI record of `m` (once per key) and return its key.
    fn acl(&self, m: &std::fs::Metadata) -> Result<String> {
        let (uid, gid, mode) = (m.uid(), m.gid(), m.mode() & 0o7777);
        let (uname, gname) = (uid.to_string(), gid.to_string());
        let key = hex_blake2b(
            format!("user:{uname}\ngroup:{gname}\nmode:{mode:o}\nuid:{uid}\ngid:{gid}").as_bytes(),
            8,
        );
        let rec = AciRecord {
            uname: uname.as_bytes(),
            gname: gname.as_bytes(),
            mode: mode as u16,
            uid: i64::from(uid),
            gid: i64::from(gid),
        };
        self.conn
            .execute(
                "INSERT OR IGNORE INTO entries (key, value) VALUES (?1, ?2)",
                params![key, encode_aci(&rec, self.opts.aci_ids)],
            )
            .map_err(sql("insert ACI"))?;
        Ok(key)
    }

    /// Encode and upload a file's blocks: (hash, key) pairs.
    fn blocks(&self, path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut f = std::fs::File::open(path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; DEFAULT_BLOCK_SIZE as usize];
        loop {
            let mut n = 0;
            while n < buf.len() {
                match f.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
                }
            }
            if n == 0 {
                return Ok(out);
            }
            let (blk, blob) = encode_block(&buf[..n], self.opts.hash_len)?;
            self.rt.block_on(self.store.put(&blk.store_id(), blob.into()))?;
            out.push((blk.id.as_slice().to_vec(), blk.key.as_slice().to_vec()));
            if n < buf.len() {
                return Ok(out);
            }
        }
    }
}

/// Write a 0-fs flist package describing directory `src` to `out`, and
/// put its blocks into `store` (under [`crate::codec::zerofs::Block::store_id`]).
pub fn write_flist(
    src: &Path,
    out: &Path,
    store: &dyn ChunkStore,
    rt: &tokio::runtime::Handle,
    opts: &WriteOptions,
) -> Result<()> {
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile::tempdir_in(parent)
        .map_err(|e| Error::io(format!("temp dir in {}", parent.display()), e))?;
    let db = tmp.path().join(archive::DB_NAME);
    let conn = Connection::open(&db).map_err(sql("create database"))?;
    conn.execute_batch(
        "CREATE TABLE entries (key VARCHAR(64) PRIMARY KEY, value BLOB);
         CREATE TABLE metadata (key VARCHAR(64) PRIMARY KEY, value TEXT);
         BEGIN;",
    )
    .map_err(sql("create 0-fs schema"))?;
    let ctx = Ctx { conn, store, rt, opts };
    // (directory on disk, its path in the flist, its parent's path)
    let mut queue: VecDeque<(PathBuf, Vec<u8>, Vec<u8>)> = VecDeque::new();
    queue.push_back((src.to_path_buf(), Vec::new(), Vec::new()));
    while let Some((dir, rel, parent_rel)) = queue.pop_front() {
        write_dir(&ctx, &dir, &rel, &parent_rel, &mut queue)?;
    }
    if let Some((host, port, ns, pw)) = &opts.backend {
        let json = serde_json::json!({"host": host, "port": port, "namespace": ns, "password": pw});
        ctx.conn
            .execute(
                "INSERT INTO metadata (key, value) VALUES ('backend', ?1)",
                params![json.to_string()],
            )
            .map_err(sql("insert metadata"))?;
    }
    for (k, v) in &opts.tags {
        ctx.conn
            .execute("INSERT INTO metadata (key, value) VALUES (?1, ?2)", params![k, v])
            .map_err(sql("insert metadata"))?;
    }
    ctx.conn.execute_batch("COMMIT;").map_err(sql("commit"))?;
    drop(ctx);
    archive::write_package(&db, out)
}

fn write_dir(
    ctx: &Ctx<'_>,
    dir: &Path,
    rel: &[u8],
    parent_rel: &[u8],
    queue: &mut VecDeque<(PathBuf, Vec<u8>, Vec<u8>)>,
) -> Result<()> {
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| Error::io(format!("lstat {}", dir.display()), e))?;
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("list {}", dir.display()), e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
    names.sort();
    // Owned pieces the records borrow from.
    struct Item {
        name: Vec<u8>,
        size: u64,
        acl: String,
        mtime: u32,
        ctime: u32,
        kind: ItemKind,
    }
    enum ItemKind {
        Dir(String),
        File(Vec<(Vec<u8>, Vec<u8>)>),
        Link(Vec<u8>),
        Special(SpecialKind, Vec<u8>),
    }
    let mut items = Vec::with_capacity(names.len());
    for name in &names {
        let path = dir.join(name);
        let name = path_bytes(Path::new(name)).to_vec();
        let m = std::fs::symlink_metadata(&path)
            .map_err(|e| Error::io(format!("lstat {}", path.display()), e))?;
        let ft = m.file_type();
        let child_rel = join(rel, &name);
        let kind = if ft.is_dir() {
            queue.push_back((path.clone(), child_rel.clone(), rel.to_vec()));
            ItemKind::Dir(path_key(&child_rel))
        } else if ft.is_file() {
            ItemKind::File(ctx.blocks(&path)?)
        } else if ft.is_symlink() {
            let t = std::fs::read_link(&path).map_err(|e| Error::io("readlink", e))?;
            ItemKind::Link(path_bytes(&t).to_vec())
        } else {
            let (major, minor) = (libc::major(m.rdev()), libc::minor(m.rdev()));
            let dev = format!("{major},{minor}").into_bytes();
            if ft.is_block_device() {
                ItemKind::Special(SpecialKind::Block, dev)
            } else if ft.is_char_device() {
                ItemKind::Special(SpecialKind::CharDev, dev)
            } else if ft.is_fifo() {
                ItemKind::Special(SpecialKind::Fifo, b"(nothing)".to_vec())
            } else {
                ItemKind::Special(SpecialKind::Socket, b"(nothing)".to_vec())
            }
        };
        items.push(Item {
            name,
            size: if ft.is_dir() { 4096 } else { m.size() },
            acl: ctx.acl(&m)?,
            mtime: m.mtime().clamp(0, i64::from(u32::MAX)) as u32,
            ctime: m.ctime().clamp(0, i64::from(u32::MAX)) as u32,
            kind,
        });
    }
    let contents = items
        .iter()
        .map(|i| InodeRecord {
            name: &i.name,
            size: i.size,
            aclkey: i.acl.as_bytes(),
            mtime: i.mtime,
            ctime: i.ctime,
            attrs: match &i.kind {
                ItemKind::Dir(key) => Attrs::Dir { key: key.as_bytes() },
                ItemKind::File(blocks) => Attrs::File {
                    block_size: (DEFAULT_BLOCK_SIZE / 4096) as u16,
                    blocks: blocks.iter().map(|(h, k)| BlockRecord { hash: h, key: k }).collect(),
                },
                ItemKind::Link(t) => Attrs::Link { target: t },
                ItemKind::Special(kind, data) => Attrs::Special { kind: *kind, data },
            },
        })
        .collect();
    let name = rel.rsplit(|&b| b == b'/').next().unwrap_or(b"");
    let acl = ctx.acl(&meta)?;
    let parent_key = if rel.is_empty() { String::new() } else { path_key(parent_rel) };
    let rec = DirRecord {
        name,
        location: rel,
        contents,
        parent: parent_key.as_bytes(),
        size: 4096,
        aclkey: acl.as_bytes(),
        mtime: meta.mtime().clamp(0, i64::from(u32::MAX)) as u32,
        ctime: meta.ctime().clamp(0, i64::from(u32::MAX)) as u32,
    };
    ctx.conn
        .execute(
            "INSERT INTO entries (key, value) VALUES (?1, ?2)",
            params![path_key(rel), encode_dir(&rec)],
        )
        .map_err(sql("insert directory"))?;
    Ok(())
}
