//! `chunkstore bench --only lazy` runs end to end on a small image and
//! prints every figure with its peers (the figures themselves are not
//! asserted: benchmarks are not timed tests).

use std::process::Command;

#[test]
fn bench_lazy_prints_figures_and_peers() {
    let out = Command::new(env!("CARGO_BIN_EXE_chunkstore"))
        .args(["bench", "--only", "lazy", "--lazy-size-mib", "8", "--lazy-chunk-kib", "256"])
        .args(["--lazy-latency-ms", "2", "--lazy-engine", "sync"])
        .output()
        .expect("run chunkstore");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "8 MiB image, 256 KiB chunks, 2 ms per fetch",
        "engine pread/pwrite",
        "cold sequential, read-ahead 16, depth 16",
        "peer: cold sequential, no read-ahead, depth 1",
        "peer: fill_all",
        "peer: warm sequential",
        "peer: plain write + fdatasync",
        "peer: decode only",
        "ratio cold read-ahead / cold one-at-a-time",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    // Each cold run fetched every chunk exactly once (32 chunks).
    let fetches: Vec<&str> = stdout
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("cold sequential") || l.starts_with("peer: cold sequential"))
        .map(|l| l.split_whitespace().rev().nth(2).unwrap())
        .collect();
    assert_eq!(fetches, ["32", "32"], "{stdout}");
}

#[test]
fn bench_lazy_rejects_a_bad_chunk_size() {
    let out = Command::new(env!("CARGO_BIN_EXE_chunkstore"))
        .args(["bench", "--only", "lazy", "--lazy-chunk-kib", "8"])
        .output()
        .expect("run chunkstore");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--lazy-chunk-kib 8 is outside 64..=4096"), "{err}");
}
