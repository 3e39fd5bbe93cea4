//! Reading a native flist: open (unpacking a `.flist` file into the cache
//! once), then point reads and prefix scans only.

use std::path::{Path, PathBuf};

use rocksdb::{DB, Direction, IteratorMode, ReadOptions};
use zosfs_store::ChunkRef;

use super::keys::*;
use super::records::{self, Version};
use super::{FORMAT_VERSION, archive, db_options, rocks_err};
use crate::codec::DataChunk;
use crate::error::{Error, ErrorKind, Result, corrupt, not_found};
use crate::model::{DirEntry, Header, Ino, Inode, Kind};
use crate::names::{check_name, show};
use crate::tree::Tree;

/// How to open an flist file.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Where `.flist` files are unpacked (see [`archive::default_cache_dir`]).
    pub cache_dir: PathBuf,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions { cache_dir: archive::default_cache_dir() }
    }
}

/// An open native flist (read-only). Cheap to share behind an `Arc`; all
/// methods take `&self` and are safe to call from many threads.
pub struct Flist {
    db: DB,
    header: Header,
    version: Version,
    dir: PathBuf,
}

impl std::fmt::Debug for Flist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flist").field("dir", &self.dir).finish()
    }
}

impl Flist {
    /// Open a `.flist` file (or an unpacked flist directory) with the
    /// default cache.
    pub fn open(path: &Path) -> Result<Flist> {
        Flist::open_with(path, &OpenOptions::default())
    }

    pub fn open_with(path: &Path, opts: &OpenOptions) -> Result<Flist> {
        if path.is_dir() {
            return Flist::open_dir(path);
        }
        // Unpacking names `path` (or the cache) in its errors; the check
        // sees only the unpacked copy, so it names `path` itself.
        let dir = archive::unpack_cached(path, &opts.cache_dir, |d| {
            Flist::open_dir(d)
                .and_then(|f| f.check_all_blocks())
                .map_err(|e| e.context_prefix(path.display()))
        })?;
        Flist::open_dir(&dir)
    }

    /// Open an unpacked flist database directory read-only.
    pub fn open_dir(dir: &Path) -> Result<Flist> {
        let shown = dir.display();
        if !dir.join("CURRENT").is_file() {
            return Err(corrupt(format!("{shown}: not an flist database (no CURRENT file)")));
        }
        // Read-only opening also accepts column families a newer minor added.
        let db = DB::open_cf_for_read_only(&db_options(), dir, ALL_CFS, false)
            .map_err(|e| rocks_err(format!("{shown}: open flist database"), e))?;
        let version = read_version(&db).map_err(|e| e.context_prefix(&shown))?;
        let meta = db.cf_handle(CF_META).expect("opened with this column family");
        let raw = db
            .get_cf(meta, KEY_HEADER)
            .map_err(|e| rocks_err(format!("{shown}: read header"), e))?
            .ok_or_else(|| corrupt(format!("{shown}: no header")))?;
        let header = records::decode_header(version, &raw, || format!("{shown}: header"))?;
        if header.format_version != version.major {
            return Err(corrupt(format!("{shown}: header and format key disagree on the version")));
        }
        Ok(Flist { db, header, version, dir: dir.to_path_buf() })
    }

    /// The format version of this flist (the header's `format_version` is
    /// its major).
    pub fn version(&self) -> Version {
        self.version
    }

    /// The unpacked database directory.
    pub fn db_path(&self) -> &Path {
        &self.dir
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("opened with every column family")
    }

    /// Whether values may carry bytes a newer minor appended (format 2 on).
    fn appended(&self) -> bool {
        self.version.major >= 2
    }

    /// Read every record once with block checksums on (done when a file is
    /// first unpacked, before it enters the cache).
    fn check_all_blocks(&self) -> Result<()> {
        for name in ALL_CFS {
            let mut ro = ReadOptions::default();
            ro.set_verify_checksums(true);
            ro.fill_cache(false);
            for item in self.db.iterator_cf_opt(self.cf(name), ro, IteratorMode::Start) {
                item.map_err(|e| rocks_err(format!("check {name}"), e))?;
            }
        }
        Ok(())
    }

    /// The native chunk list of a regular file.
    pub fn chunks(&self, ino: Ino) -> Result<Vec<ChunkRef>> {
        let inode = self.getattr(ino)?;
        if inode.kind != Kind::File {
            return Err(Error::new(
                ErrorKind::WrongType,
                format!("inode {ino} is a {}, not a file", inode.kind.name()),
            ));
        }
        let start = chunks_key(ino, 0);
        let mut out: Vec<ChunkRef> = Vec::new();
        for (next_group, item) in self
            .db
            .iterator_cf(self.cf(CF_CHUNKS), IteratorMode::From(&start, Direction::Forward))
            .enumerate()
        {
            let (k, v) = item.map_err(|e| rocks_err(format!("read chunks of inode {ino}"), e))?;
            let Some((owner, group)) = parse_chunks_key(&k) else {
                return Err(corrupt(format!("malformed chunk key near inode {ino}")));
            };
            if owner != ino {
                break;
            }
            if group as usize != next_group {
                return Err(corrupt(format!("inode {ino}: chunk group {next_group} is missing")));
            }
            let part = records::decode_chunks(self.version, &v, || {
                format!("inode {ino}: chunk group {group}")
            })?;
            out.extend(part);
        }
        let total: u64 = out.iter().map(|c| u64::from(c.len)).sum();
        if total != inode.size {
            return Err(corrupt(format!(
                "inode {ino}: chunks hold {total} bytes, the file has {}",
                inode.size
            )));
        }
        Ok(out)
    }

    /// Call `f` on every inode, in inode order (a full scan: for `inspect`).
    pub fn for_each_inode(&self, mut f: impl FnMut(Inode) -> Result<()>) -> Result<()> {
        for item in self.db.iterator_cf(self.cf(CF_INODES), IteratorMode::Start) {
            let (k, v) = item.map_err(|e| rocks_err("scan inodes", e))?;
            let inode = records::decode_inode(self.version, &v, || {
                format!("inode record {}", hex::encode(&k))
            })?;
            if k.as_ref() != inode_key(inode.ino) {
                return Err(corrupt(format!("inode {} stored under a wrong key", inode.ino)));
            }
            f(inode)?;
        }
        Ok(())
    }

    /// BLAKE3 over every record of every column family, in order: two flists
    /// with the same digest have the same content, whatever the bytes of
    /// their RocksDB files.
    pub fn digest(&self) -> Result<String> {
        let mut h = blake3::Hasher::new();
        for name in ALL_CFS {
            h.update(name.as_bytes());
            for item in self.db.iterator_cf(self.cf(name), IteratorMode::Start) {
                let (k, v) = item.map_err(|e| rocks_err(format!("scan {name}"), e))?;
                h.update(&(k.len() as u64).to_le_bytes());
                h.update(&k);
                h.update(&(v.len() as u64).to_le_bytes());
                h.update(&v);
            }
        }
        Ok(h.finalize().to_hex().to_string())
    }
}

/// The format version in the `meta` column family: the major (a u32 LE in
/// every version, so any reader can refuse a newer one by name) and, from
/// format 2 on, the minor.
fn read_version(db: &DB) -> Result<Version> {
    let major = read_u32(db, KEY_FORMAT)?
        .ok_or_else(|| corrupt("no format version (not a zosfs flist)"))?;
    if major == 0 {
        return Err(corrupt("format version 0 (not a zosfs flist)"));
    }
    if major > FORMAT_VERSION {
        return Err(Error::new(
            ErrorKind::Version,
            format!(
                "made by a newer zosfs: flist format {major} (this zosfs reads up to {FORMAT_VERSION})"
            ),
        ));
    }
    let minor = match major {
        1 => 0,
        _ => read_u32(db, KEY_FORMAT_MINOR)?
            .ok_or_else(|| corrupt(format!("format {major} without a minor version")))?,
    };
    Ok(Version { major, minor })
}

fn read_u32(db: &DB, key: &[u8]) -> Result<Option<u32>> {
    let meta = db.cf_handle(CF_META).expect("opened with this column family");
    let shown = String::from_utf8_lossy(key);
    let Some(raw) = db.get_cf(meta, key).map_err(|e| rocks_err(format!("read {shown}"), e))? else {
        return Ok(None);
    };
    let raw: [u8; 4] =
        raw.as_slice().try_into().map_err(|_| corrupt(format!("malformed {shown} value")))?;
    Ok(Some(u32::from_le_bytes(raw)))
}

impl Tree for Flist {
    fn header(&self) -> &Header {
        &self.header
    }

    fn getattr(&self, ino: Ino) -> Result<Inode> {
        let raw = self
            .db
            .get_pinned_cf(self.cf(CF_INODES), inode_key(ino))
            .map_err(|e| rocks_err(format!("read inode {ino}"), e))?
            .ok_or_else(|| not_found(format!("inode {ino}")))?;
        let inode = records::decode_inode(self.version, &raw, || format!("inode {ino}"))?;
        if inode.ino != ino {
            return Err(corrupt(format!("inode {ino} stored under a wrong key")));
        }
        Ok(inode)
    }

    fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Option<DirEntry>> {
        if check_name(name).is_ok() {
            let raw = self
                .db
                .get_pinned_cf(self.cf(CF_DIRENTS), dirent_key(parent, name))
                .map_err(|e| rocks_err(format!("look up {} in {parent}", show(name)), e))?;
            if let Some(raw) = raw {
                let (ino, kind) = parse_dirent_value(&raw, self.appended()).ok_or_else(|| {
                    corrupt(format!("malformed entry {} in directory {parent}", show(name)))
                })?;
                return Ok(Some(DirEntry { name: name.to_vec(), ino, kind }));
            }
        }
        // A miss: say ENOTDIR rather than ENOENT when the parent is no directory.
        let p = self.getattr(parent)?;
        if p.kind != Kind::Dir {
            return Err(Error::new(ErrorKind::NotADirectory, format!("inode {parent}")));
        }
        Ok(None)
    }

    fn readdir(&self, dir: Ino, after: Option<&[u8]>, limit: usize) -> Result<Vec<DirEntry>> {
        if after.is_none() {
            let d = self.getattr(dir)?;
            if d.kind != Kind::Dir {
                return Err(Error::new(ErrorKind::NotADirectory, format!("inode {dir}")));
            }
        }
        let start = dirent_key(dir, after.unwrap_or(b""));
        let mut out = Vec::new();
        for item in
            self.db.iterator_cf(self.cf(CF_DIRENTS), IteratorMode::From(&start, Direction::Forward))
        {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(|e| rocks_err(format!("list directory {dir}"), e))?;
            let Some((parent, name)) = parse_dirent_key(&k) else {
                return Err(corrupt(format!("malformed entry key in directory {dir}")));
            };
            if parent != dir {
                break;
            }
            if after == Some(name) {
                continue;
            }
            check_name(name).map_err(|e| corrupt(format!("directory {dir}: {e}")))?;
            let (ino, kind) = parse_dirent_value(&v, self.appended())
                .ok_or_else(|| corrupt(format!("malformed entry {} in {dir}", show(name))))?;
            out.push(DirEntry { name: name.to_vec(), ino, kind });
        }
        Ok(out)
    }

    fn data(&self, ino: Ino) -> Result<Vec<DataChunk>> {
        Ok(self.chunks(ino)?.into_iter().map(DataChunk::Zck1).collect())
    }
}
