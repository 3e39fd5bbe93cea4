//! Faults: SIGKILL of the server during a write workload (everything
//! acknowledged by FLUSH or FUA must read back after a restart), and a
//! replica that goes away mid-read (EIO for that request only; the device
//! recovers when the replica returns).

use std::time::Duration;

use anyhow::{Result, ensure};
use zosfs_tests::nbd::{NbdServer, Replica, disk_image, nbdsh_script, pack, run_text, stat};
use zosfs_tests::{ChildGuard, wait_for};

const MIB: u64 = 1 << 20;

/// Writes 64 KiB slots in a random order (each slot once), every one with a
/// pattern derived from its seed; FUA on some writes, FLUSH every 8 writes.
/// A slot goes into the log (fsynced) only once a FLUSH or its FUA has
/// been acknowledged.
const WRITER: &str = r#"
import nbd, os, random, sys
uri, log_path = sys.argv[1], sys.argv[2]
h = nbd.NBD()
h.connect_uri(uri)
slots = list(range(h.get_size() // 65536))
random.Random(7).shuffle(slots)
log = open(log_path, "a")
pending = []
def record(entries):
    for slot, seed in entries:
        log.write("%d %d\n" % (slot, seed))
    log.flush()
    os.fsync(log.fileno())
for n, slot in enumerate(slots):
    seed = slot * 7919 + 1
    data = random.Random(seed).randbytes(65536)
    if n % 4 == 3:
        h.pwrite(data, slot * 65536, flags=nbd.CMD_FLAG_FUA)
        record([(slot, seed)])
    else:
        h.pwrite(data, slot * 65536)
        pending.append((slot, seed))
    if len(pending) >= 8:
        h.flush()
        record(pending)
        pending = []
"#;

/// Reads back every logged slot; prints how many matched.
const VERIFIER: &str = r#"
import nbd, random, sys
uri, log_path = sys.argv[1], sys.argv[2]
h = nbd.NBD()
h.connect_uri(uri)
n = 0
for line in open(log_path):
    parts = line.split()
    if len(parts) != 2:
        continue  # a torn last line: never acknowledged as written to the log
    slot, seed = int(parts[0]), int(parts[1])
    want = random.Random(seed).randbytes(65536)
    got = h.pread(65536, slot * 65536)
    assert got == want, "slot %d lost its acknowledged write" % slot
    n += 1
print("verified", n)
"#;

fn log_lines(p: &std::path::Path) -> usize {
    std::fs::read_to_string(p).map(|s| s.lines().count()).unwrap_or(0)
}

#[test]
fn kill9_during_writes_keeps_everything_acknowledged() -> Result<()> {
    let t = tempfile::tempdir()?;
    let mut srv = NbdServer::start(&t.path().join("cache"), &["--export", "d=blank:256M"])?;
    let log = t.path().join("acked.log");
    let uri = srv.uri("d");
    let log_s = log.display().to_string();
    let mut cmd = nbdsh_script(t.path(), "writer.py", WRITER, &[&uri, &log_s]);
    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut writer = ChildGuard::spawn(cmd, "nbdsh writer")?;
    // Let it get well into the workload, then crash the server under it.
    wait_for("300 acknowledged writes", Duration::from_secs(120), || {
        Ok((log_lines(&log) >= 300).then_some(()))
    })?;
    srv.kill9();
    let st = wait_for("the writer to notice", Duration::from_secs(30), || {
        Ok(writer.child.try_wait()?)
    })?;
    ensure!(!st.success(), "the writer finished before the crash; nothing was tested");
    let acked = log_lines(&log);

    srv.restart()?;
    let out = run_text(&mut nbdsh_script(t.path(), "verify.py", VERIFIER, &[&uri, &log_s]))?;
    ensure!(out.contains(&format!("verified {acked}")), "verifier: {out} (log has {acked})");
    srv.stop()
}

const EIO_CHECK: &str = r#"
import errno, nbd, sys
uri, what = sys.argv[1], sys.argv[2]
h = nbd.NBD()
h.connect_uri(uri)
if what == "down":
    # A chunk fetched before the replica died is local: still readable.
    assert len(h.pread(4096, 3 << 20)) == 4096
    try:
        h.pread(4096, 14 << 20)
        raise SystemExit("read of an unfetched chunk succeeded with the replica down")
    except nbd.Error as e:
        # libnbd gives the errno name (older releases: the number).
        assert e.errno in ("EIO", errno.EIO), "errno %r" % (e.errno,)
    # The connection survives the failed request.
    assert len(h.pread(4096, (3 << 20) + 4096)) == 4096
    print("eio-ok")
else:
    print("read", len(h.pread(4096, 14 << 20)))
"#;

#[test]
fn replica_down_is_eio_for_that_request_only() -> Result<()> {
    let t = tempfile::tempdir()?;
    let mut replica = Replica::start(&t.path().join("zdb"))?;
    disk_image(&t.path().join("img"), 16 * MIB, &[(0, (16 * MIB) as usize)])?;
    let flist = t.path().join("img.flist");
    pack(&t.path().join("img"), &replica.url(), &flist)?;
    let spec = format!("vm={}:/disk.raw", flist.display());
    // Reads wait 2 s for the store to come back before they fail.
    let cache = t.path().join("cache");
    let args = ["--store", &replica.url(), "--export", &spec, "--outage-wait", "2"];
    let srv = NbdServer::start(&cache, &args)?;
    let uri = srv.uri("vm");
    // Warm chunk 3 only: a read that does not start at 0 nor continue an
    // earlier one triggers no read-ahead, so chunk 14 stays absent.
    run_text(std::process::Command::new("qemu-io").args(["-f", "raw", &uri, "-c", "read 3M 8k"]))?;

    replica.kill9();
    let down = run_text(&mut nbdsh_script(t.path(), "c.py", EIO_CHECK, &[&uri, "down"]))?;
    ensure!(down.contains("eio-ok"), "{down}");
    ensure!(stat(&cache, "vm", "outage_waits_total")? == 1, "the failed read waited first");

    replica.restart()?;
    wait_for("reads to recover", Duration::from_secs(60), || {
        let out = nbdsh_script(t.path(), "c.py", EIO_CHECK, &[&uri, "up"]).output()?;
        Ok(String::from_utf8_lossy(&out.stdout).contains("read 4096").then_some(()))
    })?;
    Ok(())
}

/// A store outage shorter than `--outage-wait` is a pause: a read of a
/// chunk not yet local, made while the only replica is down, completes
/// with the right data once it is back.
#[test]
fn a_read_during_a_store_outage_completes_when_the_store_returns() -> Result<()> {
    let t = tempfile::tempdir()?;
    let mut replica = Replica::start(&t.path().join("zdb"))?;
    let img = disk_image(&t.path().join("img"), 16 * MIB, &[(0, (16 * MIB) as usize)])?;
    let flist = t.path().join("img.flist");
    pack(&t.path().join("img"), &replica.url(), &flist)?;
    let spec = format!("vm={}:/disk.raw", flist.display());
    let cache = t.path().join("cache");
    let srv = NbdServer::start(&cache, &["--store", &replica.url(), "--export", &spec])?;
    let uri = srv.uri("vm");

    replica.kill9();
    let copy = t.path().join("chunk14");
    let reader = {
        let (uri, copy) = (uri.clone(), copy.clone());
        std::thread::spawn(move || {
            run_text(std::process::Command::new("qemu-io").args([
                "-f",
                "raw",
                &uri,
                "-c",
                &format!("read -v {} 64", 14 * MIB + 100),
            ]))
            .map(|out| std::fs::write(&copy, out))
        })
    };
    // The read is waiting for the store (not failed): then the store returns.
    wait_for("the read to wait for the store", Duration::from_secs(60), || {
        Ok((stat(&cache, "vm", "outage_waits_total")? == 1).then_some(()))
    })?;
    replica.restart()?;
    reader.join().expect("reader thread")??;
    let out = std::fs::read_to_string(&copy)?;
    ensure!(!out.contains("failed"), "the read failed: {out}");
    let want = &std::fs::read(&img)?[(14 * MIB + 100) as usize..][..64];
    let hex: String = want[..16].iter().map(|b| format!("{b:02x} ")).collect();
    ensure!(out.contains(hex.trim_end()), "read gave other bytes than the image:\n{out}");
    ensure!(stat(&cache, "vm", "fetch_errors_total")? == 0, "no fetch failed");
    Ok(())
}
