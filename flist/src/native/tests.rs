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

/// The sample flist unpacked into `tmp/db`, for tests that edit records.
fn unpacked_sample(tmp: &std::path::Path) -> std::path::PathBuf {
    let f = write_sample(tmp, 1);
    let dir = tmp.join("db");
    std::fs::create_dir(&dir).unwrap();
    extract_archive(&f, &dir).unwrap();
    dir
}

/// Apply `edit` to every record of column family `cf`.
fn rewrite_cf(db: &rocksdb::DB, cf: &str, edit: impl Fn(&mut Vec<u8>)) {
    let h = db.cf_handle(cf).unwrap();
    let all: Vec<_> = db.iterator_cf(h, rocksdb::IteratorMode::Start).map(Result::unwrap).collect();
    for (k, v) in all {
        let mut v: Vec<u8> = v.into_vec();
        edit(&mut v);
        db.put_cf(h, k, v).unwrap();
    }
}

#[test]
fn a_newer_major_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = unpacked_sample(tmp.path());
    {
        let db = rocksdb::DB::open_cf(&db_options(), &dir, ALL_CFS).unwrap();
        db.put_cf(db.cf_handle(CF_META).unwrap(), KEY_FORMAT, 3u32.to_le_bytes()).unwrap();
    }
    let e = Flist::open_dir(&dir).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Version);
    assert!(
        e.to_string().contains("made by a newer zosfs: flist format 3 (this zosfs reads up to 2)"),
        "{e}"
    );
    let e = Flist::open_dir(tmp.path()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
}

#[test]
fn a_major_2_without_its_minor_or_with_version_0_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = unpacked_sample(tmp.path());
    let meta_edit = |edit: &dyn Fn(&rocksdb::DB, &rocksdb::ColumnFamily)| {
        let db = rocksdb::DB::open_cf(&db_options(), &dir, ALL_CFS).unwrap();
        edit(&db, db.cf_handle(CF_META).unwrap());
    };
    meta_edit(&|db, m| db.delete_cf(m, KEY_FORMAT_MINOR).unwrap());
    let e = Flist::open_dir(&dir).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("without a minor version"), "{e}");
    meta_edit(&|db, m| db.put_cf(m, KEY_FORMAT, 0u32.to_le_bytes()).unwrap());
    assert_eq!(Flist::open_dir(&dir).unwrap_err().kind(), ErrorKind::Corrupt);
}

/// What a 2.7 writer could add: a higher tag and appended fields on every
/// record, longer dirents, a column family this build does not know.
#[test]
fn a_newer_minor_reads_as_its_known_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = unpacked_sample(tmp.path());
    let before = Flist::open_dir(&dir).unwrap();
    assert_eq!(before.version(), Version { major: 2, minor: 0 });
    let inodes_before = all_inodes(&before);
    let chunks_before = before.chunks(3).unwrap();
    let header_before = before.header().clone();
    drop(before);
    {
        let mut o = db_options();
        o.create_missing_column_families(true);
        let mut db = rocksdb::DB::open_cf(&o, &dir, ALL_CFS).unwrap();
        let newer = |v: &mut Vec<u8>| {
            v[0] = 7;
            v.extend([0x2a; 5]);
        };
        for cf in [CF_INODES, CF_CHUNKS] {
            rewrite_cf(&db, cf, newer);
        }
        rewrite_cf(&db, CF_DIRENTS, |v| v.push(0xee));
        let meta = db.cf_handle(CF_META).unwrap();
        let mut header = db.get_cf(meta, KEY_HEADER).unwrap().unwrap();
        newer(&mut header);
        db.put_cf(meta, KEY_HEADER, header).unwrap();
        db.put_cf(meta, KEY_FORMAT_MINOR, 7u32.to_le_bytes()).unwrap();
        db.put_cf(meta, b"a future key", b"ignored").unwrap();
        db.create_cf("future", &db_options()).unwrap();
    }
    let fl = Flist::open_dir(&dir).unwrap();
    assert_eq!(fl.version(), Version { major: 2, minor: 7 });
    assert_eq!(fl.version().to_string(), "2.7");
    assert_eq!(fl.header(), &header_before);
    assert_eq!(all_inodes(&fl), inodes_before);
    assert_eq!(fl.chunks(3).unwrap(), chunks_before);
    assert_eq!(fl.lookup(ROOT_INO, b"link").unwrap().unwrap().ino, 2);
    assert_eq!(fl.readdir_all(ROOT_INO).unwrap().len(), 3);
}

/// Format 1 had no room for growth: a trailing byte there is damage.
#[test]
fn trailing_bytes_in_a_known_layout_are_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = unpacked_sample(tmp.path());
    {
        let db = rocksdb::DB::open_cf(&db_options(), &dir, ALL_CFS).unwrap();
        rewrite_cf(&db, CF_INODES, |v| v.push(0));
    }
    let fl = Flist::open_dir(&dir).unwrap();
    let e = fl.getattr(ROOT_INO).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
}

fn all_inodes(fl: &Flist) -> Vec<Inode> {
    let mut v = Vec::new();
    fl.for_each_inode(|i| {
        v.push(i);
        Ok(())
    })
    .unwrap();
    v
}

/// The golden flists (tests/fixtures/flist-golden): format 1 as packed by
/// an earlier build and the same tree in the current format read the same.
#[test]
fn golden_flists_of_every_format_read_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let golden =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/flist-golden");
    let open = |name: &str| Flist::open_with(&golden.join(name), &opts(tmp.path())).unwrap();
    let (v1, v2) = (open("v1.flist"), open("v2.flist"));
    assert_eq!(v1.version(), Version { major: 1, minor: 0 });
    assert_eq!(v2.version(), Version::CURRENT);
    let (mut h1, h2) = (v1.header().clone(), v2.header().clone());
    assert_eq!((h1.format_version, h2.format_version), (1, 2));
    h1.format_version = 2;
    h1.tool.clone_from(&h2.tool);
    assert_eq!(h1, h2);
    let (i1, i2) = (all_inodes(&v1), all_inodes(&v2));
    assert_eq!(i1.len(), 15, "the golden tree has 15 inodes");
    assert_eq!(i1, i2);
    for i in i1.iter().filter(|i| i.kind == Kind::File) {
        assert_eq!(v1.chunks(i.ino).unwrap(), v2.chunks(i.ino).unwrap());
    }
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
