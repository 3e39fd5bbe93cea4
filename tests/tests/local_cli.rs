//! `chunkstore stat | fsck | gc | bench` on a real local store.

use std::process::{Command, Output};

use zosfs_tests::bin;

fn chunkstore(args: &[&str]) -> Output {
    Command::new(bin("chunkstore")).args(args).output().expect("run chunkstore")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Deterministic incompressible bytes.
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x1234_5678_9abc_def1u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn stat_fsck_gc_on_a_local_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("local://{}", dir.path().join("store").display());
    let input = dir.path().join("input");
    std::fs::write(&input, noise(5 << 20)).unwrap();

    let put = chunkstore(&["put", "--store", &url, "--level", "0", input.to_str().unwrap()]);
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    assert_eq!(stdout(&put).lines().count(), 5);

    let st = chunkstore(&["stat", "--store", &url]);
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let text = stdout(&st);
    assert!(text.contains("chunks          5"), "{text}");
    assert!(text.contains("engine          io_uring"), "{text}");
    let st = chunkstore(&["stat", "--store", &url, "--engine", "sync"]);
    assert!(stdout(&st).contains("engine          pread/pwrite"), "{}", stdout(&st));

    let ok = chunkstore(&["fsck", "--store", &url, "--verify-ids"]);
    assert!(ok.status.success(), "{}{}", stdout(&ok), String::from_utf8_lossy(&ok.stderr));
    assert!(stdout(&ok).contains("clean"));

    // Rot one byte in the middle of the first segment: fsck quarantines and fails.
    let seg = dir.path().join("store").join("00000001.seg");
    let mut data = std::fs::read(&seg).unwrap();
    data[3 << 20] ^= 0x01;
    std::fs::write(&seg, &data).unwrap();
    let bad = chunkstore(&["fsck", "--store", &url]);
    assert_eq!(bad.status.code(), Some(1), "{}", stdout(&bad));
    assert!(stdout(&bad).contains("quarantined:"), "{}", stdout(&bad));
    let again = chunkstore(&["fsck", "--store", &url]);
    assert!(again.status.success(), "{}", stdout(&again));

    // The quarantined chunk's record is now dead: gc gives its space back.
    let gc = chunkstore(&["gc", "--store", &url]);
    assert!(gc.status.success(), "{}", String::from_utf8_lossy(&gc.stderr));
    assert!(stdout(&gc).contains("segments compacted  1"), "{}", stdout(&gc));
    let st = chunkstore(&["stat", "--store", &url]);
    assert!(stdout(&st).contains("chunks          4"), "{}", stdout(&st));

    // Not a local store: a clear error, not a panic.
    let wrong = chunkstore(&["fsck", "--store", "dir:///tmp/x"]);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("not a local:// store"));
}

#[test]
fn bench_local_part_prints_ratios_and_index_size() {
    let dir = tempfile::tempdir().unwrap();
    let o = chunkstore(&[
        "bench",
        "--only",
        "local",
        "--dir",
        dir.path().to_str().unwrap(),
        "--chunks",
        "4",
        "--rounds",
        "1",
        "--open-records",
        "3000",
    ]);
    let text = stdout(&o);
    assert!(o.status.success(), "{text}{}", String::from_utf8_lossy(&o.stderr));
    for want in ["uring/sync    put", "open by snapshot", "open by replay", "B/chunk"] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    // The bench cleans up after itself.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
