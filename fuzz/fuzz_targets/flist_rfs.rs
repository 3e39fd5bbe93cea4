#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use zosfs_flist::legacy::rfs::RfsFlist;

fuzz_target!(|data: &[u8]| {
    let tmp = common::tmp();
    let f = tmp.path().join("in.fl");
    std::fs::write(&f, data).expect("write input");
    if let Ok(fl) = RfsFlist::open(&f) {
        common::exercise(&fl);
    }
});
