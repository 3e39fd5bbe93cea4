//! kill -9 in the middle of many concurrent puts, then reopen: every put
//! the child acknowledged is there and intact, no torn record is served,
//! fsck is clean.
//!
//! The child is this same test binary, re-run with an environment variable
//! that turns the test into the writer.

mod blobs;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use zosfs_store::engine::EngineChoice;
use zosfs_store::local::{FsckOptions, LocalStore};
use zosfs_store::{ChunkId, ChunkStore, OpenOptions};

const CHILD_ENV: &str = "ZOSFS_LOCAL_CRASH_CHILD_DIR";
const ROUND_ENV: &str = "ZOSFS_LOCAL_CRASH_ROUND";
const TEST_NAME: &str = "kill9_during_concurrent_puts_loses_nothing_acknowledged";

fn blob_for(seed: u64) -> Bytes {
    // 1 KiB .. ~300 KiB, incompressible.
    let len = 1024 + (seed.wrapping_mul(2_654_435_761) % (300 << 10)) as usize;
    Bytes::from(blobs::random_bytes(seed, len))
}

fn store_opts() -> OpenOptions {
    // Small segments: the child rolls segments while it is killed too.
    OpenOptions { engine: EngineChoice::Uring, segment_size: Some(4 << 20), ..Default::default() }
}

/// The child: 32 writers putting forever, printing "ack SEED" after each Ok.
fn child(dir: &str) -> ! {
    let round: u64 = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    rt.block_on(async {
        let store = Arc::new(LocalStore::open(std::path::Path::new(dir), &store_opts()).unwrap());
        let mut tasks = Vec::new();
        for t in 0..32u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let seed = round * 1_000_000_000 + t * 1_000_000 + i;
                    let b = blob_for(seed);
                    store.put(&ChunkId::of_blob(&b), b).await.unwrap();
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {seed}").unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        futures::future::join_all(tasks).await;
    });
    unreachable!("writers never stop");
}

#[test]
fn kill9_during_concurrent_puts_loses_nothing_acknowledged() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut total_acked = 0;
    let mut truncated = 0;
    for round in 0..3u64 {
        let acked = run_child_and_kill(dir.path(), round, 150 + round as usize * 100);
        total_acked += acked.len();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
        rt.block_on(async {
            let store = LocalStore::open(dir.path(), &store_opts()).unwrap();
            let rep = store.open_report();
            truncated += rep.truncated_bytes;
            eprintln!("round {round}: {} acked; open: {rep:?}", acked.len());
            assert!(rep.quarantined.is_empty(), "{rep:?}");
            for seed in &acked {
                let b = blob_for(*seed);
                let id = ChunkId::of_blob(&b);
                let got = store.get(&id).await.unwrap();
                assert_eq!(got.as_ref(), Some(&b), "acknowledged put {seed} lost or damaged");
            }
            // Nothing torn is served: every indexed chunk reads back whole.
            for id in store.ids() {
                let b = store.get(&id).await.unwrap().unwrap();
                assert_eq!(ChunkId::of_blob(&b), id);
            }
            let f = store.fsck(&FsckOptions { verify_ids: true }).await.unwrap();
            assert!(f.is_clean(), "{f:?}");
            assert_eq!(f.damaged_bytes + f.bad_dead, 0, "{f:?}");
        });
    }
    eprintln!("{total_acked} acknowledged puts checked; {truncated} torn-tail bytes cut");
}

/// Start the child on `dir`, wait for `min_acks` acknowledgements, kill -9
/// it, and return every seed it acknowledged (complete lines only).
fn run_child_and_kill(dir: &std::path::Path, round: u64, min_acks: usize) -> Vec<u64> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env(ROUND_ENV, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let mut child = Kill(child);
    let acks = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let acks = acks.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    // A line cut by the kill has no newline: not an ack.
                    Ok(_) if line.last() != Some(&b'\n') => return,
                    Ok(_) => {}
                }
                let s = String::from_utf8_lossy(&line);
                if let Some(seed) = s.trim().strip_prefix("ack ") {
                    acks.lock().unwrap().push(seed.parse::<u64>().unwrap());
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while acks.lock().unwrap().len() < min_acks {
        assert!(Instant::now() < deadline, "child acknowledged too few puts in time");
        if let Some(st) = child.0.try_wait().unwrap() {
            panic!("child exited early: {st}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // SIGKILL while puts are in flight.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    reader.join().unwrap();
    std::mem::take(&mut *acks.lock().unwrap())
}
