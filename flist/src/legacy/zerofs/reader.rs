//! Reading a 0-fs flist database as a [`Tree`].
//!
//! 0-fs has no inode numbers: inodes are numbered here as directories are
//! first read (the root is [`ROOT_INO`]; the children of a directory get
//! consecutive numbers, in name order, when it is first listed or looked
//! into). Numbers are stable for the life of one open flist.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use rusqlite::{Connection, OptionalExtension, params};

use super::owners::Owners;
use super::schema::{
    AciRecord, Attrs, DirRecord, InodeRecord, SpecialKind, decode_aci, decode_dir,
};
use super::{archive, path_key};
use crate::codec::DataChunk;
use crate::codec::zerofs::{Block, DEFAULT_BLOCK_SIZE, Hash};
use crate::error::{Error, ErrorKind, Result, corrupt, not_found};
use crate::legacy::{bytes_of, object_type, open_untrusted, sql};
use crate::model::{Chunking, Codec, DirEntry, Header, Ino, Inode, Kind, ROOT_INO};
use crate::names::{check_name, join, show};
use crate::native::OpenOptions;
use crate::tree::Tree;

/// Largest directory record we decode (a directory of 100 000 entries is
/// about 15 MiB).
const MAX_RECORD: usize = 64 << 20;

/// Permissions and owner used when an entry's ACI record is missing (what
/// 0-fs itself falls back to).
const DEFAULT_PERM: u32 = 0o400;
const DEFAULT_ID: u32 = 1000;

/// One inode, as far as its directory's record told.
#[derive(Clone, Debug)]
struct Node {
    parent: Ino,
    kind: Kind,
    perm: u32,
    uid: u32,
    gid: u32,
    mtime_ns: i64,
    size: u64,
    rdev: u64,
    target: Vec<u8>,
    /// Directories: relative path and the key of their own record.
    path: Vec<u8>,
    dir_key: Vec<u8>,
    /// Files: block size in bytes and the raw (hash, key) pairs.
    block_size: u64,
    blocks: Arc<Vec<(Vec<u8>, Vec<u8>)>>,
}

#[derive(Default)]
struct Index {
    /// `nodes[ino - 1]`.
    nodes: Vec<Node>,
    /// Children of loaded directories, sorted by name.
    children: HashMap<Ino, Arc<Vec<DirEntry>>>,
    /// Record keys already loaded, and by which directory.
    loaded: HashMap<Vec<u8>, Ino>,
    /// Decoded ACI records: (perm, uid, gid).
    acls: HashMap<Vec<u8>, (u32, u32, u32)>,
}

/// An open 0-fs flist (read-only).
pub struct ZeroFsFlist {
    conn: Mutex<Connection>,
    index: Mutex<Index>,
    header: Header,
    owners: OnceLock<Owners>,
    shown: String,
}

impl std::fmt::Debug for ZeroFsFlist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZeroFsFlist").field("db", &self.shown).finish()
    }
}

/// `major,minor` of a device special file.
fn parse_rdev(data: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(data).ok()?.trim_end_matches('\0');
    let (ma, mi) = s.split_once(',')?;
    Some(libc::makedev(ma.trim().parse().ok()?, mi.trim().parse().ok()?))
}

impl ZeroFsFlist {
    /// Open a 0-fs package (`.flist`: tar.gz holding `flistdb.sqlite3`),
    /// extracting its database into the cache once.
    pub fn open_with(path: &Path, opts: &OpenOptions) -> Result<ZeroFsFlist> {
        // Unpacking names `path` in its errors; the check sees only the
        // extracted database, so it names `path` itself.
        let db = archive::unpack_cached(path, &opts.cache_dir, |db| {
            ZeroFsFlist::open_db(db).map(|_| ()).map_err(|e| e.context_prefix(path.display()))
        })?;
        ZeroFsFlist::open_db(&db)
    }

    /// Open an extracted `flistdb.sqlite3`.
    pub fn open_db(db: &Path) -> Result<ZeroFsFlist> {
        let shown = db.display().to_string();
        let conn = open_untrusted(db, &shown, &["entries"])
            .map_err(|e| e.context_prefix("0-fs database"))?;
        let (routes, tags) = read_metadata(&conn, &shown)?;
        let header = Header {
            format_version: 0,
            chunking: Chunking::Fixed { size: DEFAULT_BLOCK_SIZE as u32 },
            codec: Codec::ZeroFs,
            compression_level: 0,
            tool: "0-fs flist".into(),
            routes,
            tags,
        };
        let f = ZeroFsFlist {
            conn: Mutex::new(conn),
            index: Mutex::new(Index::default()),
            header,
            owners: OnceLock::new(),
            shown,
        };
        f.load_root()?;
        Ok(f)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value of `entries` row `key` (None when absent).
    fn entry(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let key = std::str::from_utf8(key).map_err(|_| {
            corrupt(format!("{}: record key {} is not text", self.shown, show(key)))
        })?;
        let v = self
            .conn()
            .query_row("SELECT value FROM entries WHERE key = ?1", params![key], |r| {
                Ok(bytes_of(r.get_ref(0)?))
            })
            .optional()
            .map_err(sql(format!("{}: read record {key}", self.shown)))?
            .flatten();
        if let Some(v) = &v {
            if v.len() > MAX_RECORD {
                return Err(corrupt(format!(
                    "{}: record {key} of {} bytes (limit {MAX_RECORD})",
                    self.shown,
                    v.len()
                )));
            }
        }
        Ok(v)
    }

    /// Owner and permissions named by `aclkey` (cached per key).
    fn access(&self, idx: &mut Index, aclkey: &[u8]) -> Result<(u32, u32, u32)> {
        if let Some(a) = idx.acls.get(aclkey) {
            return Ok(*a);
        }
        let a = match self.entry(aclkey)? {
            None => (DEFAULT_PERM, DEFAULT_ID, DEFAULT_ID),
            Some(raw) => {
                let aci: AciRecord<'_> = decode_aci(&raw).map_err(|e| {
                    e.context_prefix(format!("{}: ACI record {}", self.shown, show(aclkey)))
                })?;
                let owners = self.owners.get_or_init(Owners::system);
                (
                    u32::from(aci.mode) & 0o7777,
                    owners.uid(aci.uid, aci.uname),
                    owners.gid(aci.gid, aci.gname),
                )
            }
        };
        idx.acls.insert(aclkey.to_vec(), a);
        Ok(a)
    }

    fn load_root(&self) -> Result<()> {
        let key = path_key(b"");
        let raw = self.entry(key.as_bytes())?.ok_or_else(|| {
            corrupt(format!("{}: no root directory record (not a 0-fs flist?)", self.shown))
        })?;
        let dir = decode_dir(&raw)
            .map_err(|e| e.context_prefix(format!("{}: root directory", self.shown)))?;
        let mut idx = self.index();
        let (perm, uid, gid) = self.access(&mut idx, dir.aclkey)?;
        idx.nodes.push(Node {
            parent: ROOT_INO,
            kind: Kind::Dir,
            perm,
            uid,
            gid,
            mtime_ns: i64::from(dir.mtime) * 1_000_000_000,
            size: 0,
            rdev: 0,
            target: Vec::new(),
            path: Vec::new(),
            dir_key: key.into_bytes(),
            block_size: 0,
            blocks: Arc::default(),
        });
        Ok(())
    }

    fn node(&self, idx: &Index, ino: Ino) -> Result<Node> {
        ino.checked_sub(1)
            .and_then(|i| idx.nodes.get(i as usize))
            .cloned()
            .ok_or_else(|| not_found(format!("inode {ino}")))
    }

    /// The children of directory `dir`, reading its record on first use.
    fn children(&self, dir: Ino) -> Result<Arc<Vec<DirEntry>>> {
        let mut idx = self.index();
        if let Some(c) = idx.children.get(&dir) {
            return Ok(c.clone());
        }
        let node = self.node(&idx, dir)?;
        if node.kind != Kind::Dir {
            return Err(Error::new(ErrorKind::NotADirectory, format!("inode {dir}")));
        }
        let shown_dir = if node.path.is_empty() { "/".into() } else { show(&node.path) };
        if let Some(other) = idx.loaded.get(&node.dir_key) {
            return Err(corrupt(format!(
                "{}: directory {shown_dir} uses record {} already read for inode {other} \
                 (a cycle or a shared subtree)",
                self.shown,
                show(&node.dir_key)
            )));
        }
        let raw = self.entry(&node.dir_key)?.ok_or_else(|| {
            corrupt(format!(
                "{}: record {} of directory {shown_dir} is missing",
                self.shown,
                show(&node.dir_key)
            ))
        })?;
        let rec: DirRecord<'_> = decode_dir(&raw)
            .map_err(|e| e.context_prefix(format!("{}: directory {shown_dir}", self.shown)))?;
        let mut items: Vec<&InodeRecord<'_>> = rec.contents.iter().collect();
        items.sort_by(|a, b| a.name.cmp(b.name));
        if let Some(w) = items.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(corrupt(format!(
                "{}: directory {shown_dir} holds {} twice",
                self.shown,
                show(w[0].name)
            )));
        }
        let mut entries = Vec::with_capacity(items.len());
        let mut nodes = Vec::with_capacity(items.len());
        let first = idx.nodes.len() as Ino + 1;
        for (k, item) in items.into_iter().enumerate() {
            let n = self
                .node_of(&mut idx, dir, &node.path, item)
                .map_err(|e| e.context_prefix(format!("{}: directory {shown_dir}", self.shown)))?;
            entries.push(DirEntry {
                name: item.name.to_vec(),
                ino: first + k as Ino,
                kind: n.kind,
            });
            nodes.push(n);
        }
        idx.nodes.extend(nodes);
        idx.loaded.insert(node.dir_key.clone(), dir);
        let entries = Arc::new(entries);
        idx.children.insert(dir, entries.clone());
        Ok(entries)
    }

    /// A child's node from its record in directory `parent` (at `parent_path`).
    fn node_of(
        &self,
        idx: &mut Index,
        parent: Ino,
        parent_path: &[u8],
        item: &InodeRecord<'_>,
    ) -> Result<Node> {
        let name = item.name;
        check_name(name).map_err(|e| corrupt(e.context().to_string()))?;
        let (perm, uid, gid) = self.access(idx, item.aclkey)?;
        let mut n = Node {
            parent,
            kind: Kind::File,
            perm,
            uid,
            gid,
            mtime_ns: i64::from(item.mtime) * 1_000_000_000,
            size: 0,
            rdev: 0,
            target: Vec::new(),
            path: Vec::new(),
            dir_key: Vec::new(),
            block_size: 0,
            blocks: Arc::default(),
        };
        match &item.attrs {
            Attrs::Dir { key } => {
                n.kind = Kind::Dir;
                n.path = join(parent_path, name);
                // Writers always set the key; derive it from the path if not.
                n.dir_key =
                    if key.is_empty() { path_key(&n.path).into_bytes() } else { key.to_vec() };
            }
            Attrs::File { block_size, blocks } => {
                n.size = item.size;
                n.block_size = match u64::from(*block_size) * 4096 {
                    0 => DEFAULT_BLOCK_SIZE,
                    b => b,
                };
                n.blocks =
                    Arc::new(blocks.iter().map(|b| (b.hash.to_vec(), b.key.to_vec())).collect());
            }
            Attrs::Link { target } => {
                n.kind = Kind::Symlink;
                n.target = target.to_vec();
                n.size = target.len() as u64;
            }
            Attrs::Special { kind, data } => {
                n.kind = match kind {
                    SpecialKind::Socket => Kind::Socket,
                    SpecialKind::Fifo => Kind::Fifo,
                    SpecialKind::Block => Kind::BlockDev,
                    SpecialKind::CharDev => Kind::CharDev,
                    SpecialKind::Unknown(t) => {
                        return Err(corrupt(format!(
                            "entry {}: special file of unknown type {t}",
                            show(name)
                        )));
                    }
                };
                if matches!(n.kind, Kind::BlockDev | Kind::CharDev) {
                    n.rdev = parse_rdev(data).ok_or_else(|| {
                        corrupt(format!(
                            "entry {}: device number {:?} is not \"major,minor\"",
                            show(name),
                            String::from_utf8_lossy(data)
                        ))
                    })?;
                }
            }
        }
        Ok(n)
    }
}

impl Tree for ZeroFsFlist {
    fn header(&self) -> &Header {
        &self.header
    }

    fn getattr(&self, ino: Ino) -> Result<Inode> {
        let node = self.node(&self.index(), ino)?;
        let nlink = if node.kind == Kind::Dir {
            let subdirs = self.children(ino)?.iter().filter(|e| e.kind == Kind::Dir).count();
            2u32.saturating_add(u32::try_from(subdirs).unwrap_or(u32::MAX))
        } else {
            1
        };
        Ok(Inode {
            ino,
            kind: node.kind,
            perm: node.perm,
            uid: node.uid,
            gid: node.gid,
            mtime_ns: node.mtime_ns,
            size: node.size,
            rdev: node.rdev,
            nlink,
            parent: node.parent,
            target: node.target,
            xattrs: Vec::new(),
        })
    }

    fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Option<DirEntry>> {
        let c = self.children(parent)?;
        Ok(c.binary_search_by(|e| e.name.as_slice().cmp(name)).ok().map(|i| c[i].clone()))
    }

    fn readdir(&self, dir: Ino, after: Option<&[u8]>, limit: usize) -> Result<Vec<DirEntry>> {
        let c = self.children(dir)?;
        let start = match after {
            None => 0,
            Some(a) => c.partition_point(|e| e.name.as_slice() <= a),
        };
        Ok(c[start..].iter().take(limit).cloned().collect())
    }

    fn data(&self, ino: Ino) -> Result<Vec<DataChunk>> {
        let node = self.node(&self.index(), ino)?;
        if node.kind != Kind::File {
            return Err(Error::new(ErrorKind::WrongType, format!("inode {ino} is not a file")));
        }
        let mut left = node.size;
        let mut out = Vec::with_capacity(node.blocks.len());
        for (k, (id, key)) in node.blocks.iter().enumerate() {
            let bad = |why: &str| corrupt(format!("0-fs inode {ino}: block {k}: {why}"));
            if left == 0 {
                return Err(bad("more blocks than the file size needs"));
            }
            let len = left.min(node.block_size);
            left -= len;
            let id = Hash::from_slice(id).ok_or_else(|| bad("hash is not 16 or 32 bytes"))?;
            let key = Hash::from_slice(key).ok_or_else(|| bad("key is not 16 or 32 bytes"))?;
            let len = u32::try_from(len).map_err(|_| bad("block over 4 GiB"))?;
            out.push(DataChunk::ZeroFs(Block { id, key, len }));
        }
        if left != 0 {
            return Err(corrupt(format!(
                "0-fs inode {ino}: blocks hold {} bytes fewer than its size",
                left
            )));
        }
        Ok(out)
    }
}

/// Routes and tags from the `metadata` table (0-flist ≥ 2; absent before).
/// `backend` is a JSON object naming the 0-db the chunks were uploaded to;
/// it becomes a route without its password. Other keys become tags.
fn read_metadata(
    conn: &Connection,
    shown: &str,
) -> Result<(Vec<String>, BTreeMap<String, String>)> {
    let mut routes = Vec::new();
    let mut tags = BTreeMap::new();
    match object_type(conn, shown, "metadata")?.as_deref() {
        None => return Ok((routes, tags)),
        Some("table") => {}
        Some(other) => {
            return Err(corrupt(format!(
                "{shown}: \"metadata\" is a {other}, not a table; refusing this flist"
            )));
        }
    }
    let mut st = conn
        .prepare("SELECT key, value FROM metadata ORDER BY key")
        .map_err(sql(format!("{shown}: metadata")))?;
    let rows = st
        .query_map([], |r| Ok((bytes_of(r.get_ref(0)?), bytes_of(r.get_ref(1)?))))
        .map_err(sql(format!("{shown}: metadata")))?;
    for row in rows {
        let (Some(k), v) = row.map_err(sql(format!("{shown}: metadata")))? else { continue };
        let k = String::from_utf8_lossy(&k).into_owned();
        let v = String::from_utf8_lossy(&v.unwrap_or_default()).into_owned();
        if k == "backend" {
            routes.extend(backend_route(&v));
        } else {
            tags.insert(k, v);
        }
    }
    Ok((routes, tags))
}

/// `{"host": .., "port": .., "namespace": .., "password": ..}` → a zdb URL
/// without the password.
fn backend_route(json: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let host = v.get("host")?.as_str()?;
    let port = v.get("port").and_then(|p| p.as_u64()).unwrap_or(9900);
    let ns = v.get("namespace").and_then(|n| n.as_str()).unwrap_or("default");
    Some(format!("zdb://{host}:{port}/{ns}"))
}
