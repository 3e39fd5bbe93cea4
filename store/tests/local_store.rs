//! The local chunk store on real files, with both I/O engines (the machine
//! has io_uring: failing to open it is a failure here).

mod blobs;
use blobs::blob;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use zosfs_store::engine::EngineChoice;
use zosfs_store::local::{FsckOptions, LocalStore};
use zosfs_store::{ChunkId, ChunkStore, ErrorKind, OpenOptions, SyncPolicy};

const ENGINES: [EngineChoice; 2] = [EngineChoice::Uring, EngineChoice::Sync];

fn opts(engine: EngineChoice) -> OpenOptions {
    OpenOptions { engine, ..Default::default() }
}

async fn put_all(store: &Arc<LocalStore>, blobs: &[(ChunkId, Bytes)]) {
    let futs = blobs.iter().map(|(id, b)| {
        let s = store.clone();
        let (id, b) = (*id, b.clone());
        tokio::spawn(async move { s.put(&id, b).await })
    });
    for r in futures::future::join_all(futs).await {
        r.unwrap().unwrap();
    }
}

/// Every chunk's blob, sorted by id.
async fn contents(store: &LocalStore) -> Vec<(ChunkId, Bytes)> {
    let mut ids = store.ids();
    ids.sort();
    let mut out = Vec::new();
    for id in ids {
        out.push((id, store.get(&id).await.unwrap().expect("listed id is readable")));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_get_delete_and_reopen_by_snapshot_and_by_replay_agree() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let o = OpenOptions { segment_size: Some(1 << 20), ..opts(engine) };
        let blobs: Vec<_> = (0..1500u64).map(|i| blob(i, (i as usize * 997) % 40_000)).collect();
        let expect = {
            let store = Arc::new(LocalStore::open(dir.path(), &o).unwrap());
            assert_eq!(
                store.local_stats().engine,
                if engine == EngineChoice::Uring { "io_uring" } else { "pread/pwrite" }
            );
            put_all(&store, &blobs).await;
            // Idempotent put, exact has/get, delete.
            store.put(&blobs[0].0, blobs[0].1.clone()).await.unwrap();
            for (id, b) in &blobs {
                assert!(store.has(id).await.unwrap());
                assert_eq!(&store.get(id).await.unwrap().unwrap(), b);
            }
            for (id, _) in blobs.iter().step_by(3) {
                assert!(store.delete(id).await.unwrap());
                assert!(!store.delete(id).await.unwrap());
            }
            // Re-put some deleted ones: they come back.
            for (id, b) in blobs.iter().step_by(9) {
                store.put(id, b.clone()).await.unwrap();
            }
            let absent = blob(99_999, 10).0;
            assert!(!store.has(&absent).await.unwrap());
            assert_eq!(store.get(&absent).await.unwrap(), None);
            let st = store.stats().await.unwrap();
            assert_eq!(st.chunks, 1000 + 167);
            assert!(store.local_stats().segments > 5, "small segments must roll");
            contents(&store).await
        };
        assert_eq!(expect.len(), 1167);
        // Fast path: the close snapshot.
        {
            let store = LocalStore::open(dir.path(), &o).unwrap();
            let rep = store.open_report();
            assert!(rep.from_snapshot, "{rep:?}");
            assert_eq!(rep.replayed_records, 0);
            assert_eq!(contents(&store).await, expect);
        }
        // Slow path: no snapshot, every segment replayed.
        std::fs::remove_file(dir.path().join("index")).unwrap();
        {
            let store = LocalStore::open(dir.path(), &o).unwrap();
            let rep = store.open_report();
            assert!(!rep.from_snapshot);
            assert!(rep.replayed_records >= 1500 + 500, "{rep:?}");
            assert_eq!(contents(&store).await, expect);
            let f = store.fsck(&FsckOptions { verify_ids: true }).await.unwrap();
            assert!(f.is_clean(), "{f:?}");
            assert_eq!(f.live_blobs, 1167);
        }
    }
}

#[tokio::test]
async fn a_second_open_of_the_same_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _a = LocalStore::open(dir.path(), &opts(EngineChoice::Uring)).unwrap();
    let err = LocalStore::open(dir.path(), &opts(EngineChoice::Uring)).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_share_fdatasyncs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalStore::open(dir.path(), &opts(EngineChoice::Uring)).unwrap());
    let blobs: Vec<_> = (0..400u64).map(|i| blob(i, 8192)).collect();
    put_all(&store, &blobs).await;
    let s = store.local_stats();
    assert!(s.syncs > 0 && s.syncs < 400, "400 concurrent puts took {} syncs", s.syncs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_sync_policy_keeps_data_after_sync_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let o = OpenOptions {
        sync: SyncPolicy::Periodic(std::time::Duration::from_millis(200)),
        ..opts(EngineChoice::Uring)
    };
    let blobs: Vec<_> = (0..100u64).map(|i| blob(i, 5000)).collect();
    {
        let store = Arc::new(LocalStore::open(dir.path(), &o).unwrap());
        put_all(&store, &blobs).await;
        store.sync().await.unwrap();
        assert!(store.local_stats().syncs < 100);
    }
    let store = LocalStore::open(dir.path(), &o).unwrap();
    for (id, b) in &blobs {
        assert_eq!(&store.get(id).await.unwrap().unwrap(), b);
    }
}

/// Offset of `needle` in the file.
fn find_in(path: &Path, needle: &[u8]) -> Option<usize> {
    std::fs::read(path).unwrap().windows(needle.len()).position(|w| w == needle)
}

fn flip_byte(path: &Path, at: usize) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at as u64).unwrap();
    f.write_all_at(&[b[0] ^ 0x20], at as u64).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bits_give_corrupt_and_fsck_quarantines_them() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let blobs: Vec<_> = (0..50u64).map(|i| blob(i, 4096)).collect();
        {
            let store = Arc::new(LocalStore::open(dir.path(), &opts(engine)).unwrap());
            put_all(&store, &blobs).await;
        }
        let seg = dir.path().join("00000001.seg");
        // Rot inside the payload of chunk 7, and inside the header of chunk 9
        // (its id field, 52 - 12 = 40 bytes before the payload).
        let p7 = find_in(&seg, &blobs[7].1).unwrap();
        flip_byte(&seg, p7 + 1000);
        let p9 = find_in(&seg, &blobs[9].1).unwrap();
        flip_byte(&seg, p9 - 30);

        let store = Arc::new(LocalStore::open(dir.path(), &opts(engine)).unwrap());
        for i in [7, 9] {
            let err = store.get(&blobs[i].0).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupt, "chunk {i}: {err}");
        }
        assert_eq!(store.local_stats().hits, 0);
        let rep = store.fsck(&FsckOptions::default()).await.unwrap();
        assert!(!rep.is_clean());
        assert_eq!(rep.bad_live, 1, "{rep:?}");
        assert_eq!(rep.dangling, 1, "{rep:?}");
        assert_eq!(rep.quarantined.len(), 2, "{rep:?}");
        for q in &rep.quarantined {
            assert!(q.is_file(), "{}", q.display());
        }
        // Now missing, not corrupt; the others are intact; a re-put repairs.
        for i in [7, 9] {
            assert_eq!(store.get(&blobs[i].0).await.unwrap(), None);
        }
        for (i, (id, b)) in blobs.iter().enumerate() {
            if i != 7 && i != 9 {
                assert_eq!(&store.get(id).await.unwrap().unwrap(), b);
            }
        }
        let again = store.fsck(&FsckOptions { verify_ids: true }).await.unwrap();
        assert!(again.is_clean(), "{again:?}");
        store.put(&blobs[7].0, blobs[7].1.clone()).await.unwrap();
        assert_eq!(store.get(&blobs[7].0).await.unwrap().unwrap(), blobs[7].1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsck_verify_ids_finds_blobs_under_the_wrong_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path(), &opts(EngineChoice::Uring)).unwrap();
    // The store does not assume id == BLAKE3(blob): this is a valid put.
    let derived = ChunkId([0x42; 32]);
    store.put(&derived, Bytes::from_static(b"value under a derived id")).await.unwrap();
    assert_eq!(store.get(&derived).await.unwrap().unwrap(), &b"value under a derived id"[..]);
    assert!(store.fsck(&FsckOptions::default()).await.unwrap().is_clean());
    let rep = store.fsck(&FsckOptions { verify_ids: true }).await.unwrap();
    assert_eq!(rep.id_mismatches, 1);
    assert!(!store.has(&derived).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_evicts_least_recently_used_and_stays_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let budget = 32u64 << 20;
    let o = OpenOptions { cache_budget: Some(budget), ..opts(EngineChoice::Uring) };
    let store = LocalStore::open(dir.path(), &o).unwrap();
    let hot: Vec<_> = (0..8u64).map(|i| blob(1_000_000 + i, 256 << 10)).collect();
    for (id, b) in &hot {
        store.put(id, b.clone()).await.unwrap();
    }
    let cold: Vec<_> = (0..400u64).map(|i| blob(i, 256 << 10)).collect();
    let mut max_disk = 0;
    for (n, (id, b)) in cold.iter().enumerate() {
        store.put(id, b.clone()).await.unwrap();
        if n % 10 == 0 {
            for (id, b) in &hot {
                assert_eq!(&store.get(id).await.unwrap().unwrap(), b);
            }
        }
        let disk = store.stats().await.unwrap().disk_bytes.unwrap();
        assert!(disk <= budget, "after put {n}: {disk} bytes on disk, budget {budget}");
        max_disk = max_disk.max(disk);
    }
    let st = store.local_stats();
    assert!(st.evictions > 200, "{st:?}");
    for (id, b) in &hot {
        assert_eq!(&store.get(id).await.unwrap().unwrap(), b, "a hot chunk was evicted");
    }
    assert!(!store.has(&cold[0].0).await.unwrap(), "the oldest cold chunk survived");
    assert!(store.has(&cold[399].0).await.unwrap(), "the newest chunk was evicted");
    // Files on disk agree with the accounting.
    let on_disk: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert_eq!(on_disk, st.segment_bytes);
    assert!(on_disk <= budget);
    assert!(max_disk > budget / 2, "the budget was never approached: {max_disk}");
    let hits = st.hits as f64 / st.gets as f64;
    assert!(hits > 0.99, "hit ratio {hits}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_gives_back_the_space_of_deleted_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let o = OpenOptions { segment_size: Some(4 << 20), ..opts(EngineChoice::Uring) };
    let blobs: Vec<_> = (0..160u64).map(|i| blob(i, 256 << 10)).collect();
    let keep: Vec<_> = blobs.iter().step_by(4).cloned().collect();
    {
        let store = Arc::new(LocalStore::open(dir.path(), &o).unwrap());
        put_all(&store, &blobs).await;
        for (i, (id, _)) in blobs.iter().enumerate() {
            if i % 4 != 0 {
                store.delete(id).await.unwrap();
            }
        }
        let before = store.local_stats();
        let rep = store.gc().await.unwrap();
        let after = store.local_stats();
        assert!(rep.segments_compacted >= 9, "{rep:?}");
        assert!(
            after.segment_bytes + (25 << 20) < before.segment_bytes,
            "gc went from {} to {} bytes",
            before.segment_bytes,
            after.segment_bytes
        );
        assert!(after.dead_bytes < 1 << 20, "{after:?}");
        for (id, b) in &keep {
            assert_eq!(&store.get(id).await.unwrap().unwrap(), b);
        }
        assert_eq!(store.stats().await.unwrap().chunks, 40);
    }
    // Both reopen paths still agree after compaction deleted segments.
    let a = contents(&LocalStore::open(dir.path(), &o).unwrap()).await;
    std::fs::remove_file(dir.path().join("index")).unwrap();
    let store = LocalStore::open(dir.path(), &o).unwrap();
    assert!(!store.open_report().from_snapshot);
    let b = contents(&store).await;
    assert_eq!(a, b);
    assert_eq!(a.len(), 40);
    assert!(store.fsck(&FsckOptions { verify_ids: true }).await.unwrap().is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(EngineChoice::Sync);
    let blobs: Vec<_> = (0..20u64).map(|i| blob(i, 3000)).collect();
    {
        let store = Arc::new(LocalStore::open(dir.path(), &o).unwrap());
        put_all(&store, &blobs).await;
    }
    std::fs::remove_file(dir.path().join("index")).unwrap();
    // Half a record at the end, as an interrupted write leaves it.
    let seg = dir.path().join("00000001.seg");
    let len = std::fs::metadata(&seg).unwrap().len();
    let data = std::fs::read(&seg).unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    std::io::Write::write_all(&mut f, &data[..1500]).unwrap();
    drop(f);
    let store = LocalStore::open(dir.path(), &o).unwrap();
    assert_eq!(store.open_report().truncated_bytes, 1500);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);
    assert_eq!(contents(&store).await.len(), 20);
    assert!(store.fsck(&FsckOptions { verify_ids: true }).await.unwrap().is_clean());
}
