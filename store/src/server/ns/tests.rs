use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::backend::mem::MemStore;

fn ctx(values: DynStore) -> Arc<Context> {
    Arc::new(Context { values, stats: IoStats::default(), sync_writes: false })
}

fn load(dir: &Path, values: &DynStore, forced: Option<Mode>) -> Result<Namespaces> {
    let (t, trash) = Namespaces::load(dir, ctx(values.clone()), Mode::User, forced)?;
    assert!(trash.is_empty());
    Ok(t)
}

fn req(key: &[u8], value: &[u8]) -> SetRequest {
    SetRequest {
        key: Bytes::copy_from_slice(key),
        value: Bytes::copy_from_slice(value),
        timestamp: None,
    }
}

fn keys(ns: &Namespace) -> Vec<Bytes> {
    ns.scan(None, false, usize::MAX).unwrap().into_iter().map(|(k, _)| k).collect()
}

#[tokio::test]
async fn set_get_overwrite_delete_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let values: DynStore = Arc::new(MemStore::new());
    let t = load(dir.path(), &values, None).unwrap();
    let ns = t.default_ns();
    assert_eq!(
        ns.set(req(b"k1", b"aaa")).await.unwrap(),
        SetOutcome::Stored(Bytes::from_static(b"k1"))
    );
    assert_eq!(ns.set(req(b"k1", b"aaa")).await.unwrap(), SetOutcome::Unchanged);
    ns.set(req(b"k2", b"bbbb")).await.unwrap();
    ns.set(req(b"k3", b"")).await.unwrap();
    ns.set(req(b"k1", b"changed")).await.unwrap();
    ns.del(b"k2").await.unwrap();
    assert!(matches!(ns.del(b"k2").await, Err(WriteError::NotFound)));
    assert_eq!(keys(&ns), vec![&b"k3"[..], b"k1"]);
    assert_eq!(&ns.get(b"k1").await.unwrap().unwrap().data[..], b"changed");
    assert_eq!(ns.get(b"k3").await.unwrap().unwrap().data.len(), 0);
    assert_eq!(ns.check(b"k1").await.unwrap(), Some(true));
    // Replaced and deleted values left the value store: k1 and nothing else.
    assert_eq!(values.stats().await.unwrap().chunks, 1);
    let info = ns.info();
    assert_eq!((info.entries, info.data_size, info.next_id), (2, 7, 4));
    t.sync_all().await.unwrap();
    drop((ns, t));

    let t = load(dir.path(), &values, None).unwrap();
    let ns = t.default_ns();
    assert_eq!(keys(&ns), vec![&b"k3"[..], b"k1"]);
    assert_eq!(&ns.get(b"k1").await.unwrap().unwrap().data[..], b"changed");
    let again = ns.info();
    assert_eq!((again.entries, again.data_size, again.next_id), (2, 7, 4));
}

#[tokio::test]
async fn sequential_ids_and_settings_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let values: DynStore = Arc::new(MemStore::new());
    let t = load(dir.path(), &values, None).unwrap();
    let ns = t.create(b"seq", Mode::Sequential).await.unwrap();
    for (i, v) in [&b"a"[..], b"b", b"c"].iter().enumerate() {
        assert_eq!(ns.set(req(b"", v)).await.unwrap(), SetOutcome::Stored(seq_key(i as u64)));
    }
    // An update uses up a number; a DEL does not.
    ns.set(req(&seq_key(0), b"a2")).await.unwrap();
    ns.del(&seq_key(1)).await.unwrap();
    assert_eq!(ns.set(req(b"", b"d")).await.unwrap(), SetOutcome::Stored(seq_key(4)));
    assert!(matches!(ns.set(req(b"abc", b"x")).await, Err(WriteError::OnlyUpdate)));
    assert!(matches!(ns.set(req(&seq_key(9), b"x")).await, Err(WriteError::OnlyUpdate)));
    ns.set_setting(Setting::Password(b"pw".to_vec())).await.unwrap();
    ns.set_setting(Setting::Public(false)).await.unwrap();
    ns.set_setting(Setting::Worm(true)).await.unwrap();
    drop((ns, t));

    let t = load(dir.path(), &values, None).unwrap();
    assert_eq!(t.names(), vec![Bytes::from_static(b"default"), Bytes::from_static(b"seq")]);
    let ns = t.get(b"seq").unwrap();
    let s = ns.settings();
    assert_eq!(s.password.unwrap().expose(), b"pw");
    assert!(!s.public && s.worm && s.mode == Mode::Sequential);
    assert_eq!(keys(&ns), vec![seq_key(0), seq_key(2), seq_key(4)]);
    assert_eq!(ns.set(req(b"", b"e")).await.unwrap(), SetOutcome::Stored(seq_key(5)));
}

#[tokio::test]
async fn limits_worm_lock_and_freeze() {
    let dir = tempfile::tempdir().unwrap();
    let values: DynStore = Arc::new(MemStore::new());
    let t = load(dir.path(), &values, None).unwrap();
    let ns = t.create(b"lim", Mode::User).await.unwrap();
    ns.set_setting(Setting::MaxSize(10)).await.unwrap();
    ns.set(req(b"a", b"12345")).await.unwrap();
    assert!(matches!(ns.set(req(b"b", b"123456")).await, Err(WriteError::NoSpace)));
    // The replaced value's size is credited first.
    ns.set(req(b"a", b"1234567890")).await.unwrap();
    ns.set_lock(Lock::ReadOnly);
    assert!(matches!(ns.set(req(b"c", b"1")).await, Err(WriteError::Locked)));
    assert!(matches!(ns.del(b"a").await, Err(WriteError::Locked)));
    assert!(ns.get(b"a").await.unwrap().is_some());
    ns.set_lock(Lock::Frozen);
    assert!(matches!(ns.get(b"a").await, Err(ReadError::Frozen)));
    assert!(matches!(ns.set(req(b"c", b"1")).await, Err(WriteError::Frozen)));
    assert_eq!(ns.len(), 1);
    ns.set_lock(Lock::Open);
    ns.set_setting(Setting::MaxSize(0)).await.unwrap();
    ns.set_setting(Setting::Worm(true)).await.unwrap();
    assert!(matches!(ns.set(req(b"a", b"1234567890")).await, Err(WriteError::Worm)));
    assert!(matches!(ns.del(b"a").await, Err(WriteError::WormDelete)));
    assert!(matches!(ns.del(b"zz").await, Err(WriteError::NotFound)));
    ns.set(req(b"new", b"x")).await.unwrap();
    assert!(matches!(ns.set(req(b"", b"x")).await, Err(WriteError::KeyNeeded)));
}

#[tokio::test]
async fn removed_namespace_is_gone_after_restart_and_its_values_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let values: DynStore = Arc::new(MemStore::new());
    let t = load(dir.path(), &values, None).unwrap();
    let ns = t.create(b"tmp", Mode::User).await.unwrap();
    ns.set(req(b"a", b"value")).await.unwrap();
    assert!(matches!(t.create(b"tmp", Mode::User).await, Err(CreateError::Exists)));
    t.remove(&ns).await.unwrap();
    assert!(ns.is_removed());
    assert!(t.get(b"tmp").is_none());
    // The blobs are deleted in the background: wait for it, with a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while values.stats().await.unwrap().chunks != 0 {
        assert!(std::time::Instant::now() < deadline, "blobs of the removed namespace remain");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    drop(t);
    let t = load(dir.path(), &values, None).unwrap();
    assert_eq!(t.names(), vec![Bytes::from_static(b"default")]);
    // The name can be used again and starts empty.
    let ns = t.create(b"tmp", Mode::User).await.unwrap();
    assert!(ns.get(b"a").await.unwrap().is_none());
}

#[tokio::test]
async fn single_mode_server_refuses_data_of_the_other_mode() {
    let dir = tempfile::tempdir().unwrap();
    let values: DynStore = Arc::new(MemStore::new());
    let t = load(dir.path(), &values, None).unwrap();
    let empty = t.create(b"empty", Mode::User).await.unwrap();
    drop(empty);
    t.default_ns().set(req(b"k", b"v")).await.unwrap();
    drop(t);
    let t = load(dir.path(), &values, Some(Mode::User)).unwrap();
    drop(t);
    let e = load(dir.path(), &values, Some(Mode::Sequential)).unwrap_err();
    assert!(e.to_string().contains("default"), "{e}");
    // Without data, the forced mode wins.
    let dir2 = tempfile::tempdir().unwrap();
    let t = load(dir2.path(), &values, Some(Mode::Sequential)).unwrap();
    assert_eq!(t.default_ns().mode(), Mode::Sequential);
}

#[tokio::test]
async fn big_journals_are_compacted_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let values: DynStore = Arc::new(MemStore::new());
    let t = load(dir.path(), &values, None).unwrap();
    let ns = t.default_ns();
    // ~10k overwrites of one key: a journal far larger than its one live entry.
    for i in 0..12_000u32 {
        ns.set(req(b"hot", &i.to_le_bytes())).await.unwrap();
    }
    ns.set(req(b"cold", b"c")).await.unwrap();
    let before = std::fs::metadata(ns.journal_path()).unwrap().len();
    assert!(before > COMPACT_MIN_BYTES_FOR_TEST, "{before}");
    let path = ns.journal_path().to_path_buf();
    drop((ns, t));
    let t = load(dir.path(), &values, None).unwrap();
    let after = std::fs::metadata(&path).unwrap().len();
    assert!(after < 1024, "journal still {after} bytes");
    let ns = t.default_ns();
    assert_eq!(keys(&ns), vec![&b"hot"[..], b"cold"]);
    assert_eq!(&ns.get(b"hot").await.unwrap().unwrap().data[..], &11_999u32.to_le_bytes());
    assert_eq!(ns.info().next_id, 12_001);
    assert_eq!(
        ns.set(req(b"x", b"y")).await.unwrap(),
        SetOutcome::Stored(Bytes::from_static(b"x"))
    );
    assert_eq!(ns.info().next_id, 12_002);
}

const COMPACT_MIN_BYTES_FOR_TEST: u64 = 1 << 20;

#[tokio::test]
async fn garbage_collection_keeps_exactly_the_referenced_values() {
    let dir = tempfile::tempdir().unwrap();
    let values: DynStore = Arc::new(MemStore::new());
    let t = load(dir.path(), &values, None).unwrap();
    let ns = t.default_ns();
    ns.set(req(b"a", b"kept")).await.unwrap();
    let other = t.create(b"other", Mode::User).await.unwrap();
    other.set(req(b"b", b"kept too")).await.unwrap();
    // A value put by a write that crashed before its journal record.
    values.put(&ChunkId([9; 32]), Bytes::from_static(b"orphan")).await.unwrap();
    assert_eq!(values.stats().await.unwrap().chunks, 3);
    assert_eq!(t.collect_garbage().await.unwrap(), 1);
    assert_eq!(values.stats().await.unwrap().chunks, 2);
    assert_eq!(&ns.get(b"a").await.unwrap().unwrap().data[..], b"kept");
    assert_eq!(&other.get(b"b").await.unwrap().unwrap().data[..], b"kept too");
    assert_eq!(t.collect_garbage().await.unwrap(), 0);
}
