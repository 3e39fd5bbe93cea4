//! LazyFile writes (nbdserver): partial writes into absent chunks, trim and
//! write-zeroes, blank devices, flush and reopen, rebase.

mod lazy_common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lazy_common::{Fixture, rw, wait_until};
use zosfs_store::ErrorKind;
use zosfs_store::lazy::{
    BlankSource, ChunkState, Layout, LazyFile, LazyOptions, OnMismatch, Origin, StoreSource,
};

const DELAY: Duration = Duration::from_millis(20);
const WAIT: Duration = Duration::from_secs(20);
const CHUNK: usize = 64 << 10;

/// Writable, no read-ahead: fetch counts are exact.
fn rw_exact() -> LazyOptions {
    LazyOptions { readahead: 0, ..rw() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_write_into_an_absent_chunk_keeps_the_rest() {
    let fx = Fixture::fixed(4, CHUNK, DELAY).await;
    let lf = fx.open(rw_exact()).await;
    let patch = Bytes::from(vec![0xAB; 1000]);
    lf.write(CHUNK as u64 + 5000, patch.clone()).await.unwrap();
    assert_eq!(fx.store.gets(), 1, "the chunk is fetched once to fill around the write");
    assert_eq!(lf.state(1), ChunkState::Dirty);
    let mut want = fx.chunk(1).to_vec();
    want[5000..6000].fill(0xAB);
    assert_eq!(lf.read(CHUNK as u64, CHUNK).await.unwrap(), want);
    // A write spanning two chunks: one dirty (no fetch), one absent (fetch).
    lf.write(2 * CHUNK as u64 - 10, Bytes::from(vec![1; 20])).await.unwrap();
    assert_eq!(fx.store.gets(), 2);
    let got = lf.read(2 * CHUNK as u64 - 20, 40).await.unwrap();
    let mut want = fx.content[2 * CHUNK - 20..2 * CHUNK + 20].to_vec();
    want[10..30].fill(1);
    assert_eq!(got, want);
    // A whole-chunk write needs no fetch.
    lf.write(3 * CHUNK as u64, Bytes::from(vec![7; CHUNK])).await.unwrap();
    assert_eq!(fx.store.gets(), 2);
    assert_eq!(lf.dirty_chunks(), vec![1, 2, 3]);
    assert_eq!(lf.stats().dirty, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_a_present_chunk_goes_to_the_file() {
    let fx = Fixture::fixed(2, CHUNK, DELAY).await;
    let lf = fx.open(rw_exact()).await;
    lf.read(0, 10).await.unwrap();
    wait_until("chunk 0 present", WAIT, || lf.state(0) == ChunkState::Present).await;
    lf.write(100, Bytes::from_static(b"hello")).await.unwrap();
    assert_eq!(lf.state(0), ChunkState::Dirty);
    assert_eq!(fx.store.gets(), 1);
    let got = lf.read(95, 15).await.unwrap();
    let mut want = fx.content[95..110].to_vec();
    want[5..10].copy_from_slice(b"hello");
    assert_eq!(got, want);
    // The dirty state was persisted before the write (write-ahead), even unflushed.
    lf.close().await.unwrap();
    let lf = fx.open(rw_exact()).await;
    assert_eq!(lf.state(0), ChunkState::Dirty);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trim_reads_zeros_and_never_refetches() {
    let fx = Fixture::fixed(6, CHUNK, DELAY).await;
    let lf = fx.open(rw_exact()).await;
    assert_eq!(lf.fill_all(None).wait().await.unwrap().failed, 0);
    assert_eq!(fx.store.gets(), 6);
    // Whole chunks 1..=3 are trimmed; the partial chunks at the edges are not.
    lf.trim(CHUNK as u64 - 1, 3 * CHUNK as u64 + 2).await.unwrap();
    for i in 1..=3 {
        assert_eq!(lf.state(i), ChunkState::Zero);
    }
    assert_eq!(lf.state(0), ChunkState::Present);
    assert_eq!(lf.state(4), ChunkState::Present);
    assert!(lf.read(CHUNK as u64, 3 * CHUNK).await.unwrap().iter().all(|&b| b == 0));
    assert_eq!(lf.read(0, CHUNK).await.unwrap(), fx.chunk(0));
    // Space is freed: the trimmed range is a hole in the data file.
    assert!(allocated(&fx.path()) <= 3 * CHUNK as u64 + 4096);
    // A trimmed chunk of an image must not bring the original back, even
    // after a reopen and for a partial write into it.
    lf.close().await.unwrap();
    let lf = fx.open(rw_exact()).await;
    assert_eq!(lf.state(2), ChunkState::Zero);
    lf.write(2 * CHUNK as u64 + 10, Bytes::from_static(b"x")).await.unwrap();
    let got = lf.read(2 * CHUNK as u64, CHUNK).await.unwrap();
    assert_eq!(got[10], b'x');
    assert!(got.iter().enumerate().all(|(i, &b)| i == 10 || b == 0));
    assert_eq!(fx.store.gets(), 6, "trimmed chunks are never fetched");
    assert_eq!(lf.dirty_chunks(), vec![1, 2, 3]);
}

/// Bytes the data file occupies on disk.
fn allocated(p: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().blocks() * 512
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trim_of_absent_chunks_does_not_fetch() {
    let fx = Fixture::fixed(4, CHUNK, DELAY).await;
    let lf = fx.open(rw_exact()).await;
    lf.trim(0, 4 * CHUNK as u64).await.unwrap();
    assert!(lf.read(0, 4 * CHUNK).await.unwrap().iter().all(|&b| b == 0));
    assert_eq!(fx.store.gets(), 0);
    assert!(lf.is_fully_present());
    let ext = lf.extents(0, 4 * CHUNK as u64);
    assert_eq!(ext.len(), 1);
    assert!(ext[0].zero && ext[0].local);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_zeroes_zeroes_edges_and_whole_chunks() {
    let fx = Fixture::fixed(4, CHUNK, DELAY).await;
    let lf = fx.open(rw_exact()).await;
    let (off, len) = (CHUNK as u64 / 2, 2 * CHUNK as u64);
    lf.write_zeroes(off, len).await.unwrap();
    let got = lf.read(0, 4 * CHUNK).await.unwrap();
    let mut want = fx.content.clone();
    want[off as usize..(off + len) as usize].fill(0);
    assert!(got == want);
    assert_eq!(lf.state(1), ChunkState::Zero);
    assert_eq!(lf.state(0), ChunkState::Dirty);
    assert_eq!(lf.state(2), ChunkState::Dirty);
    // Chunks 0 and 2 were fetched to keep their other halves; 3 on the read.
    assert_eq!(fx.store.gets(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blank_device_reads_zeros_and_stays_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev");
    let size = 64u64 << 20;
    let layout = Layout::fixed(CHUNK as u32, size).unwrap();
    let lf = LazyFile::open(&path, layout.clone(), Arc::new(BlankSource), rw()).await.unwrap();
    assert!(lf.is_fully_present());
    assert!(lf.read(12345, 100_000).await.unwrap().iter().all(|&b| b == 0));
    // Small scattered writes, like mkfs: the file stays sparse.
    for k in 0..64u64 {
        lf.write(k * (1 << 20) + 512, Bytes::from(vec![k as u8 + 1; 4096])).await.unwrap();
    }
    lf.flush().await.unwrap();
    assert!(allocated(&path) < 64 * 16384, "{} bytes allocated", allocated(&path));
    let got = lf.read(5 * (1 << 20), 8192).await.unwrap();
    assert!(got[..512].iter().all(|&b| b == 0));
    assert!(got[512..4608].iter().all(|&b| b == 6));
    assert!(got[4608..].iter().all(|&b| b == 0));
    let ext = lf.extents(0, size);
    assert_eq!(ext.len(), 128, "{ext:?}");
    assert!(ext[0].local && !ext[0].zero && ext[0].length == CHUNK as u64, "{ext:?}");
    assert!(ext[1].local && ext[1].zero && ext[1].length == (1 << 20) - CHUNK as u64);
    assert_eq!(lf.dirty_chunks().len(), 64);
    // Flushed writes survive a reopen.
    lf.close().await.unwrap();
    let lf = LazyFile::open(&path, layout.clone(), Arc::new(BlankSource), rw()).await.unwrap();
    assert_eq!(lf.read(5 * (1 << 20) + 512, 4096).await.unwrap(), vec![6; 4096]);
    assert_eq!(lf.dirty_chunks().len(), 64);
    // Out of range and read-only are refused with clear errors.
    let err = lf.write(size - 1, Bytes::from_static(b"ab")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("past the end"), "{err}");
}

#[tokio::test]
async fn a_read_only_file_refuses_writes() {
    let fx = Fixture::fixed(2, CHUNK, Duration::ZERO).await;
    let lf = fx.open(LazyOptions::default()).await;
    let err = lf.write(0, Bytes::from_static(b"x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    assert_eq!(lf.trim(0, CHUNK as u64).await.unwrap_err().kind(), ErrorKind::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_of_the_same_cache_is_refused() {
    let fx = Fixture::fixed(2, CHUNK, Duration::ZERO).await;
    let _lf = fx.open(LazyOptions::default()).await;
    let err = LazyFile::open(&fx.path(), fx.layout(), fx.source(), LazyOptions::default())
        .await
        .err()
        .expect("second open must fail");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.to_string().contains("in use"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn present_chunks_survive_a_reopen_and_other_content_is_refused_or_reset() {
    let fx = Fixture::fixed(4, CHUNK, Duration::ZERO).await;
    let lf = fx.open(rw_exact()).await;
    assert_eq!(lf.fill_all(None).wait().await.unwrap().failed, 0);
    lf.close().await.unwrap();
    let lf = fx.open(rw_exact()).await;
    assert!(lf.is_fully_present());
    assert_eq!(lf.read(0, 4 * CHUNK).await.unwrap(), fx.content);
    assert_eq!(fx.store.gets(), 4, "nothing fetched after a reopen");
    // Make it hold a local write, then open it for other content.
    lf.write_sync(10, Bytes::from_static(b"local")).await.unwrap();
    lf.close().await.unwrap();
    let mut other = fx.origins.clone();
    other.swap(0, 1);
    let other_src = Arc::new(StoreSource::new(fx.store.clone(), other));
    let path = fx.path();
    let open_other = |on_mismatch| {
        let opts = LazyOptions { on_mismatch, writable: true, ..Default::default() };
        LazyFile::open(&path, fx.layout(), other_src.clone(), opts)
    };
    let err = open_other(OnMismatch::ResetIfClean).await.err().expect("dirty cache refused");
    assert!(err.to_string().contains("other content"), "{}", err.chain());
    assert!(err.to_string().contains("local writes"), "{}", err.chain());
    assert!(open_other(OnMismatch::Refuse).await.is_err());
    let lf = open_other(OnMismatch::Reset).await.unwrap();
    assert_eq!(lf.stats().absent, 4, "a reset cache starts empty");
    assert_eq!(lf.read(0, 10).await.unwrap(), &fx.chunk(1)[..10]);
    lf.close().await.unwrap();
    // A clean cache for other content is simply reset (fsmount's case).
    let lf = fx.open(LazyOptions::default()).await;
    assert_eq!(lf.stats().absent, 4);
    assert_eq!(lf.read(0, 10).await.unwrap(), &fx.content[..10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebase_makes_committed_chunks_present_under_the_new_source() {
    let fx = Fixture::fixed(4, CHUNK, Duration::ZERO).await;
    let lf = fx.open(rw_exact()).await;
    lf.write(CHUNK as u64, Bytes::from(vec![9; CHUNK])).await.unwrap();
    lf.trim(2 * CHUNK as u64, CHUNK as u64).await.unwrap();
    lf.flush().await.unwrap();
    assert_eq!(lf.dirty_chunks(), vec![1, 2]);
    // "Commit": store the dirty chunk, build the new chunk list.
    let mut new_content = fx.content.clone();
    new_content[CHUNK..2 * CHUNK].fill(9);
    new_content[2 * CHUNK..3 * CHUNK].fill(0);
    let mem: zosfs_store::DynStore = fx.store.clone();
    let new_origins = zosfs_store::lazy::testing::put_chunks(&mem, &new_content, &[CHUNK; 4], true)
        .await
        .unwrap();
    assert!(matches!(new_origins[2], Origin::Zeros(_)));
    let new_src = Arc::new(StoreSource::new(fx.store.clone(), new_origins.clone()));
    lf.rebase(new_src.clone()).await.unwrap();
    assert_eq!(lf.state(1), ChunkState::Present);
    assert!(lf.dirty_chunks().is_empty());
    lf.close().await.unwrap();
    // Reopening with the new source keeps everything local.
    let gets = fx.store.gets();
    let lf = LazyFile::open(&fx.path(), fx.layout(), new_src.clone(), rw()).await.unwrap();
    assert_eq!(lf.state(1), ChunkState::Present);
    assert!(lf.read(0, 4 * CHUNK).await.unwrap() == new_content);
    assert_eq!(fx.store.gets() - gets, 2, "only the never-read chunks 0 and 3 are fetched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blocking_facade_works_from_plain_threads() {
    let fx = Fixture::fixed(8, CHUNK, DELAY).await;
    let lf = fx.open(rw_exact()).await;
    let b = lf.blocking();
    let content = fx.content.clone();
    let t = std::thread::spawn(move || {
        // Cold reads from many threads (like FUSE workers), then a write.
        let readers: Vec<_> = (0..8)
            .map(|i| {
                let b = b.clone();
                std::thread::spawn(move || b.read(i * CHUNK as u64 + 3, 5000).unwrap())
            })
            .collect();
        for (i, r) in readers.into_iter().enumerate() {
            let at = i * CHUNK + 3;
            assert_eq!(r.join().unwrap(), &content[at..at + 5000]);
        }
        b.write_sync(7, b"blocking").unwrap();
        assert_eq!(&b.read(7, 8).unwrap()[..], b"blocking");
        b.trim(CHUNK as u64, CHUNK as u64).unwrap();
        b.fill_all(None).unwrap()
    });
    let report = tokio::task::spawn_blocking(move || t.join().unwrap()).await.unwrap();
    assert_eq!(report.failed, 0);
    assert!(lf.is_fully_present());
    assert_eq!(lf.state(1), ChunkState::Zero);
    assert_eq!(fx.store.gets(), 8, "each chunk fetched once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_fills_in_the_background_under_a_cap() {
    let fx = Fixture::fixed(16, CHUNK, Duration::from_millis(2)).await;
    let lf = fx.open(LazyOptions { prefetch_depth: 2, ..Default::default() }).await;
    // 16 chunks of 64 KiB at 8 MiB/s: paced, and never more than 2 fetches at once.
    let report = lf.fill_all(Some(8 << 20)).wait().await.unwrap();
    assert_eq!(report.started, 16);
    assert_eq!(report.bytes, 16 * CHUNK as u64);
    assert_eq!(report.failed, 0);
    assert!(fx.store.max_in_flight() <= 2);
    assert!(lf.is_fully_present());
    assert_eq!(lf.stats().prefetched, 16);
    assert!(std::fs::read(fx.path()).unwrap() == fx.content);
    // A prefetch of a range over a failing store reports it.
    let fx = Fixture::fixed(4, CHUNK, Duration::ZERO).await;
    let lf = fx.open(LazyOptions::default()).await;
    fx.store.fail_next(1);
    let report = lf.prefetch(0, 2 * CHUNK as u64, None).wait().await.unwrap();
    assert_eq!(report.failed, 1);
    assert!(report.first_error.unwrap().contains("injected failure"));
    assert!(!lf.is_fully_present());
    assert!(!lf.is_local(0, 2 * CHUNK as u64));
}
