//! 0-fs reader and writer: a tree written by our writer reads back
//! entry by entry and byte by byte; hand-made hostile databases and
//! damaged packages are clear errors.

use std::path::Path;
use std::sync::Arc;

use rusqlite::{Connection, params};
use zosfs_store::ChunkStore;
use zosfs_store::backend::mem::MemStore;

use super::schema::*;
use super::*;
use crate::codec::DataChunk;
use crate::model::Kind;
use crate::native::OpenOptions;
use crate::tree::{Step, Tree, walk};
use crate::{ErrorKind, ROOT_INO};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().unwrap()
}

/// A small tree: nested dirs, a 3-block file, an empty file, a symlink,
/// a non-UTF-8 name.
fn tree(root: &Path) -> Vec<u8> {
    std::fs::create_dir_all(root.join("etc/conf.d")).unwrap();
    std::fs::write(root.join("etc/hostname"), b"zos\n").unwrap();
    let big: Vec<u8> =
        (0..1_200_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(root.join("etc/conf.d/big"), &big).unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    std::fs::write(root.join(std::ffi::OsStr::from_bytes(b"caf\xe9")), b"latin1").unwrap();
    std::os::unix::fs::symlink("etc/hostname", root.join("link")).unwrap();
    big
}

use std::os::unix::ffi::OsStrExt;

fn write(src: &Path, out: &Path, store: &MemStore, opts: &WriteOptions) {
    let rt = rt();
    write_flist(src, out, store, rt.handle(), opts).unwrap();
}

fn read_file(t: &dyn Tree, store: &MemStore, path: &[u8]) -> Vec<u8> {
    let ino = t.resolve(path).unwrap().ino;
    let rt = rt();
    let mut out = Vec::new();
    for c in t.data(ino).unwrap() {
        let blob = rt.block_on(store.get(&c.store_id())).unwrap().expect("chunk in store");
        out.extend(c.decode(&blob).unwrap());
    }
    out
}

#[test]
fn written_tree_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let big = tree(&src);
    let store = MemStore::new();
    let out = tmp.path().join("t.flist");
    let opts = WriteOptions {
        backend: Some(("hub.example".into(), 9900, "ns".into(), "hunter2".into())),
        tags: vec![("entrypoint".into(), "/bin/sh".into())],
        ..WriteOptions::default()
    };
    write(&src, &out, &store, &opts);

    let oo = OpenOptions { cache_dir: tmp.path().join("cache") };
    let t = ZeroFsFlist::open_with(&out, &oo).unwrap();
    assert_eq!(t.header().routes, vec!["zdb://hub.example:9900/ns".to_string()]);
    assert_eq!(t.header().tags.get("entrypoint").map(String::as_str), Some("/bin/sh"));
    let mut paths = Vec::new();
    walk(&t, t.root(), b"", &mut |p, i| {
        paths.push((p.to_vec(), i.kind));
        Ok(Step::Continue)
    })
    .unwrap();
    let want: Vec<(&[u8], Kind)> = vec![
        (b"", Kind::Dir),
        (b"caf\xe9", Kind::File),
        (b"empty", Kind::File),
        (b"etc", Kind::Dir),
        (b"etc/conf.d", Kind::Dir),
        (b"etc/conf.d/big", Kind::File),
        (b"etc/hostname", Kind::File),
        (b"link", Kind::Symlink),
    ];
    let got: Vec<(&[u8], Kind)> = paths.iter().map(|(p, k)| (p.as_slice(), *k)).collect();
    assert_eq!(got, want);
    assert_eq!(read_file(&t, &store, b"etc/conf.d/big"), big);
    assert_eq!(t.data(t.resolve(b"etc/conf.d/big").unwrap().ino).unwrap().len(), 3);
    assert_eq!(read_file(&t, &store, b"empty"), b"");
    assert_eq!(t.readlink(t.resolve(b"link").unwrap().ino).unwrap(), b"etc/hostname");
    assert_eq!(t.resolve_follow(b"link").unwrap().ino, t.resolve(b"etc/hostname").unwrap().ino);
    let etc = t.getattr(t.resolve(b"etc").unwrap().ino).unwrap();
    assert_eq!(etc.nlink, 3, "etc holds one subdirectory");
    let m = std::fs::metadata(src.join("etc/hostname")).unwrap();
    use std::os::unix::fs::MetadataExt;
    let i = t.resolve(b"etc/hostname").unwrap();
    assert_eq!((i.perm, i.uid, i.gid, i.size), (m.mode() & 0o7777, m.uid(), m.gid(), 4));
    assert_eq!(i.mtime_ns, m.mtime() * 1_000_000_000);
    // A second open uses the cached database.
    let again = ZeroFsFlist::open_with(&out, &oo).unwrap();
    assert_eq!(again.readdir_all(ROOT_INO).unwrap().len(), 4);
    // The extracted database opens directly too, and `open_any` tells both.
    let db = std::fs::read_dir(tmp.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "0fs"))
        .unwrap()
        .join(archive::DB_NAME);
    assert_eq!(crate::legacy::sniff(&db).unwrap(), crate::legacy::Format::ZeroFsDb);
    assert_eq!(crate::legacy::sniff(&out).unwrap(), crate::legacy::Format::ZeroFs);
    assert_eq!(crate::legacy::open_any(&db, &oo).unwrap().readdir_all(ROOT_INO).unwrap().len(), 4);
}

#[test]
fn old_aci_records_without_ids_use_the_names() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    tree(&src);
    let store = MemStore::new();
    let out = tmp.path().join("t.flist");
    write(&src, &out, &store, &WriteOptions { aci_ids: false, ..WriteOptions::default() });
    let t = ZeroFsFlist::open_with(&out, &OpenOptions { cache_dir: tmp.path().join("c") }).unwrap();
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(src.join("empty")).unwrap();
    let i = t.resolve(b"empty").unwrap();
    // The writer names owners by their decimal ids.
    assert_eq!((i.uid, i.gid), (m.uid(), m.gid()));
}

/// A database with the given raw records and nothing else.
fn db_with(dir: &Path, records: &[(String, Vec<u8>)]) -> std::path::PathBuf {
    let p = dir.join(format!("db{}.sqlite3", records.len()));
    let _ = std::fs::remove_file(&p);
    let c = Connection::open(&p).unwrap();
    c.execute_batch("CREATE TABLE entries (key VARCHAR(64) PRIMARY KEY, value BLOB);").unwrap();
    for (k, v) in records {
        c.execute("INSERT INTO entries (key, value) VALUES (?1, ?2)", params![k, v]).unwrap();
    }
    p
}

fn dir_rec<'a>(contents: Vec<InodeRecord<'a>>) -> DirRecord<'a> {
    DirRecord {
        name: b"",
        location: b"",
        contents,
        parent: b"",
        size: 4096,
        aclkey: b"",
        mtime: 0,
        ctime: 0,
    }
}

fn entry<'a>(name: &'a [u8], attrs: Attrs<'a>) -> InodeRecord<'a> {
    InodeRecord { name, size: 0, attrs, aclkey: b"", mtime: 0, ctime: 0 }
}

/// Open a database and walk it fully, reading every file's chunk list.
fn open_and_walk(db: &Path) -> crate::Result<usize> {
    let t = ZeroFsFlist::open_db(db)?;
    let mut n = 0;
    walk(&t, t.root(), b"", &mut |_, i| {
        n += 1;
        if i.kind == Kind::File {
            t.data(i.ino)?;
        }
        Ok(Step::Continue)
    })?;
    Ok(n)
}

fn err(r: crate::Result<usize>) -> crate::Error {
    match r {
        Ok(n) => panic!("hostile database accepted ({n} entries)"),
        Err(e) => e,
    }
}

#[test]
fn hostile_databases_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let root = path_key(b"");
    let t = tmp.path();

    // No root record.
    let e = err(open_and_walk(&db_with(t, &[])));
    assert!(e.to_string().contains("no root directory record"), "{e}");

    // A subdirectory whose record is missing.
    let sub = encode_dir(&dir_rec(vec![entry(b"d", Attrs::Dir { key: b"0011" })]));
    let e = err(open_and_walk(&db_with(t, &[(root.clone(), sub)])));
    assert!(e.to_string().contains(r#"record "0011" of directory "d" is missing"#), "{e}");

    // A cycle: the subdirectory's key is the root's own.
    let cyc = encode_dir(&dir_rec(vec![entry(b"loop", Attrs::Dir { key: root.as_bytes() })]));
    let e = err(open_and_walk(&db_with(t, &[(root.clone(), cyc)])));
    assert!(e.to_string().contains("cycle"), "{e}");

    // Names that would escape or collide.
    for (bad, why) in [(&b".."[..], "."), (b"a/b", "/"), (b"", "empty")] {
        let rec = encode_dir(&dir_rec(vec![entry(bad, Attrs::Link { target: b"x" })]));
        let e = err(open_and_walk(&db_with(t, &[(root.clone(), rec)])));
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains(why), "{e}");
    }
    let twice = encode_dir(&dir_rec(vec![
        entry(b"x", Attrs::Link { target: b"1" }),
        entry(b"x", Attrs::Link { target: b"2" }),
    ]));
    let e = err(open_and_walk(&db_with(t, &[(root.clone(), twice)])));
    assert!(e.to_string().contains(r#"holds "x" twice"#), "{e}");

    // Unknown special type, bad device numbers.
    let rec = encode_dir(&dir_rec(vec![entry(
        b"s",
        Attrs::Special { kind: SpecialKind::Unknown(9), data: b"" },
    )]));
    let e = err(open_and_walk(&db_with(t, &[(root.clone(), rec)])));
    assert!(e.to_string().contains("unknown type 9"), "{e}");
    let rec = encode_dir(&dir_rec(vec![entry(
        b"dev",
        Attrs::Special { kind: SpecialKind::Block, data: b"seven" },
    )]));
    let e = err(open_and_walk(&db_with(t, &[(root.clone(), rec)])));
    assert!(e.to_string().contains("major,minor"), "{e}");

    // A file whose blocks do not add up to its size, or have odd hashes.
    let h = [1u8; 16];
    let blocks = vec![BlockRecord { hash: &h, key: &h }];
    let mut f = entry(b"f", Attrs::File { block_size: 128, blocks: blocks.clone() });
    f.size = 3 << 20;
    let e = err(open_and_walk(&db_with(t, &[(root.clone(), encode_dir(&dir_rec(vec![f])))])));
    assert!(e.to_string().contains("fewer than its size"), "{e}");
    let mut f = entry(b"f", Attrs::File { block_size: 128, blocks: blocks.clone() });
    f.size = 0;
    let e = err(open_and_walk(&db_with(t, &[(root.clone(), encode_dir(&dir_rec(vec![f])))])));
    assert!(e.to_string().contains("more blocks"), "{e}");
    let short = [1u8; 5];
    let mut f = entry(
        b"f",
        Attrs::File { block_size: 128, blocks: vec![BlockRecord { hash: &short, key: &h }] },
    );
    f.size = 10;
    let e = err(open_and_walk(&db_with(t, &[(root.clone(), encode_dir(&dir_rec(vec![f])))])));
    assert!(e.to_string().contains("not 16 or 32 bytes"), "{e}");

    // Garbage where a capnp message belongs.
    let e = err(open_and_walk(&db_with(t, &[(root.clone(), b"not capnp at all".to_vec())])));
    assert!(e.to_string().contains("capnp"), "{e}");

    // Not a database at all.
    let junk = t.join("junk");
    std::fs::write(&junk, vec![0x55u8; 4096]).unwrap();
    assert_eq!(err(open_and_walk(&junk)).kind(), ErrorKind::Corrupt);
}

#[test]
fn damaged_packages_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    tree(&src);
    let store = Arc::new(MemStore::new());
    let out = tmp.path().join("t.flist");
    write(&src, &out, &store, &WriteOptions::default());
    let good = std::fs::read(&out).unwrap();
    let open = |bytes: &[u8], n: usize| {
        let p = tmp.path().join(format!("bad{n}.flist"));
        std::fs::write(&p, bytes).unwrap();
        let oo = OpenOptions { cache_dir: tmp.path().join(format!("cache{n}")) };
        ZeroFsFlist::open_with(&p, &oo).map(|_| ())
    };
    for (n, cut) in [good.len() / 2, good.len() - 3, 10].into_iter().enumerate() {
        let e = open(&good[..cut], n).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    }
    // A flipped bit anywhere in the deflate stream or trailer: the gzip CRC.
    for (n, at) in [good.len() / 3, good.len() - 6].into_iter().enumerate() {
        let mut bad = good.clone();
        bad[at] ^= 0x10;
        let e = open(&bad, 10 + n).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    }
    // A tar without the database.
    let mut t = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_path("other").unwrap();
    h.set_size(3);
    h.set_cksum();
    t.append(&h, &b"abc"[..]).unwrap();
    let e = open(&t.into_inner().unwrap(), 20).unwrap_err();
    assert!(e.to_string().contains("no flistdb.sqlite3"), "{e}");
}

#[test]
fn a_missing_or_damaged_chunk_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    tree(&src);
    let store = MemStore::new();
    let out = tmp.path().join("t.flist");
    write(&src, &out, &store, &WriteOptions::default());
    let t = ZeroFsFlist::open_with(&out, &OpenOptions { cache_dir: tmp.path().join("c") }).unwrap();
    let chunks = t.data(t.resolve(b"etc/hostname").unwrap().ino).unwrap();
    let DataChunk::ZeroFs(b) = &chunks[0] else { panic!("a 0-fs chunk") };
    let rt = rt();
    let blob = rt.block_on(store.get(&b.store_id())).unwrap().unwrap();
    let mut bad = blob.to_vec();
    bad[0] ^= 1;
    assert!(chunks[0].decode(&bad).unwrap_err().to_string().contains("does not hash"));
    let empty = MemStore::new();
    let store: crate::content::Store = Arc::new(empty);
    let e = rt.block_on(crate::content::fetch(&store, &chunks[0])).unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
}
