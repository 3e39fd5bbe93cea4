#![no_main]

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use zosfs_flist::native::archive::extract_archive;
use zosfs_flist::native::keys::ALL_CFS;
use zosfs_flist::{Chunking, Codec, Flist, Header, Inode, Kind, ROOT_INO, Writer};

/// One valid flist (a root directory), written once per process and kept
/// in memory (a static's temp dir would never be removed: libFuzzer exits
/// without running destructors).
fn base() -> &'static [u8] {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    BASE.get_or_init(|| {
        let tmp = common::tmp();
        let header = Header {
            format_version: zosfs_flist::FORMAT_VERSION,
            chunking: Chunking::Fixed { size: 1 << 20 },
            codec: Codec::Zck1,
            compression_level: 3,
            tool: "fuzz".into(),
            routes: vec![],
            tags: BTreeMap::new(),
        };
        let mut w = Writer::create_in(tmp.path(), header).expect("writer");
        w.put_inode(&Inode {
            ino: ROOT_INO,
            kind: Kind::Dir,
            perm: 0o755,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            size: 0,
            rdev: 0,
            nlink: 2,
            parent: ROOT_INO,
            target: vec![],
            xattrs: vec![],
        })
        .expect("root");
        let f = tmp.path().join("base.flist");
        w.finish(&f).expect("finish");
        std::fs::read(&f).expect("read base")
    })
}

fuzz_target!(|data: &[u8]| {
    let tmp = common::tmp();
    let dir = tmp.path().join("db");
    std::fs::create_dir(&dir).expect("mkdir");
    let base_file = tmp.path().join("base.flist");
    std::fs::write(&base_file, base()).expect("write base");
    extract_archive(&base_file, &dir).expect("extract base");
    {
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &dir, ALL_CFS).expect("open");
        // Records: [cf selector, key len, value len, key.., value..]*
        let mut rest = data;
        while rest.len() >= 3 {
            let (cf, kl, vl) =
                (rest[0] as usize % ALL_CFS.len(), rest[1] as usize, rest[2] as usize);
            rest = &rest[3..];
            let k = &rest[..kl.min(rest.len())];
            rest = &rest[k.len()..];
            let v = &rest[..vl.min(rest.len())];
            rest = &rest[v.len()..];
            let h = db.cf_handle(ALL_CFS[cf]).expect("cf");
            let _ = db.put_cf(h, k, v);
        }
    }
    if let Ok(fl) = Flist::open_dir(&dir) {
        common::exercise(&fl);
        for ino in 0..8 {
            let _ = fl.chunks(ino);
        }
    }
});
