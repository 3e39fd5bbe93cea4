#![no_main]

// `flist pack` of a tar stream (`docker export`, a layer): any bytes as the
// stream, packed into an in-memory store; what packs is read back through
// every path of the flist reader. Errors are the expected outcome for bad
// input; panics, hangs and memory past the limit are findings.

mod common;

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use zosfs_flist::pack::{Counters, PackOptions, Source, pack};
use zosfs_flist::{Chunking, Flist, OpenOptions};
use zosfs_store::backend::mem::MemStore;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let tmp = common::tmp();
    let out = tmp.path().join("out.flist");
    let opts = PackOptions { chunking: Chunking::Fixed { size: 64 << 10 }, ..PackOptions::default() };
    let packed = pack(
        Source::Tar(Box::new(std::io::Cursor::new(data.to_vec()))),
        Arc::new(MemStore::new()),
        runtime().handle().clone(),
        &out,
        &opts,
        Arc::new(Counters::default()),
    );
    if packed.is_ok() {
        let oo = OpenOptions { cache_dir: tmp.path().join("cache") };
        let fl = Flist::open_with(&out, &oo).expect("a packed flist opens");
        common::exercise(&fl);
    }
});
