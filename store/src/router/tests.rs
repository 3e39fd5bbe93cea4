//! Router logic over in-memory stores (the end-to-end tests in `tests/`
//! run it against real redis-server and `chunkstore serve` replicas).

use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::backend::mem::MemStore;
use crate::chunk::encode;

/// A MemStore that can be switched "down" (Unavailable), made to hang on
/// reads, and given a non-local URL.
struct TestStore {
    inner: MemStore,
    url: String,
    down: AtomicBool,
    hang_reads: AtomicBool,
}

impl TestStore {
    fn new(url: &str) -> Arc<TestStore> {
        Arc::new(TestStore {
            inner: MemStore::new(),
            url: url.into(),
            down: AtomicBool::new(false),
            hang_reads: AtomicBool::new(false),
        })
    }
    fn check(&self) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::new(ErrorKind::Unavailable, format!("{}: down", self.url)));
        }
        Ok(())
    }
}

#[async_trait]
impl ChunkStore for TestStore {
    fn url(&self) -> &str {
        &self.url
    }
    async fn get(&self, id: &ChunkId) -> Result<Option<Bytes>> {
        self.check()?;
        if self.hang_reads.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.get(id).await
    }
    async fn put(&self, id: &ChunkId, blob: Bytes) -> Result<()> {
        self.check()?;
        self.inner.put(id, blob).await
    }
    async fn has(&self, id: &ChunkId) -> Result<bool> {
        self.check()?;
        self.inner.has(id).await
    }
    async fn delete(&self, id: &ChunkId) -> Result<bool> {
        self.check()?;
        self.inner.delete(id).await
    }
    async fn list_ids(&self) -> Result<Vec<ChunkId>> {
        self.inner.list_ids().await
    }
}

fn cfg_with_queue(dir: &std::path::Path) -> RouterConfig {
    RouterConfig {
        queue_dir: Some(dir.to_path_buf()),
        retry_min: Duration::from_millis(10),
        retry_max: Duration::from_millis(50),
        ..Default::default()
    }
}

async fn eventually(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn replicates_and_repairs_a_corrupt_replica() {
    let a: DynStore = Arc::new(MemStore::new());
    let b: DynStore = Arc::new(MemStore::new());
    let r = Router::from_stores(vec![(Route::ALL, a.clone()), (Route::ALL, b.clone())], None);
    let c = encode(b"replicated").unwrap();
    r.put(&c.chunk.id, c.blob.clone()).await.unwrap();
    assert!(a.has(&c.chunk.id).await.unwrap() && b.has(&c.chunk.id).await.unwrap());
    // Corrupt replica a: the router must serve b's good copy and fix a.
    a.delete(&c.chunk.id).await.unwrap();
    a.put(&c.chunk.id, Bytes::from_static(b"garbage")).await.unwrap();
    assert_eq!(r.get(&c.chunk.id).await.unwrap().unwrap(), c.blob);
    r.sync().await.unwrap();
    assert_eq!(a.get(&c.chunk.id).await.unwrap().unwrap(), c.blob);
}

#[tokio::test]
async fn every_copy_corrupt_is_an_error() {
    let a: DynStore = Arc::new(MemStore::new());
    let r = Router::from_stores(vec![(Route::ALL, a.clone())], None);
    let c = encode(b"x").unwrap();
    a.put(&c.chunk.id, Bytes::from_static(b"garbage")).await.unwrap();
    let e = r.get(&c.chunk.id).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
}

#[tokio::test]
async fn routes_by_prefix() {
    let lo: DynStore = Arc::new(MemStore::new());
    let hi: DynStore = Arc::new(MemStore::new());
    let r = Router::from_stores(
        vec![(Route { lo: 0, hi: 0x7f }, lo.clone()), (Route { lo: 0x80, hi: 0xff }, hi.clone())],
        None,
    );
    for i in 0..32u8 {
        let c = encode(&[i; 10]).unwrap();
        r.put(&c.chunk.id, c.blob).await.unwrap();
        let on_lo = lo.has(&c.chunk.id).await.unwrap();
        assert_eq!(on_lo, c.chunk.id.prefix() < 0x80);
        assert_eq!(hi.has(&c.chunk.id).await.unwrap(), !on_lo);
    }
}

#[tokio::test]
async fn missing_local_copy_is_filled_from_a_remote() {
    let local: DynStore = Arc::new(MemStore::new());
    let remote = TestStore::new("zdb://remote:9900/ns");
    // Remote listed first: reads still ask the local store first.
    let r =
        Router::from_stores(vec![(Route::ALL, remote.clone()), (Route::ALL, local.clone())], None);
    let c = encode(b"fill me").unwrap();
    remote.put(&c.chunk.id, c.blob.clone()).await.unwrap();
    assert_eq!(r.get(&c.chunk.id).await.unwrap().unwrap(), c.blob);
    r.sync().await.unwrap();
    assert_eq!(local.get(&c.chunk.id).await.unwrap().unwrap(), c.blob);
    assert!(r.has_many(&[c.chunk.id]).await.unwrap()[0]);
}

#[tokio::test]
async fn slow_replica_is_hedged() {
    let slow = TestStore::new("zdb://slow:1/ns");
    let fast = TestStore::new("zdb://fast:1/ns");
    let cfg = RouterConfig { hedge_delay: Duration::from_millis(20), ..Default::default() };
    let r = Router::with_config(vec![(Route::ALL, slow.clone()), (Route::ALL, fast.clone())], &cfg)
        .unwrap();
    let c = encode(b"hedged").unwrap();
    r.put(&c.chunk.id, c.blob.clone()).await.unwrap();
    // The slow store never answers: only the hedge can complete this read.
    slow.hang_reads.store(true, Ordering::SeqCst);
    assert_eq!(r.get(&c.chunk.id).await.unwrap().unwrap(), c.blob);
}

#[tokio::test]
async fn unmet_quorum_without_queue_is_an_error() {
    let a = TestStore::new("zdb://a:1/ns");
    let b = TestStore::new("zdb://b:1/ns");
    b.down.store(true, Ordering::SeqCst);
    let stores: Vec<(Route, DynStore)> = vec![(Route::ALL, a.clone()), (Route::ALL, b.clone())];
    let r = Router::from_stores(stores.clone(), None);
    let c = encode(b"q").unwrap();
    let e = r.put(&c.chunk.id, c.blob.clone()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Quorum);
    assert!(e.to_string().contains("1 of 2"), "{e}");
    assert!(e.to_string().contains("zdb://b:1/ns: down"), "{e}");
    let r = Router::from_stores(stores, Some(1));
    r.put(&c.chunk.id, c.blob.clone()).await.unwrap();
}

#[tokio::test]
async fn missed_writes_are_queued_and_drained_in_the_background() {
    let qdir = tempfile::tempdir().unwrap();
    let a = TestStore::new("zdb://a:1/ns");
    let b = TestStore::new("zdb://b:1/ns");
    b.down.store(true, Ordering::SeqCst);
    let stores: Vec<(Route, DynStore)> = vec![(Route::ALL, a.clone()), (Route::ALL, b.clone())];
    let r = Router::with_config(stores, &cfg_with_queue(qdir.path())).unwrap();
    let mut ids = Vec::new();
    for i in 0..20u32 {
        let c = encode(&i.to_le_bytes()).unwrap();
        r.put(&c.chunk.id, c.blob).await.unwrap();
        ids.push(c.chunk.id);
    }
    let pending = r.queue_pending().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].target, "zdb://b:1/ns");
    assert_eq!(pending[0].ids.len(), 20);
    b.down.store(false, Ordering::SeqCst);
    eventually("the queue to drain", async || r.queue_pending().await.unwrap().is_empty()).await;
    assert!(b.has_many(&ids).await.unwrap().iter().all(|x| *x));
}

#[tokio::test]
async fn queue_survives_a_new_router() {
    let qdir = tempfile::tempdir().unwrap();
    let a = TestStore::new("zdb://a:1/ns");
    let b = TestStore::new("zdb://b:1/ns");
    b.down.store(true, Ordering::SeqCst);
    let stores: Vec<(Route, DynStore)> = vec![(Route::ALL, a.clone()), (Route::ALL, b.clone())];
    let cfg = RouterConfig { background_drain: false, ..cfg_with_queue(qdir.path()) };
    let c = encode(b"kept").unwrap();
    {
        let r = Router::with_config(stores.clone(), &cfg).unwrap();
        r.put(&c.chunk.id, c.blob.clone()).await.unwrap();
    }
    b.down.store(false, Ordering::SeqCst);
    let r = Router::with_config(stores, &cfg).unwrap();
    let mut events = Vec::new();
    let rep = r.drain_queue(&mut |e| events.push(e.clone())).await.unwrap();
    assert_eq!(rep, DrainReport { written: 1, remaining: 0, ..Default::default() });
    assert_eq!(events.len(), 1);
    assert_eq!(b.get(&c.chunk.id).await.unwrap().unwrap(), c.blob);
}

#[tokio::test]
async fn all_stores_down_is_an_error_even_with_a_queue() {
    let qdir = tempfile::tempdir().unwrap();
    let a = TestStore::new("zdb://a:1/ns");
    a.down.store(true, Ordering::SeqCst);
    let r = Router::with_config(
        vec![(Route::ALL, a.clone() as DynStore)],
        &cfg_with_queue(qdir.path()),
    )
    .unwrap();
    let c = encode(b"nowhere").unwrap();
    let e = r.put(&c.chunk.id, c.blob.clone()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Quorum, "{e}");
    assert!(r.queue_pending().await.unwrap().is_empty());
}

#[tokio::test]
async fn delete_forgets_queued_writes() {
    let qdir = tempfile::tempdir().unwrap();
    let a = TestStore::new("zdb://a:1/ns");
    let b = TestStore::new("zdb://b:1/ns");
    b.down.store(true, Ordering::SeqCst);
    let cfg = RouterConfig { background_drain: false, ..cfg_with_queue(qdir.path()) };
    let r = Router::with_config(
        vec![(Route::ALL, a.clone() as DynStore), (Route::ALL, b.clone())],
        &cfg,
    )
    .unwrap();
    let c = encode(b"gone").unwrap();
    r.put(&c.chunk.id, c.blob.clone()).await.unwrap();
    b.down.store(false, Ordering::SeqCst);
    assert!(r.delete(&c.chunk.id).await.unwrap());
    assert!(r.queue_pending().await.unwrap().is_empty());
    assert!(!b.has(&c.chunk.id).await.unwrap());
}

#[tokio::test]
async fn replicate_copies_and_verifies() {
    let a = TestStore::new("local:///a");
    let b = TestStore::new("zdb://b:1/ns");
    let r = Router::from_stores(
        vec![(Route::ALL, a.clone() as DynStore), (Route::ALL, b.clone())],
        None,
    );
    let c1 = encode(b"one").unwrap();
    let c2 = encode(b"two").unwrap();
    a.put(&c1.chunk.id, c1.blob.clone()).await.unwrap();
    a.put(&c2.chunk.id, c2.blob.clone()).await.unwrap();
    b.put(&c2.chunk.id, Bytes::from_static(b"rotten")).await.unwrap();
    let ids = r.local_ids().await.unwrap();
    assert_eq!(ids.len(), 2);
    // Without verify the rotten copy counts as present.
    let rep = r.replicate(&ids, false, &mut |_| {}).await.unwrap();
    assert_eq!((rep.written, rep.present, rep.repaired), (1, 3, 0));
    let rep = r.replicate(&ids, true, &mut |_| {}).await.unwrap();
    assert_eq!((rep.written, rep.present, rep.repaired), (0, 3, 1));
    assert_eq!(b.get(&c2.chunk.id).await.unwrap().unwrap(), c2.blob);
}

#[tokio::test]
async fn bad_config_is_refused() {
    let a: DynStore = Arc::new(MemStore::new());
    let cfg = RouterConfig { quorum: Some(0), ..Default::default() };
    let e = Router::with_config(vec![(Route::ALL, a)], &cfg).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}
