//! The seed corpora of the flist fuzz targets (`fuzz/seeds/<target>/`):
//! small valid inputs of every format, made by this crate's writers, so
//! that fuzzing starts inside the formats instead of at their magic bytes.
//!
//! The test checks that the committed seeds are still what the readers
//! accept (a format change that invalidates them fails here). Rewrite them
//! after such a change with
//! `ZOSFS_WRITE_FUZZ_SEEDS=1 cargo test --release -p zosfs-flist --lib fuzz_seeds`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use zosfs_store::backend::mem::MemStore;

use crate::legacy::zerofs::{self, WriteOptions, ZeroFsFlist};
use crate::native::OpenOptions;
use crate::pack::{Counters, PackOptions, Source, pack};
use crate::tree::{Step, Tree, walk};

fn seeds_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds").join(target)
}

/// A small tree with a file of two 64 KiB chunks, a symlink and a subdir.
fn tree(root: &Path) {
    std::fs::create_dir_all(root.join("etc/sub")).unwrap();
    std::fs::write(root.join("etc/hostname"), b"zos\n").unwrap();
    let data: Vec<u8> =
        (0..70_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    std::fs::write(root.join("etc/sub/data"), data).unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("etc/hostname", root.join("link")).unwrap();
}

fn count(t: &dyn Tree) -> usize {
    let mut n = 0;
    walk(t, t.root(), b"", &mut |_, i| {
        n += 1;
        if i.kind == crate::Kind::File {
            t.data(i.ino)?;
        }
        Ok(Step::Continue)
    })
    .unwrap();
    n
}

/// `[key len u8][key][value len u16 le][value]…` (the `flist_zerofs` row
/// encoding), from the `entries` table of `db`.
fn zerofs_rows(db: &Path) -> Vec<u8> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c.prepare("SELECT key, value FROM entries ORDER BY key").unwrap();
    let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))).unwrap();
    let mut out = vec![0u8];
    for row in rows {
        let (k, v) = row.unwrap();
        out.push(u8::try_from(k.len()).unwrap());
        out.extend(k.as_bytes());
        out.extend(u16::try_from(v.len()).unwrap().to_le_bytes());
        out.extend(v);
    }
    out
}

/// `[cf u8][key len u8][value len u8][key][value]…` (the
/// `flist_native_records` encoding) of the records of a native flist
/// database that fit.
fn native_records(db_dir: &Path) -> Vec<u8> {
    use crate::native::keys::ALL_CFS;
    let db =
        rocksdb::DB::open_cf_for_read_only(&rocksdb::Options::default(), db_dir, ALL_CFS, false)
            .unwrap();
    let mut out = Vec::new();
    for (i, cf) in ALL_CFS.iter().enumerate() {
        let h = db.cf_handle(cf).unwrap();
        for kv in db.iterator_cf(h, rocksdb::IteratorMode::Start) {
            let (k, v) = kv.unwrap();
            if let (Ok(kl), Ok(vl)) = (u8::try_from(k.len()), u8::try_from(v.len())) {
                out.extend([i as u8, kl, vl]);
                out.extend(&*k);
                out.extend(&*v);
            }
        }
    }
    out
}

fn write_seeds(tmp: &Path) {
    let src = tmp.join("src");
    tree(&src);
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let store = Arc::new(MemStore::new());
    let put = |target: &str, name: &str, bytes: &[u8]| {
        std::fs::create_dir_all(seeds_dir(target)).unwrap();
        std::fs::write(seeds_dir(target).join(name), bytes).unwrap();
    };
    // Native.
    let native = tmp.join("native.flist");
    let opts = PackOptions {
        chunking: crate::Chunking::Fixed { size: 64 << 10 },
        ..PackOptions::default()
    };
    pack(
        Source::Dir(src.clone()),
        store.clone(),
        rt.handle().clone(),
        &native,
        &opts,
        Arc::new(Counters::default()),
    )
    .unwrap();
    put("flist_native_file", "small.flist", &std::fs::read(&native).unwrap());
    let db = tmp.join("native-db");
    std::fs::create_dir(&db).unwrap();
    crate::native::archive::extract_archive(&native, &db).unwrap();
    put("flist_native_records", "small", &native_records(&db));
    // rfs.
    let fl = tmp.join("small.fl");
    crate::legacy::rfs::write_fl(&src, &fl, &*store, rt.handle(), &[], &[]).unwrap();
    put("flist_rfs", "small.fl", &std::fs::read(&fl).unwrap());
    // 0-fs: the package, and the rows of its database.
    let zfs = tmp.join("small.0fs.flist");
    zerofs::write_flist(&src, &zfs, &*store, rt.handle(), &WriteOptions::default()).unwrap();
    let mut pkg = vec![1u8];
    pkg.extend(std::fs::read(&zfs).unwrap());
    put("flist_zerofs", "package", &pkg);
    let db = tmp.join(zerofs::archive::DB_NAME);
    zerofs::archive::extract_db(&zfs, &db).unwrap();
    put("flist_zerofs", "rows", &zerofs_rows(&db));
    // A tar stream of the same tree.
    put("tar_pack", "small.tar", &tar_of(&src));
}

/// The tree as a tar stream (what `tar -C root -c .` writes).
fn tar_of(root: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", root).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn fuzz_seeds_are_valid_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    if std::env::var_os("ZOSFS_WRITE_FUZZ_SEEDS").is_some() {
        write_seeds(tmp.path());
    }
    let seed = |target: &str, name: &str| {
        let p = seeds_dir(target).join(name);
        let bytes = std::fs::read(&p)
            .unwrap_or_else(|e| panic!("{}: {e} (see the module doc)", p.display()));
        (p, bytes)
    };
    let oo = OpenOptions { cache_dir: tmp.path().join("cache") };
    let (p, _) = seed("flist_native_file", "small.flist");
    assert_eq!(count(&crate::Flist::open_with(&p, &oo).unwrap()), 7);
    let (p, _) = seed("flist_rfs", "small.fl");
    assert_eq!(count(&crate::legacy::rfs::RfsFlist::open(&p).unwrap()), 7);
    let (_, pkg) = seed("flist_zerofs", "package");
    let f = tmp.path().join("pkg.flist");
    std::fs::write(&f, &pkg[1..]).unwrap();
    assert_eq!(pkg[0] & 1, 1, "package mode");
    assert_eq!(count(&ZeroFsFlist::open_with(&f, &oo).unwrap()), 7);
    let (_, rows) = seed("flist_zerofs", "rows");
    assert_eq!(rows[0] & 1, 0, "rows mode");
    assert!(rows.len() > 100, "the rows seed holds the records");
    let (_, recs) = seed("flist_native_records", "small");
    assert!(recs.len() > 30, "the native records seed holds records");
    let (_, tar) = seed("tar_pack", "small.tar");
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let out = tmp.path().join("tar.flist");
    let opts = PackOptions {
        chunking: crate::Chunking::Fixed { size: 64 << 10 },
        ..PackOptions::default()
    };
    let source = Source::Tar(Box::new(std::io::Cursor::new(tar)));
    let store = Arc::new(MemStore::new());
    pack(source, store, rt.handle().clone(), &out, &opts, Arc::new(Counters::default())).unwrap();
    assert_eq!(count(&crate::Flist::open_with(&out, &oo).unwrap()), 7);
}
