//! LazyFile fetching: one fetch per chunk however many readers, parallel
//! fetches of different chunks, read-ahead, errors, variable boundaries.

mod lazy_common;

use std::sync::Arc;
use std::time::Duration;

use lazy_common::{Fixture, wait_until};
use zosfs_store::ErrorKind;
use zosfs_store::engine::{EngineChoice, open_engine};
use zosfs_store::lazy::testing::sample_bytes;
use zosfs_store::lazy::{ChunkState, LazyOptions, Origin};

const DELAY: Duration = Duration::from_millis(20);
const WAIT: Duration = Duration::from_secs(20);

fn no_readahead() -> LazyOptions {
    LazyOptions { readahead: 0, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_readers_of_one_chunk_cause_one_fetch() {
    let fx = Fixture::fixed(4, 64 << 10, DELAY).await;
    let lf = fx.open(no_readahead()).await;
    // Hold the fetch until every reader is waiting on it.
    fx.store.pause();
    let readers: Vec<_> = (0..32u64)
        .map(|k| {
            let lf = lf.clone();
            tokio::spawn(async move { (k, lf.read(k * 1000, 3000).await.unwrap()) })
        })
        .collect();
    wait_until("the fetch to start", WAIT, || fx.store.in_flight() == 1).await;
    // The 31 others find the fill in flight and wait on it.
    wait_until("31 readers to join", WAIT, || lf.stats().joined == 31).await;
    assert_eq!(fx.store.in_flight(), 1);
    fx.store.resume();
    for r in readers {
        let (k, got) = r.await.unwrap();
        let at = (k * 1000) as usize;
        assert_eq!(got, &fx.content[at..at + 3000], "reader {k}");
    }
    assert_eq!(fx.store.gets(), 1, "32 readers of one chunk must cause exactly one fetch");
    let st = lf.stats();
    assert_eq!(st.fetched, 1);
    assert_eq!(st.misses, 1);
    assert_eq!(st.joined, 31, "{st:?}");
    // The chunk becomes present once durable; later reads are local.
    wait_until("chunk 0 present", WAIT, || lf.state(0) == ChunkState::Present).await;
    assert_eq!(lf.read(0, 10).await.unwrap(), &fx.content[..10]);
    assert_eq!(fx.store.gets(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_of_different_chunks_fetch_in_parallel() {
    let fx = Fixture::fixed(32, 64 << 10, DELAY).await;
    let lf = fx.open(LazyOptions { fetch_depth: 8, ..no_readahead() }).await;
    fx.store.pause();
    let readers: Vec<_> = (0..32u64)
        .map(|i| {
            let lf = lf.clone();
            tokio::spawn(async move { (i, lf.read(i * (64 << 10) + 5, 100).await.unwrap()) })
        })
        .collect();
    // With the store paused, 8 fetches (the depth) must be in flight at once.
    wait_until("8 fetches in flight", WAIT, || fx.store.in_flight() == 8).await;
    fx.store.resume();
    for r in readers {
        let (i, got) = r.await.unwrap();
        let at = (i * (64 << 10) + 5) as usize;
        assert_eq!(got, &fx.content[at..at + 100]);
    }
    assert_eq!(fx.store.gets(), 32);
    assert_eq!(fx.store.max_in_flight(), 8, "the fetch depth bounds concurrency");
    assert_eq!(lf.stats().max_fetches_in_flight, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_spanning_chunks_fetches_them_concurrently() {
    let fx = Fixture::fixed(16, 64 << 10, DELAY).await;
    let lf = fx.open(no_readahead()).await;
    fx.store.pause();
    let reader = {
        let lf = lf.clone();
        tokio::spawn(async move { lf.read(100, 8 * (64 << 10)).await.unwrap() })
    };
    // 100 .. 100 + 8 chunks touches 9 chunks.
    wait_until("9 fetches in flight", WAIT, || fx.store.in_flight() == 9).await;
    fx.store.resume();
    let got = reader.await.unwrap();
    assert_eq!(got, &fx.content[100..100 + 8 * (64 << 10)]);
    assert_eq!(fx.store.max_in_flight(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unpaused_concurrent_reads_overlap_their_fetches() {
    // The same with the real 20 ms delay and no gate: the fetch concurrency
    // counter shows overlap (not the wall clock).
    let fx = Fixture::fixed(24, 64 << 10, DELAY).await;
    let lf = fx.open(no_readahead()).await;
    let readers: Vec<_> = (0..24u64)
        .map(|i| {
            let lf = lf.clone();
            tokio::spawn(async move { lf.read(i * (64 << 10), 64 << 10).await.unwrap() })
        })
        .collect();
    for r in readers {
        r.await.unwrap();
    }
    assert_eq!(fx.store.gets(), 24);
    assert!(fx.store.max_in_flight() > 1, "fetches never overlapped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sequential_reads_trigger_read_ahead() {
    let fx = Fixture::fixed(32, 64 << 10, DELAY).await;
    let lf = fx.open(LazyOptions { readahead: 4, ..Default::default() }).await;
    let mut off = 0u64;
    while off < fx.content.len() as u64 {
        let got = lf.read(off, 16 << 10).await.unwrap();
        assert_eq!(got, &fx.content[off as usize..off as usize + (16 << 10)]);
        off += 16 << 10;
    }
    let st = lf.stats();
    assert!(st.readahead > 0, "no read-ahead: {st:?}");
    assert!(st.joined > 0, "readers never joined a read-ahead fill: {st:?}");
    assert_eq!(fx.store.gets(), 32, "each chunk fetched exactly once");
    // A random reader does not trigger read-ahead.
    let fx2 = Fixture::fixed(32, 64 << 10, DELAY).await;
    let lf2 = fx2.open(LazyOptions { readahead: 4, ..Default::default() }).await;
    for i in [20u64, 5, 27, 12] {
        lf2.read(i * (64 << 10) + 7, 10).await.unwrap();
    }
    assert_eq!(lf2.stats().readahead, 0);
    assert_eq!(fx2.store.gets(), 4);
    // Reading a file's head (inside its first chunk) fetches that chunk only.
    let fx3 = Fixture::fixed(32, 64 << 10, DELAY).await;
    let lf3 = fx3.open(LazyOptions { readahead: 4, ..Default::default() }).await;
    for off in [0u64, 4096, 8192, 32 << 10] {
        lf3.read(off, 4096).await.unwrap();
    }
    assert_eq!(lf3.stats().readahead, 0);
    assert_eq!(fx3.store.gets(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_fetch_fails_that_read_only_and_is_retried() {
    let fx = Fixture::fixed(4, 64 << 10, DELAY).await;
    let lf = fx.open(no_readahead()).await;
    fx.store.fail_next(1);
    let err = lf.read(0, 10).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.chain());
    assert!(err.chain().contains("chunk 0"), "{}", err.chain());
    assert_eq!(lf.state(0), ChunkState::Absent);
    // Other chunks are unaffected, and the failed one is fetched again.
    assert_eq!(lf.read(64 << 10, 10).await.unwrap(), &fx.content[64 << 10..(64 << 10) + 10]);
    assert_eq!(lf.read(0, 10).await.unwrap(), &fx.content[..10]);
    assert_eq!(fx.store.gets(), 3);
    assert_eq!(lf.stats().fetch_errors, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_spanning_a_failing_chunk_fails_and_keeps_the_good_ones() {
    let fx = Fixture::fixed(4, 64 << 10, DELAY).await;
    let lf = fx.open(no_readahead()).await;
    fx.store.fail_next(1);
    assert!(lf.read(0, 2 * (64 << 10)).await.is_err());
    // One of the two chunks failed; the other was fetched and is kept.
    wait_until("one chunk present", WAIT, || lf.stats().present == 1).await;
    assert_eq!(lf.read(0, 2 * (64 << 10)).await.unwrap(), &fx.content[..2 * (64 << 10)]);
    assert_eq!(fx.store.gets(), 3);
}

#[tokio::test]
async fn a_corrupt_chunk_is_an_error_not_data() {
    let mem: zosfs_store::DynStore = Arc::new(zosfs_store::backend::mem::MemStore::new());
    let fx = Fixture::with_store(mem.clone(), sample_bytes(2 << 16, 3), &[1 << 16; 2], DELAY).await;
    let Origin::Chunk(r) = fx.origins[1] else { panic!("stored chunk") };
    // Replace chunk 1's blob with another chunk's blob under the same id.
    let other = zosfs_store::chunk::encode(b"something else").unwrap();
    mem.delete(&r.id).await.unwrap();
    mem.put(&r.id, other.blob).await.unwrap();
    let lf = fx.open(no_readahead()).await;
    assert_eq!(lf.read(0, 10).await.unwrap(), &fx.content[..10]);
    let err = lf.read(1 << 16, 10).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{}", err.chain());
    assert_eq!(lf.state(1), ChunkState::Absent);
}

/// Chunk lengths like content-defined chunking gives (1 B .. 256 KiB), with
/// boundaries forced at `cuts`.
fn cdc_like_lens(size: usize, cuts: &[usize], seed: u64) -> Vec<usize> {
    let mut points: Vec<usize> = cuts.to_vec();
    let (mut at, mut x) = (0usize, seed);
    loop {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        at += ((x >> 33) % (256 << 10)) as usize + 1;
        if at >= size {
            break;
        }
        points.push(at);
    }
    points.push(size);
    points.sort_unstable();
    points.dedup();
    let mut prev = 0;
    points
        .into_iter()
        .map(|p| {
            let len = p - prev;
            prev = p;
            len
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variable_chunk_boundaries() {
    // A zero region cut out as chunks of its own is recorded as holes.
    let mut content = sample_bytes(3 << 20, 11);
    content[1_000_000..1_300_000].fill(0);
    let lens = cdc_like_lens(content.len(), &[1_000_000, 1_300_000], 12345);
    assert!(lens.iter().collect::<std::collections::HashSet<_>>().len() > 5);
    let fx = Fixture::new(content, &lens, Duration::from_millis(1)).await;
    let holes: Vec<u64> = (0..fx.origins.len() as u64)
        .filter(|&i| matches!(fx.origins[i as usize], Origin::Zeros(_)))
        .collect();
    assert!(!holes.is_empty());
    let lf = fx.open(LazyOptions::default()).await;
    let size = fx.content.len() as u64;
    assert_eq!(lf.size(), size);
    assert_eq!(lf.layout().count(), lens.len() as u64);
    let mut x = 99u64;
    for _ in 0..200 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let off = (x >> 20) % size;
        let len = ((x >> 7) % (600 << 10)) as usize;
        let got = lf.read(off, len).await.unwrap();
        let end = (off as usize + len).min(size as usize);
        assert!(got == fx.content[off as usize..end], "read {len} at {off}");
    }
    // Reads past the end are short, like a file's.
    assert_eq!(lf.read(size - 3, 100).await.unwrap(), &fx.content[size as usize - 3..]);
    assert!(lf.read(size, 100).await.unwrap().is_empty());
    for &h in &holes {
        assert_eq!(lf.state(h), ChunkState::Absent, "holes are never fetched");
    }
    let ext = lf.extents(1_000_000, 300_000);
    assert_eq!(ext.len(), 1);
    assert!(ext[0].zero && ext[0].local && ext[0].length == 300_000, "{ext:?}");
    // Fill the rest: every stored chunk fetched exactly once overall.
    assert_eq!(lf.fill_all(None).wait().await.unwrap().failed, 0);
    assert!(lf.is_fully_present());
    let stored = fx.origins.iter().filter(|o| matches!(o, Origin::Chunk(_))).count() as u64;
    assert_eq!(fx.store.gets(), stored);
    assert!(std::fs::read(fx.path()).unwrap() == fx.content);
}

#[tokio::test]
async fn both_engines_serve_the_same_bytes() {
    for choice in [EngineChoice::Sync, EngineChoice::Uring] {
        let fx = Fixture::fixed(8, 64 << 10, Duration::ZERO).await;
        let engine = Some(open_engine(choice).unwrap());
        let lf = fx.open(LazyOptions { engine, ..Default::default() }).await;
        assert_eq!(lf.read(1000, 300_000).await.unwrap(), &fx.content[1000..301_000]);
        let fill = lf.fill_all(None).wait().await.unwrap();
        assert_eq!(fill.failed, 0);
        assert!(lf.is_fully_present());
        // The backing file now holds the content byte for byte.
        let on_disk = std::fs::read(fx.path()).unwrap();
        assert!(on_disk == fx.content, "{choice:?}: backing file differs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fill_waiting_for_its_sync_serves_joiners_from_the_file() {
    // The fill of chunk 0 stops after writing its data (before its state is
    // durable); a reader arriving then joins it and reads the data file.
    use std::sync::Mutex;
    use std::sync::mpsc;
    let (reached_tx, reached_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (reached_tx, go_rx) = (Mutex::new(reached_tx), Mutex::new(go_rx));
    let hook = move |step| {
        if step == zosfs_store::lazy::Step::DataWritten(0) {
            reached_tx.lock().unwrap().send(()).unwrap();
            // Blocks one runtime worker of this test, on purpose.
            go_rx.lock().unwrap().recv_timeout(WAIT).unwrap();
        }
    };
    let fx = Fixture::fixed(2, 64 << 10, DELAY).await;
    let opts = LazyOptions { failpoint: Some(Arc::new(hook)), ..no_readahead() };
    let lf = fx.open(opts).await;
    assert_eq!(lf.read(0, 100).await.unwrap(), &fx.content[..100]);
    tokio::task::spawn_blocking(move || reached_rx.recv_timeout(WAIT).unwrap()).await.unwrap();
    assert_eq!(lf.state(0), ChunkState::Absent, "not present before its state is durable");
    assert_eq!(lf.read(1000, 5000).await.unwrap(), &fx.content[1000..6000]);
    assert_eq!(lf.stats().joined, 1);
    assert_eq!(fx.store.gets(), 1);
    go_tx.send(()).unwrap();
    wait_until("chunk 0 present", WAIT, || lf.state(0) == ChunkState::Present).await;
}
