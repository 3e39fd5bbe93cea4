//! Writer → file → reader, and what the reader does with damaged input.

use std::collections::BTreeMap;

use zosfs_store::ChunkRef;

use super::archive::extract_archive;
use super::keys::*;
use super::*;
use crate::model::{Chunking, Codec, Header, Inode, Kind, ROOT_INO, Xattr};
use crate::tree::{Step, Tree, walk};
use crate::{DataChunk, ErrorKind};

fn header() -> Header {
    Header {
        format_version: FORMAT_VERSION,
        chunking: Chunking::Fixed { size: 1 << 20 },
        codec: Codec::Zck1,
        compression_level: 3,
        tool: tool_version(),
        routes: vec!["dir:///srv/chunks".into()],
        tags: BTreeMap::from([("name".into(), "test".into())]),
    }
}

fn inode(ino: u64, kind: Kind, parent: u64) -> Inode {
    Inode {
        ino,
        kind,
        perm: 0o644,
        uid: 1,
        gid: 2,
        mtime_ns: 1_600_000_000_123_456_789,
        size: 0,
        rdev: 0,
        nlink: 1,
        parent,
        target: Vec::new(),
        xattrs: Vec::new(),
    }
}

/// A root with `n` files named f00000.. and one symlink, one 3-chunk file.
fn write_sample(dir: &std::path::Path, n: u64) -> std::path::PathBuf {
    let mut w = Writer::create_in(dir, header()).unwrap();
    w.put_inode(&inode(ROOT_INO, Kind::Dir, ROOT_INO)).unwrap();
    for i in 0..n {
        let ino = 10 + i;
        w.put_inode(&inode(ino, Kind::File, ROOT_INO)).unwrap();
        w.put_dirent(ROOT_INO, format!("f{i:05}").as_bytes(), ino, Kind::File).unwrap();
    }
    let mut link = inode(2, Kind::Symlink, ROOT_INO);
    link.target = b"f00001".to_vec();
    link.size = 6;
    w.put_inode(&link).unwrap();
    w.put_dirent(ROOT_INO, b"link", 2, Kind::Symlink).unwrap();
    let chunks: Vec<ChunkRef> =
        (0..3u8).map(|i| zosfs_store::chunk::encode(&[i; 100]).unwrap().chunk).collect();
    let mut big = inode(3, Kind::File, ROOT_INO);
    big.size = 300;
    big.xattrs = vec![Xattr { name: b"user.a".to_vec(), value: vec![0, 1] }];
    w.put_inode(&big).unwrap();
    w.put_dirent(ROOT_INO, b"big \xff", 3, Kind::File).unwrap();
    w.put_chunks(3, &chunks).unwrap();
    let out = dir.join("t.flist");
    w.finish(&out).unwrap();
    out
}

fn opts(dir: &std::path::Path) -> OpenOptions {
    OpenOptions { cache_dir: dir.join("cache") }
}

#[test]
fn write_then_read_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let f = write_sample(tmp.path(), 2500);
    let fl = Flist::open_with(&f, &opts(tmp.path())).unwrap();
    assert_eq!(fl.header().tags["name"], "test");
    assert_eq!(fl.header().routes, vec!["dir:///srv/chunks".to_string()]);
    // Paged readdir sees every name once, in byte order.
    let all = fl.readdir_all(ROOT_INO).unwrap();
    assert_eq!(all.len(), 2502);
    assert!(all.windows(2).all(|w| w[0].name < w[1].name));
    let page = fl.readdir(ROOT_INO, Some(b"f00009"), 2).unwrap();
    assert_eq!(
        page.iter().map(|e| e.name.clone()).collect::<Vec<_>>(),
        vec![b"f00010".to_vec(), b"f00011".to_vec()]
    );
    // Lookup, getattr, readlink, xattrs, chunks, resolution.
    let e = fl.lookup(ROOT_INO, b"big \xff").unwrap().unwrap();
    assert_eq!((e.ino, e.kind), (3, Kind::File));
    assert!(fl.lookup(ROOT_INO, b"nope").unwrap().is_none());
    assert_eq!(fl.lookup(3, b"x").unwrap_err().kind(), ErrorKind::NotADirectory);
    assert_eq!(fl.readlink(2).unwrap(), b"f00001");
    assert_eq!(fl.readlink(3).unwrap_err().kind(), ErrorKind::WrongType);
    assert_eq!(fl.xattrs(3).unwrap()[0].name, b"user.a");
    assert_eq!(fl.chunks(3).unwrap().len(), 3);
    assert!(matches!(fl.data(3).unwrap()[0], DataChunk::Zck1(_)));
    assert_eq!(fl.resolve(b"/link").unwrap().kind, Kind::Symlink);
    assert_eq!(fl.resolve_follow(b"link").unwrap().ino, fl.resolve(b"f00001").unwrap().ino);
    assert_eq!(fl.resolve(b"big \xff/x").unwrap_err().kind(), ErrorKind::NotADirectory);
    assert_eq!(fl.resolve(b"missing").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(fl.getattr(999_999).unwrap_err().kind(), ErrorKind::NotFound);
    let mut n = 0;
    walk(&fl, ROOT_INO, b"", &mut |_, _| {
        n += 1;
        Ok(Step::Continue)
    })
    .unwrap();
    assert_eq!(n, 2503);
    // Opening again reuses the cache and sees the same content.
    let again = Flist::open_with(&f, &opts(tmp.path())).unwrap();
    assert_eq!(again.db_path(), fl.db_path());
    assert_eq!(again.digest().unwrap(), fl.digest().unwrap());
}

#[test]
fn damaged_files_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let f = write_sample(tmp.path(), 10);
    let bytes = std::fs::read(&f).unwrap();
    // Truncations and bit flips anywhere: an error, never a panic.
    let cuts = [0, 1, 4, 100, bytes.len() / 2, bytes.len() - 1];
    for (i, cut) in cuts.iter().enumerate() {
        let p = tmp.path().join(format!("cut{i}.flist"));
        std::fs::write(&p, &bytes[..*cut]).unwrap();
        let e = Flist::open_with(&p, &opts(tmp.path())).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "cut at {cut}: {e}");
    }
    for pos in (0..bytes.len()).step_by(bytes.len() / 40 + 1) {
        let mut bad = bytes.clone();
        bad[pos] ^= 0x40;
        let p = tmp.path().join(format!("flip{pos}.flist"));
        std::fs::write(&p, &bad).unwrap();
        let e = Flist::open_with(&p, &opts(tmp.path())).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "flip at {pos}: {e}");
    }
    // Nothing damaged entered the cache.
    let cached: Vec<_> = std::fs::read_dir(tmp.path().join("cache")).unwrap().collect();
    assert!(cached.is_empty(), "damaged flists left cache entries: {cached:?}");
}

#[test]
fn another_format_version_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let f = write_sample(tmp.path(), 1);
    let dir = tmp.path().join("db");
    std::fs::create_dir(&dir).unwrap();
    extract_archive(&f, &dir).unwrap();
    {
        let o = db_options();
        let db = rocksdb::DB::open_cf(&o, &dir, ALL_CFS).unwrap();
        db.put_cf(db.cf_handle(CF_META).unwrap(), KEY_FORMAT, 2u32.to_le_bytes()).unwrap();
    }
    let e = Flist::open_dir(&dir).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Version);
    assert!(e.to_string().contains("version 2"), "{e}");
    let e = Flist::open_dir(tmp.path()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
}

#[test]
fn single_file_image_flist() {
    let tmp = tempfile::tempdir().unwrap();
    let chunks: Vec<ChunkRef> =
        (0..5u8).map(|i| zosfs_store::chunk::encode(&[i; 4096]).unwrap().chunk).collect();
    let out = tmp.path().join("disk.flist");
    let mut attrs = inode(0, Kind::File, 0);
    attrs.perm = 0o600;
    write_single_file(&out, header(), b"disk.img", attrs, &chunks).unwrap();
    let fl = Flist::open_with(&out, &opts(tmp.path())).unwrap();
    let f = fl.resolve(b"disk.img").unwrap();
    assert_eq!((f.size, f.perm, f.nlink), (5 * 4096, 0o600, 1));
    assert_eq!(fl.chunks(f.ino).unwrap(), chunks);
    assert_eq!(fl.readdir_all(ROOT_INO).unwrap().len(), 1);
}
