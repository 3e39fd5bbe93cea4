#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use zosfs_flist::{Flist, OpenOptions};

fuzz_target!(|data: &[u8]| {
    let tmp = common::tmp();
    let f = tmp.path().join("in.flist");
    std::fs::write(&f, data).expect("write input");
    let opts = OpenOptions { cache_dir: tmp.path().join("cache") };
    if let Ok(fl) = Flist::open_with(&f, &opts) {
        common::exercise(&fl);
        let _ = fl.digest();
    }
});
