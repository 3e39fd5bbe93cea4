//! nbdserver against real user-space NBD clients: nbdinfo, qemu-img,
//! qemu-io, nbdcopy (multi-conn) and nbdsh (libnbd, structured replies on
//! and off).

use std::process::Command;

use anyhow::{Result, ensure};
use zosfs_tests::nbd::{NbdServer, nbdsh, pattern, run, run_text};

const MIB: u64 = 1 << 20;

fn start(dir: &std::path::Path) -> Result<NbdServer> {
    NbdServer::start(
        &dir.join("cache"),
        &["--export", "disk=blank:64M", "--export-ro", "ro=blank:16M", "--export", "big=blank:1T"],
    )
}

/// `nbdinfo --can/--is`: exit 0 is true, 2 is false, anything else fails.
fn nbdinfo_flag(flag: &str, what: &str, uri: &str) -> Result<bool> {
    let st = Command::new("nbdinfo").arg(flag).arg(what).arg(uri).status()?;
    match st.code() {
        Some(0) => Ok(true),
        Some(2) => Ok(false),
        _ => anyhow::bail!("nbdinfo {flag} {what} {uri}: {st}"),
    }
}

/// A raw image with data, a hole and a zero-filled stretch.
fn source_image(path: &std::path::Path, size: u64) -> Result<Vec<u8>> {
    let mut img = vec![0u8; size as usize];
    img[..(8 * MIB) as usize].copy_from_slice(&pattern(1, (8 * MIB) as usize));
    let at = (20 * MIB) as usize;
    img[at..at + MIB as usize].copy_from_slice(&pattern(2, MIB as usize));
    let tail = img.len() - 4096;
    img[tail..].copy_from_slice(&pattern(3, 4096));
    std::fs::write(path, &img)?;
    Ok(img)
}

#[test]
fn nbdinfo_list_can_and_map() -> Result<()> {
    let t = tempfile::tempdir()?;
    let srv = start(t.path())?;
    let list = run_text(Command::new("nbdinfo").args(["--list", "--json"]).arg(srv.uri("")))?;
    for needle in [
        "\"export-name\": \"disk\"",
        "\"export-name\": \"ro\"",
        "\"export-name\": \"big\"",
        "\"export-size\": 67108864",
        "\"export-size\": 1099511627776",
        "\"base:allocation\"",
        "\"zosfs:cached\"",
        "\"block_size_preferred\": 1048576",
        "\"structured\": true",
    ] {
        ensure!(list.contains(needle), "nbdinfo --list lacks {needle}:\n{list}");
    }

    let disk = srv.uri("disk");
    for what in ["flush", "fua", "trim", "zero", "fast-zero", "cache", "multi-conn", "df", "write"]
    {
        ensure!(nbdinfo_flag("--can", what, &disk)?, "disk cannot {what}");
    }
    let ro = srv.uri("ro");
    ensure!(nbdinfo_flag("--is", "read-only", &ro)?, "ro is not read-only");
    for what in ["write", "trim", "zero"] {
        ensure!(!nbdinfo_flag("--can", what, &ro)?, "ro claims it can {what}");
    }
    ensure!(nbdinfo_flag("--can", "multi-conn", &ro)?);

    // Write 64 KiB at 1 MiB, then map both contexts: state is kept per
    // 1 MiB chunk, so the written chunk is data and the rest reads as zeros.
    run(Command::new("qemu-io").args(["-f", "raw", &disk, "-c", "write -P 0xab 1M 64k"]))?;
    let map = run_text(Command::new("nbdinfo").arg("--map").arg(&disk))?;
    let rows: Vec<Vec<&str>> = map.lines().map(|l| l.split_whitespace().collect()).collect();
    let expect = [["0", "1048576", "3"], ["1048576", "1048576", "0"], ["2097152", "65011712", "3"]];
    ensure!(rows.len() == 3, "unexpected map:\n{map}");
    for (row, want) in rows.iter().zip(expect) {
        ensure!(row[..3] == want, "map row {row:?}, expected {want:?}:\n{map}");
    }
    let cached = run_text(Command::new("nbdinfo").arg("--map=zosfs:cached").arg(&disk))?;
    let row: Vec<&str> = cached.split_whitespace().collect();
    ensure!(row[..3] == ["0", "67108864", "1"], "zosfs:cached map:\n{cached}");
    // The 1 TiB thin device maps as one hole without allocating anything.
    let big = run_text(Command::new("nbdinfo").arg("--map").arg(srv.uri("big")))?;
    ensure!(big.split_whitespace().take(3).collect::<Vec<_>>() == ["0", "1099511627776", "3"]);
    Ok(())
}

#[test]
fn qemu_img_convert_compare_info() -> Result<()> {
    let t = tempfile::tempdir()?;
    let srv = start(t.path())?;
    let disk = srv.uri("disk");
    let src = t.path().join("src.img");
    let img = source_image(&src, 64 * MIB)?;
    let info = run_text(Command::new("qemu-img").args(["info", "--output=json", &disk]))?;
    ensure!(info.contains("\"virtual-size\": 67108864"), "qemu-img info:\n{info}");

    run(Command::new("qemu-img")
        .args(["convert", "-n", "-f", "raw", "-O", "raw"])
        .arg(&src)
        .arg(&disk))?;
    let cmp = run_text(
        Command::new("qemu-img").args(["compare", "-f", "raw", "-F", "raw"]).arg(&src).arg(&disk),
    )?;
    ensure!(cmp.contains("Images are identical"), "{cmp}");

    // And back out of the export into a file.
    let out = t.path().join("out.img");
    run(Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "raw", &disk]).arg(&out))?;
    ensure!(std::fs::read(&out)? == img, "converted-back image differs");

    // A changed byte is noticed (compare exits 1).
    run(Command::new("qemu-io").args(["-f", "raw", &disk, "-c", "write -P 0x5a 30M 512"]))?;
    let st = Command::new("qemu-img")
        .args(["compare", "-q", "-f", "raw", "-F", "raw"])
        .arg(&src)
        .arg(&disk)
        .status()?;
    ensure!(st.code() == Some(1), "qemu-img compare missed a difference: {st}");
    Ok(())
}

#[test]
fn qemu_io_reads_and_writes() -> Result<()> {
    let t = tempfile::tempdir()?;
    let srv = start(t.path())?;
    let disk = srv.uri("disk");
    let cmds = [
        "write -P 0xab 1M 64k",
        "read -P 0xab 1M 64k",
        "read -P 0 0 4k",
        "write -f -P 0x11 3M 512", // FUA
        "read -P 0x11 3M 512",
        "write -P 0x22 5M 1M",
        "write -z 5M 4k", // WRITE_ZEROES (no hole)
        "read -P 0 5M 4k",
        "read -P 0x22 5246976 1044480",
        "write -z -u 6M 1M", // WRITE_ZEROES allowed to punch
        "read -P 0 6M 1M",
        "discard 1M 64k", // TRIM
        "flush",
        "aio_write -P 0x33 8M 4k", // pipelined
        "aio_write -P 0x44 9M 4k",
        "aio_flush",
        "read -P 0x33 8M 4k",
        "read -P 0x44 9M 4k",
        "read -P 0 63M 1M", // the last MiB
        "write -P 0x7 1 3", // unaligned
        "read -P 0x7 1 3",
    ];
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "raw", &disk]);
    for c in cmds {
        cmd.args(["-c", c]);
    }
    let out = run_text(&mut cmd)?;
    ensure!(!out.contains("failed"), "qemu-io reported a failure:\n{out}");
    // A mismatching pattern must be reported, or the checks above prove nothing.
    let bad =
        Command::new("qemu-io").args(["-f", "raw", &disk, "-c", "read -P 0x99 8M 4k"]).output()?;
    ensure!(
        String::from_utf8_lossy(&bad.stdout).contains("Pattern verification failed"),
        "qemu-io did not notice a wrong pattern"
    );
    // Writes to the read-only export fail.
    let ro =
        Command::new("qemu-io").args(["-f", "raw", &srv.uri("ro"), "-c", "write 0 4k"]).output()?;
    let text =
        String::from_utf8_lossy(&ro.stdout).to_string() + &String::from_utf8_lossy(&ro.stderr);
    ensure!(
        !ro.status.success() || text.contains("failed"),
        "write to ro export succeeded: {text}"
    );
    Ok(())
}

#[test]
fn nbdcopy_both_directions_multi_conn() -> Result<()> {
    let t = tempfile::tempdir()?;
    let srv = start(t.path())?;
    let disk = srv.uri("disk");
    let src = t.path().join("src.img");
    let img = source_image(&src, 64 * MIB)?;
    run(Command::new("nbdcopy")
        .args(["--connections=4", "--requests=16", "--flush"])
        .arg(&src)
        .arg(&disk))?;
    let out = t.path().join("out.img");
    run(Command::new("nbdcopy").args(["--connections=4", "--requests=16", &disk]).arg(&out))?;
    ensure!(std::fs::read(&out)? == img, "image copied through the export differs");
    // nbdcopy kept the holes: the untouched middle maps as a hole.
    let map = run_text(Command::new("nbdinfo").arg("--map").arg(&disk))?;
    ensure!(map.lines().any(|l| l.split_whitespace().nth(2) == Some("3")), "no hole left:\n{map}");
    Ok(())
}

const NBDSH_SCRIPT: &str = r#"
import nbd, sys
uri, sr = sys.argv[1], sys.argv[2] == "1"
h = nbd.NBD()
h.set_request_structured_replies(sr)
if sr:
    h.add_meta_context("base:allocation")
    h.add_meta_context("zosfs:cached")
h.connect_uri(uri)
assert h.get_structured_replies_negotiated() == sr, "structured replies"
buf = bytes(range(256)) * 256
h.pwrite(buf, 40 << 20, flags=nbd.CMD_FLAG_FUA)
assert h.pread(len(buf), 40 << 20) == buf, "read back"
assert h.pread(8192, 60 << 20) == bytes(8192), "hole reads zero"
# Pipelined commands, completed out of order by the server.
for i in range(64):
    h.aio_pwrite(bytes([i]) * 4096, (30 << 20) + i * 4096)
while h.aio_in_flight() > 0:
    h.poll(-1)
for i in range(64):
    assert h.pread(4096, (30 << 20) + i * 4096) == bytes([i]) * 4096, "aio %d" % i
if sr:
    assert h.can_meta_context("base:allocation") and h.can_meta_context("zosfs:cached")
    seen = {}
    def cb(ctx, off, entries, err):
        seen[ctx] = list(entries)
        return 0
    h.block_status(1 << 20, 40 << 20, cb)
    # The written 1 MiB chunk is data; blank chunks are local zeros.
    assert seen["base:allocation"] == [1 << 20, 0], seen
    assert seen["zosfs:cached"] == [1 << 20, 1], seen
    chunks = []
    def chunk(sub, off, status, err):
        chunks.append((off, len(sub), status))
        return 0
    # Across a chunk boundary: the blank chunk comes as an OFFSET_HOLE.
    got = h.pread_structured(3 * 65536, (40 << 20) - 65536, chunk)
    assert got == bytes(65536) + buf + bytes(65536)
    assert sorted(chunks) == [((40 << 20) - 65536, 65536, nbd.READ_HOLE),
                              (40 << 20, 2 * 65536, nbd.READ_DATA)], chunks
    # Don't-fragment: one data chunk even across a hole.
    chunks.clear()
    h.pread_structured(65536, (40 << 20) - 4096, chunk, flags=nbd.CMD_FLAG_DF)
    assert len(chunks) == 1 and chunks[0][2] == nbd.READ_DATA, chunks
    # Errors come back as errors, the connection survives them.
    try:
        h.pread(4096, 64 << 20, flags=0)
        raise AssertionError("read past the end succeeded")
    except nbd.Error as e:
        pass
    h.zero(1 << 20, 40 << 20, flags=nbd.CMD_FLAG_FAST_ZERO)
    assert h.pread(65536, 40 << 20) == bytes(65536)
h.cache(1 << 20, 0)
h.trim(4096, 30 << 20)
h.flush()
h.shutdown()
print("nbdsh-ok")
"#;

#[test]
fn nbdsh_structured_replies_on_and_off() -> Result<()> {
    let t = tempfile::tempdir()?;
    let srv = start(t.path())?;
    let script = t.path().join("check.py");
    std::fs::write(&script, NBDSH_SCRIPT)?;
    for sr in ["0", "1"] {
        let code = format!(
            "import sys; sys.argv = ['check', '{}', '{sr}']; exec(open('{}').read())",
            srv.uri("disk"),
            script.display()
        );
        let out = run_text(nbdsh().arg("-c").arg(code))?;
        ensure!(out.contains("nbdsh-ok"), "structured={sr}: {out}");
    }
    Ok(())
}

#[test]
fn data_survives_sigterm_restart() -> Result<()> {
    let t = tempfile::tempdir()?;
    let mut srv = start(t.path())?;
    let disk = srv.uri("disk");
    run(Command::new("qemu-io").args(["-f", "raw", &disk, "-c", "write -P 0x5c 7M 1M"]))?;
    srv.restart()?;
    let out = run_text(Command::new("qemu-io").args([
        "-f",
        "raw",
        &disk,
        "-c",
        "read -P 0x5c 7M 1M",
        "-c",
        "read -P 0 8M 1M",
    ]))?;
    ensure!(!out.contains("failed"), "{out}");
    srv.stop()
}
