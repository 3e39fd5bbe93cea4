//! An image device (a file of an flist, chunks in a `chunkstore serve`
//! replica) against the source image it was packed from: `nbdinfo --map`
//! in both contexts before and after the fill, `qemu-img info`, `compare`
//! and `convert` against the source, and a read-only export of the same
//! image.

use std::process::Command;
use std::time::Duration;

use anyhow::{Result, ensure};
use zosfs_tests::nbd::{NbdServer, Replica, disk_image, nbdsh, pack, run, run_text, stat};
use zosfs_tests::wait_for;

const MIB: u64 = 1 << 20;

/// `nbdinfo --map[=CTX] URI` as (offset, length, type) rows.
fn map(ctx: &str, uri: &str) -> Result<Vec<(u64, u64, u32)>> {
    let arg = if ctx.is_empty() { "--map".to_string() } else { format!("--map={ctx}") };
    let text = run_text(Command::new("nbdinfo").arg(arg).arg(uri))?;
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            ensure!(f.len() >= 3, "map line {l:?}");
            Ok((f[0].parse()?, f[1].parse()?, f[2].parse()?))
        })
        .collect()
}

/// Rows of a map given as (start MiB, length MiB, type).
fn rows(r: &[(u64, u64, u32)]) -> Vec<(u64, u64, u32)> {
    r.iter().map(|&(o, l, t)| (o * MIB, l * MIB, t)).collect()
}

#[test]
fn image_device_against_its_source() -> Result<()> {
    let t = tempfile::tempdir()?;
    let replica = Replica::start(&t.path().join("zdb"))?;
    // 32 MiB in 1 MiB chunks: data in chunks 0-7, 20 and 31 (its last
    // 4 KiB only), zeros elsewhere.
    let data = [(0, (8 * MIB) as usize), (20 * MIB, MIB as usize), (32 * MIB - 4096, 4096)];
    let src = disk_image(&t.path().join("img"), 32 * MIB, &data)?;
    let flist = t.path().join("img.flist");
    pack(&t.path().join("img"), &replica.url(), &flist)?;
    let cache = t.path().join("cache");
    let spec = format!("vm={}:/disk.raw", flist.display());
    let ro = format!("vmro={}:/disk.raw", flist.display());
    let srv = NbdServer::start(
        &cache,
        &["--store", &replica.url(), "--export", &spec, "--export-ro", &ro],
    )?;
    let uri = srv.uri("vm");

    // Before any read: zero chunks are holes that read as zeros and are
    // local; data chunks are data (never HOLE for bytes not fetched yet)
    // and not local.
    let alloc = rows(&[(0, 8, 0), (8, 12, 3), (20, 1, 0), (21, 10, 3), (31, 1, 0)]);
    ensure!(map("", &uri)? == alloc, "base:allocation before the fill: {:?}", map("", &uri)?);
    let cold = rows(&[(0, 8, 0), (8, 12, 1), (20, 1, 0), (21, 10, 1), (31, 1, 0)]);
    let got = map("zosfs:cached", &uri)?;
    ensure!(got == cold, "zosfs:cached before the fill: {got:?}");
    ensure!(stat(&cache, "vm", "fetched_chunks_total")? == 0, "mapping fetched chunks");

    let info = run_text(Command::new("qemu-img").args(["info", "--output=json", &uri]))?;
    ensure!(info.contains(&format!("\"virtual-size\": {}", 32 * MIB)), "qemu-img info:\n{info}");

    // The export equals the image it was packed from.
    let cmp = run_text(
        Command::new("qemu-img").args(["compare", "-f", "raw", "-F", "raw"]).arg(&src).arg(&uri),
    )?;
    ensure!(cmp.contains("Images are identical"), "{cmp}");
    ensure!(stat(&cache, "vm", "fetched_chunks_total")? == 10, "data chunks fetched != 10");
    // Filled: the allocation map is unchanged, everything is local now.
    ensure!(map("", &uri)? == alloc, "base:allocation changed by reading");
    // A fill hands its bytes to the reader before its state is durable,
    // so the last chunks become local a moment after the reads return.
    let local = rows(&[(0, 32, 1)]);
    wait_for("every chunk local after the reads", Duration::from_secs(30), || {
        Ok((map("zosfs:cached", &uri)? == local).then_some(()))
    })?;

    // Out of the export into a file: the same bytes, without a new fetch.
    let out = t.path().join("out.img");
    run(Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "raw", &uri]).arg(&out))?;
    run(Command::new("cmp").arg(&src).arg(&out))?;
    ensure!(stat(&cache, "vm", "fetched_chunks_total")? == 10, "a warm convert fetched");
    // Warm reads over 128 KiB go out by sendfile, with simple and with
    // structured replies, and carry the same bytes.
    let before = stat(&cache, "vm", "zero_copy_reads_total")?;
    for structured in ["true", "false"] {
        let copy = t.path().join(format!("copy-{structured}.img"));
        let script = format!(
            "h.set_request_structured_replies({s})\nh.connect_uri('{uri}')\n\
             open('{out}', 'wb').write(b''.join(h.pread(1 << 20, o) for o in range(0, {size}, 1 << 20)))",
            s = if structured == "true" { "True" } else { "False" },
            out = copy.display(),
            size = 32 * MIB,
        );
        run(nbdsh().args(["-c", &script]))?;
        run(Command::new("cmp").arg(&src).arg(&copy))?;
    }
    let sent = stat(&cache, "vm", "zero_copy_reads_total")? - before;
    ensure!(sent > 0, "no 1 MiB warm read went out by sendfile");

    // A difference written to the device is seen by compare (exit 1),
    // and the source flist's read-only export still matches the source.
    run(Command::new("qemu-io").args(["-f", "raw", &uri, "-c", "write -P 0x5a 9M 512"]))?;
    let st = Command::new("qemu-img")
        .args(["compare", "-q", "-f", "raw", "-F", "raw"])
        .arg(&src)
        .arg(&uri)
        .status()?;
    ensure!(st.code() == Some(1), "qemu-img compare missed a difference: {st}");
    let ro_uri = srv.uri("vmro");
    let cmp = run_text(
        Command::new("qemu-img").args(["compare", "-f", "raw", "-F", "raw"]).arg(&src).arg(&ro_uri),
    )?;
    ensure!(cmp.contains("Images are identical"), "read-only export: {cmp}");
    let w = Command::new("qemu-io").args(["-f", "raw", &ro_uri, "-c", "write 0 4k"]).output()?;
    let text = String::from_utf8_lossy(&w.stdout).to_string() + &String::from_utf8_lossy(&w.stderr);
    ensure!(!w.status.success() || text.contains("failed"), "write to ro export: {text}");
    Ok(())
}
