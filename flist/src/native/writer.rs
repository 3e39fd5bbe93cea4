//! Writing a native flist: put inodes, directory entries and chunk lists,
//! then `finish` compacts the database and ships it as one `.flist` file.
//! Used by the packer and by `nbdserver commit` (an image flist with one file).

use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, DB, WriteBatch, WriteOptions};
use zosfs_store::ChunkRef;

use super::keys::*;
use super::{FORMAT_MINOR, FORMAT_VERSION, archive, db_options, records, rocks_err};
use crate::error::{Error, ErrorKind, Result, invalid};
use crate::model::{Header, Ino, Inode, Kind, ROOT_INO};
use crate::names::check_name;

/// Records buffered before a batch is written.
const BATCH: usize = 4096;

/// A native flist being written into a temporary database.
pub struct Writer {
    db: DB,
    dir: tempfile::TempDir,
    header: Header,
    batch: WriteBatch,
    pending: usize,
    has_root: bool,
}

impl Writer {
    /// Start an flist in a temporary directory under the system temp dir.
    pub fn create(header: Header) -> Result<Writer> {
        Writer::create_in(&std::env::temp_dir(), header)
    }

    /// Start an flist whose temporary database lives under `tmp_parent`.
    pub fn create_in(tmp_parent: &Path, mut header: Header) -> Result<Writer> {
        header.format_version = FORMAT_VERSION;
        let dir = tempfile::Builder::new()
            .prefix("zosfs-flist-")
            .tempdir_in(tmp_parent)
            .map_err(|e| Error::io(format!("create temp dir in {}", tmp_parent.display()), e))?;
        let mut opts = db_options();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_write_buffer_size(64 << 20);
        let cfs = ALL_CFS.iter().map(|n| ColumnFamilyDescriptor::new(*n, db_options()));
        let db = DB::open_cf_descriptors(&opts, dir.path(), cfs)
            .map_err(|e| rocks_err("create flist database", e))?;
        Ok(Writer { db, dir, header, batch: WriteBatch::default(), pending: 0, has_root: false })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn header_mut(&mut self) -> &mut Header {
        &mut self.header
    }

    fn put(&mut self, cf: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let h = self.db.cf_handle(cf).expect("column family created at open");
        self.batch.put_cf(h, key, value);
        self.pending += 1;
        if self.pending >= BATCH {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<()> {
        let batch = std::mem::take(&mut self.batch);
        let mut wo = WriteOptions::default();
        // The database is rebuilt from scratch on any failure: no WAL needed.
        wo.disable_wal(true);
        self.db.write_opt(batch, &wo).map_err(|e| rocks_err("write flist database", e))?;
        self.pending = 0;
        Ok(())
    }

    /// Store an inode (replaces one with the same number).
    pub fn put_inode(&mut self, inode: &Inode) -> Result<()> {
        if inode.ino == 0 {
            return Err(invalid("inode number 0 is reserved"));
        }
        if inode.ino == ROOT_INO {
            if inode.kind != Kind::Dir {
                return Err(invalid("the root inode must be a directory"));
            }
            self.has_root = true;
        }
        let v = records::encode_inode(inode)?;
        self.put(CF_INODES, &inode_key(inode.ino), &v)
    }

    /// Store the name `name` of inode `ino` in directory `parent`.
    pub fn put_dirent(&mut self, parent: Ino, name: &[u8], ino: Ino, kind: Kind) -> Result<()> {
        check_name(name)?;
        self.put(CF_DIRENTS, &dirent_key(parent, name), &dirent_value(ino, kind))
    }

    /// Store the chunk list of regular file `ino` (in groups of [`CHUNK_GROUP`]).
    pub fn put_chunks(&mut self, ino: Ino, chunks: &[ChunkRef]) -> Result<()> {
        for (group, part) in chunks.chunks(CHUNK_GROUP).enumerate() {
            let group = u32::try_from(group).map_err(|_| invalid("file has too many chunks"))?;
            let v = records::encode_chunks(part)?;
            self.put(CF_CHUNKS, &chunks_key(ino, group), &v)?;
        }
        Ok(())
    }

    /// Write the header, compact, and ship the database as `out`.
    pub fn finish(mut self, out: &Path) -> Result<()> {
        if !self.has_root {
            return Err(Error::new(ErrorKind::InvalidInput, "flist has no root directory"));
        }
        let header = records::encode_header(&self.header)?;
        self.put(CF_META, KEY_FORMAT, &FORMAT_VERSION.to_le_bytes())?;
        self.put(CF_META, KEY_FORMAT_MINOR, &u32::from(FORMAT_MINOR).to_le_bytes())?;
        self.put(CF_META, KEY_HEADER, &header)?;
        self.flush_batch()?;
        for cf in ALL_CFS {
            let h = self.db.cf_handle(cf).expect("column family created at open");
            self.db.flush_cf(h).map_err(|e| rocks_err("flush flist database", e))?;
            self.db.compact_range_cf(h, None::<&[u8]>, None::<&[u8]>);
        }
        let Writer { db, dir, .. } = self;
        drop(db);
        archive::write_archive(dir.path(), out)
    }
}

/// Write an flist holding one regular file `name` in the root (a VM disk
/// image, as `nbdserver commit` makes): `file` gives the file's attributes
/// (its `ino`, `parent`, `nlink` and `size` are set here), `chunks` its
/// content. The root directory takes the file's owner and mtime.
pub fn write_single_file(
    out: &Path,
    header: Header,
    name: &[u8],
    mut file: Inode,
    chunks: &[ChunkRef],
) -> Result<()> {
    check_name(name)?;
    let mut w = Writer::create_in(
        out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")),
        header,
    )?;
    file.ino = ROOT_INO + 1;
    file.kind = Kind::File;
    file.parent = ROOT_INO;
    file.nlink = 1;
    file.size = chunks.iter().map(|c| u64::from(c.len)).sum();
    let root = Inode {
        ino: ROOT_INO,
        kind: Kind::Dir,
        perm: 0o755,
        uid: file.uid,
        gid: file.gid,
        mtime_ns: file.mtime_ns,
        size: 0,
        rdev: 0,
        nlink: 2,
        parent: ROOT_INO,
        target: Vec::new(),
        xattrs: Vec::new(),
    };
    w.put_inode(&root)?;
    w.put_inode(&file)?;
    w.put_dirent(ROOT_INO, name, file.ino, Kind::File)?;
    w.put_chunks(file.ino, chunks)?;
    w.finish(out)
}
