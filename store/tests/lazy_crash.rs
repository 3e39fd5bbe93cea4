//! Crash safety of LazyFile: a child process (this test binary, re-run
//! with an env var naming the scenario) is killed with SIGKILL at a
//! controlled point, by a failpoint or by the parent; the parent reopens
//! the cache and checks that nothing is reported present that is not
//! intact, flushed writes survive, and unflushed ones are either absent or
//! correct, never wrong.
//!
//! A process kill keeps the page cache, so this shows the ordering of
//! writes and state updates, not the effect of losing unsynced pages.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use zosfs_store::DynStore;
use zosfs_store::backend::dir::DirStore;
use zosfs_store::lazy::testing::{put_chunks, sample_bytes};
use zosfs_store::lazy::{
    ChunkState, FailHook, Layout, LazyFile, LazyOptions, Origin, Step, StoreSource,
};

const CHILD_ENV: &str = "ZOSFS_LAZY_CRASH_CHILD";
const DIR_ENV: &str = "ZOSFS_LAZY_CRASH_DIR";
const CHUNK: usize = 64 << 10;
const CHUNKS: usize = 8;

/// Paths and content shared by the parent and the child.
struct Setup {
    dir: PathBuf,
    content: Vec<u8>,
}

impl Setup {
    fn new(dir: &Path) -> Setup {
        Setup { dir: dir.to_path_buf(), content: sample_bytes(CHUNKS * CHUNK, 42) }
    }

    fn cache(&self) -> PathBuf {
        self.dir.join("cache")
    }

    /// The chunk store (a dir store both processes open) and the chunk list;
    /// encoding is convergent, so both compute the same list.
    async fn source(&self) -> (Arc<dyn zosfs_store::lazy::ChunkSource>, Layout) {
        let store: DynStore =
            Arc::new(DirStore::open(&self.dir.join("store"), "dir://test".into()).unwrap());
        let origins: Vec<Origin> =
            put_chunks(&store, &self.content, &[CHUNK; CHUNKS], false).await.unwrap();
        let src = StoreSource::new(store, origins);
        let layout = src.layout().unwrap();
        (Arc::new(src), layout)
    }

    async fn open(&self, opts: LazyOptions) -> LazyFile {
        let (src, layout) = self.source().await;
        LazyFile::open(&self.cache(), layout, src, opts).await.unwrap()
    }

    fn chunk(&self, i: usize) -> &[u8] {
        &self.content[i * CHUNK..(i + 1) * CHUNK]
    }

    /// Run this test binary as the child for `scenario` and wait for it.
    fn run_child(&self, test: &str, scenario: &str) -> ExitStatus {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture", "--test-threads", "1"])
            .env(CHILD_ENV, scenario)
            .env(DIR_ENV, &self.dir)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("child {scenario} did not end within 60 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The invariant after any crash: a chunk reported present holds
    /// exactly the source's bytes in the data file.
    fn assert_present_chunks_intact(&self, lf: &LazyFile) {
        let disk = std::fs::read(self.cache()).unwrap();
        assert_eq!(disk.len(), self.content.len());
        for i in 0..CHUNKS {
            if lf.state(i as u64) == ChunkState::Present {
                assert!(
                    disk[i * CHUNK..(i + 1) * CHUNK] == *self.chunk(i),
                    "chunk {i} is reported present but its data is not intact"
                );
            }
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// `Some(setup)` when this process is the child of `scenario`.
fn child_of(scenario: &str) -> Option<Setup> {
    match std::env::var(CHILD_ENV) {
        Ok(s) if s == scenario => {
            Some(Setup::new(Path::new(&std::env::var(DIR_ENV).expect("dir env"))))
        }
        _ => None,
    }
}

fn die() -> ! {
    // SAFETY: kill(2) on our own pid; SIGKILL ends the process at once,
    // with no unwinding or destructors: a crash.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    unreachable!("SIGKILL returned")
}

/// Block until SIGKILL arrives (bounded, so a broken scenario fails).
async fn wait_to_be_killed() {
    let _ = tokio::time::timeout(Duration::from_secs(30), std::future::pending::<()>()).await;
}

fn failpoint(f: impl Fn(Step) + Send + Sync + 'static) -> Option<FailHook> {
    Some(Arc::new(f))
}

fn assert_killed(st: ExitStatus) {
    assert_eq!(st.signal(), Some(libc::SIGKILL), "the child must die by SIGKILL, got {st:?}");
}

#[test]
fn crash_between_data_write_and_state_write() {
    const TEST: &str = "crash_between_data_write_and_state_write";
    if let Some(s) = child_of(TEST) {
        runtime().block_on(async {
            let lf = s
                .open(LazyOptions {
                    readahead: 0,
                    failpoint: failpoint(|step| {
                        if step == Step::DataWritten(3) {
                            die();
                        }
                    }),
                    ..Default::default()
                })
                .await;
            // Chunks 0..3 are filled and durable, then the fill of chunk 3
            // dies after writing its data, before its state.
            assert_eq!(lf.prefetch(0, 3 * CHUNK as u64, None).wait().await.unwrap().failed, 0);
            let _ = lf.read(3 * CHUNK as u64, 10).await;
            // A reader is served before the data is durable; wait for the kill.
            wait_to_be_killed().await;
            panic!("failpoint not reached");
        });
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Setup::new(dir.path());
    assert_killed(s.run_child(TEST, TEST));
    runtime().block_on(async {
        let lf = s.open(LazyOptions { readahead: 0, ..Default::default() }).await;
        for i in 0..3 {
            assert_eq!(lf.state(i), ChunkState::Present, "chunk {i} was durable before the crash");
        }
        assert_eq!(lf.state(3), ChunkState::Absent, "chunk 3's state was never written");
        s.assert_present_chunks_intact(&lf);
        // The data of chunk 3 that the crash left behind was punched out at open.
        let disk = std::fs::read(s.cache()).unwrap();
        assert!(disk[3 * CHUNK..4 * CHUNK].iter().all(|&b| b == 0));
        assert!(lf.read(0, CHUNKS * CHUNK).await.unwrap() == s.content);
        assert_eq!(lf.stats().fetched, 5, "chunks 3..8 fetched again, 0..3 not");
    });
}

#[test]
fn crash_between_state_write_and_state_sync() {
    const TEST: &str = "crash_between_state_write_and_state_sync";
    if let Some(s) = child_of(TEST) {
        runtime().block_on(async {
            let armed = Arc::new(AtomicBool::new(false));
            let a = armed.clone();
            let lf = s
                .open(LazyOptions {
                    readahead: 0,
                    failpoint: failpoint(move |step| match step {
                        Step::DataWritten(5) => a.store(true, Ordering::SeqCst),
                        Step::StateWritten if a.load(Ordering::SeqCst) => die(),
                        _ => {}
                    }),
                    ..Default::default()
                })
                .await;
            assert_eq!(lf.prefetch(0, 5 * CHUNK as u64, None).wait().await.unwrap().failed, 0);
            let _ = lf.read(5 * CHUNK as u64, 10).await;
            wait_to_be_killed().await;
            panic!("failpoint not reached");
        });
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Setup::new(dir.path());
    assert_killed(s.run_child(TEST, TEST));
    runtime().block_on(async {
        let lf = s.open(LazyOptions::default()).await;
        for i in 0..5 {
            assert_eq!(lf.state(i), ChunkState::Present);
        }
        // Chunk 5's state may or may not have reached the disk; either way
        // what is reported present is intact.
        assert!(matches!(lf.state(5), ChunkState::Present | ChunkState::Absent));
        s.assert_present_chunks_intact(&lf);
        assert!(lf.read(0, CHUNKS * CHUNK).await.unwrap() == s.content);
    });
}

#[test]
fn crash_with_flushed_and_unflushed_writes() {
    const TEST: &str = "crash_with_flushed_and_unflushed_writes";
    if let Some(s) = child_of(TEST) {
        runtime().block_on(async {
            let lf = s
                .open(LazyOptions {
                    writable: true,
                    readahead: 0,
                    // Lazy state changes stay unpersisted until a flush.
                    state_sync_interval: Duration::from_secs(3600),
                    ..Default::default()
                })
                .await;
            assert_eq!(lf.prefetch(0, 4 * CHUNK as u64, None).wait().await.unwrap().failed, 0);
            // Flushed: into a present chunk (0) and into an absent one (4).
            lf.write(100, Bytes::from(vec![0x11; 1000])).await.unwrap();
            lf.write(4 * CHUNK as u64 + 100, Bytes::from(vec![0x11; 1000])).await.unwrap();
            lf.flush().await.unwrap();
            // Not flushed: present chunk 1, trim of absent chunk 6, absent chunk 5.
            // (The trim waits for its state batch, so it goes before the lazy write.)
            lf.write(CHUNK as u64 + 100, Bytes::from(vec![0x22; 1000])).await.unwrap();
            lf.trim(6 * CHUNK as u64, CHUNK as u64).await.unwrap();
            lf.write(5 * CHUNK as u64 + 100, Bytes::from(vec![0x22; 1000])).await.unwrap();
            std::fs::write(s.dir.join("ready"), b"").unwrap();
            wait_to_be_killed().await;
            panic!("the parent did not kill the child");
        });
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Setup::new(dir.path());
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([TEST, "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, TEST)
        .env(DIR_ENV, dir.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.path().join("ready").exists() {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child never got ready");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    assert_killed(child.wait().unwrap());

    runtime().block_on(async {
        let lf = s.open(LazyOptions { writable: true, ..Default::default() }).await;
        s.assert_present_chunks_intact(&lf);
        let patched = |i: usize, v: u8| {
            let mut c = s.chunk(i).to_vec();
            c[100..1100].fill(v);
            c
        };
        let read = |i: usize| lf.read((i * CHUNK) as u64, CHUNK);
        // Flushed writes survive.
        for i in [0, 4] {
            assert_eq!(lf.state(i as u64), ChunkState::Dirty);
            assert!(read(i).await.unwrap() == patched(i, 0x11), "flushed write to {i} lost");
        }
        // Unflushed ones are there or not, never something else.
        for i in [1, 5] {
            let got = read(i).await.unwrap();
            assert!(
                got == patched(i, 0x22) || got == s.chunk(i),
                "chunk {i} reads neither the old nor the new content"
            );
        }
        // Writing a present chunk persisted Dirty first: it is not "present" now.
        assert_eq!(lf.state(1), ChunkState::Dirty);
        // The write into absent chunk 5 was never made durable: absent again.
        assert_eq!(lf.state(5), ChunkState::Absent);
        assert!(read(5).await.unwrap() == s.chunk(5));
        // The trim was persisted before returning.
        assert_eq!(lf.state(6), ChunkState::Zero);
        assert!(read(6).await.unwrap().iter().all(|&b| b == 0));
        for i in [2, 3] {
            assert_eq!(lf.state(i as u64), ChunkState::Present);
        }
    });
}
