//! Unpack of hand-made hostile databases: names that are `..` or hold a
//! `/`, and directory cycles, are refused before anything is created.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::{Chunking, Codec, Header, Inode, Kind, ROOT_INO};
use crate::native::keys::*;
use crate::native::{FORMAT_VERSION, Flist};
use crate::unpack::{UnpackOptions, unpack};
use crate::{ErrorKind, Writer};

fn inode(ino: u64, kind: Kind) -> Inode {
    Inode {
        ino,
        kind,
        perm: 0o755,
        uid: 0,
        gid: 0,
        mtime_ns: 0,
        size: 0,
        rdev: 0,
        nlink: 1,
        parent: ROOT_INO,
        target: Vec::new(),
        xattrs: Vec::new(),
    }
}

/// A valid flist with `/d` (dir) and `/d/f` (file), then raw `extra`
/// dirents written straight into its database (bypassing name checks).
fn hostile(tmp: &std::path::Path, extra: &[(u64, &[u8], u64, Kind)]) -> Flist {
    let header = Header {
        format_version: FORMAT_VERSION,
        chunking: Chunking::Fixed { size: 1 << 20 },
        codec: Codec::Zck1,
        compression_level: 3,
        tool: "test".into(),
        routes: vec![],
        tags: BTreeMap::new(),
    };
    let mut w = Writer::create_in(tmp, header).unwrap();
    w.put_inode(&inode(ROOT_INO, Kind::Dir)).unwrap();
    w.put_inode(&inode(2, Kind::Dir)).unwrap();
    w.put_inode(&inode(3, Kind::File)).unwrap();
    w.put_dirent(ROOT_INO, b"d", 2, Kind::Dir).unwrap();
    w.put_dirent(2, b"f", 3, Kind::File).unwrap();
    let out = tmp.join("h.flist");
    w.finish(&out).unwrap();
    let dir = tmp.join("db");
    std::fs::create_dir(&dir).unwrap();
    crate::native::archive::extract_archive(&out, &dir).unwrap();
    {
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &dir, ALL_CFS).unwrap();
        let cf = db.cf_handle(CF_DIRENTS).unwrap();
        for (parent, name, ino, kind) in extra {
            db.put_cf(cf, dirent_key(*parent, name), dirent_value(*ino, *kind)).unwrap();
        }
    }
    Flist::open_dir(&dir).unwrap()
}

fn try_unpack(fl: &Flist, dest: &std::path::Path) -> crate::Error {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store: crate::content::Store = Arc::new(zosfs_store::backend::mem::MemStore::new());
    unpack(fl, store, rt.handle().clone(), dest, &UnpackOptions::default()).unwrap_err()
}

#[test]
fn dotdot_and_slash_names_are_refused() {
    for name in [&b".."[..], b"../escape", b"a/b", b"."] {
        let tmp = tempfile::tempdir().unwrap();
        let fl = hostile(tmp.path(), &[(2, name, 3, Kind::File)]);
        let dest = tmp.path().join("dest");
        let e = try_unpack(&fl, &dest);
        assert!(matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::Escape), "{name:?}: {e}");
        assert!(!tmp.path().join("escape").exists() && !tmp.path().join("f").exists());
        assert!(!dest.exists(), "{name:?}: unpack created the destination");
    }
}

#[test]
fn directory_cycles_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let fl = hostile(tmp.path(), &[(2, b"loop", ROOT_INO, Kind::Dir)]);
    let e = try_unpack(&fl, &tmp.path().join("dest"));
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
}
