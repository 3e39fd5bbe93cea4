//! Lazy fill of an image device from a 0-db replica (`chunkstore serve`):
//! a small read fetches exactly one chunk, a full read fetches every data
//! chunk exactly once, later reads fetch nothing; a background fill makes
//! the device independent of the replica.

use std::process::Command;
use std::time::Duration;

use anyhow::{Result, ensure};
use zosfs_tests::nbd::{NbdServer, Replica, disk_image, pack, run, run_text, stat};
use zosfs_tests::wait_for;

const MIB: u64 = 1 << 20;

#[test]
fn one_gib_image_fetches_each_chunk_once() -> Result<()> {
    let t = tempfile::tempdir()?;
    let replica = Replica::start(&t.path().join("zdb"))?;
    // 1 GiB: 64 MiB of data at the start and 64 MiB at 512 MiB, zeros elsewhere.
    let data = [(0, (64 * MIB) as usize), (512 * MIB, (64 * MIB) as usize)];
    let src = disk_image(&t.path().join("img"), 1024 * MIB, &data)?;
    let flist = t.path().join("img.flist");
    pack(&t.path().join("img"), &replica.url(), &flist)?;

    let cache = t.path().join("cache");
    let spec = format!("vm={}:/disk.raw", flist.display());
    let srv = NbdServer::start(&cache, &["--store", &replica.url(), "--export", &spec])?;
    let uri = srv.uri("vm");
    ensure!(stat(&cache, "vm", "fetched_chunks_total")? == 0, "fetched before any read");
    // Zero chunks are known from the flist: they never need a fetch, and
    // the chunk counts agree with the fill figure.
    ensure!(stat(&cache, "vm", "local_bytes")? == 896 * MIB, "zero chunks not local");
    ensure!(stat(&cache, "vm", "chunks_zero")? == 896, "zero chunks of the image");
    ensure!(stat(&cache, "vm", "chunks_absent")? == 128, "only data chunks need a fetch");

    // 4 KiB inside the second data range: one chunk.
    let out =
        run_text(Command::new("qemu-io").args(["-f", "raw", &uri, "-c", "read 537931776 4k"]))?;
    ensure!(!out.contains("failed"), "{out}");
    ensure!(
        stat(&cache, "vm", "fetched_chunks_total")? == 1,
        "a 4 KiB read fetched more than one chunk"
    );

    // A full read: every data chunk once (128 of them), the content exact.
    let copy = t.path().join("copy.img");
    run(Command::new("nbdcopy").args(["--connections=4", &uri]).arg(&copy))?;
    run(Command::new("cmp").arg(&src).arg(&copy))?;
    ensure!(stat(&cache, "vm", "fetched_chunks_total")? == 128, "data chunks fetched != 128");
    ensure!(stat(&cache, "vm", "fetched_bytes_total")? == 128 * MIB);
    ensure!(stat(&cache, "vm", "fill_permille")? == 1000, "not fully local after a full read");

    // Every later read is local.
    let hits = stat(&cache, "vm", "hits_total")?;
    run(Command::new("nbdcopy").args([&uri, "null:"]))?;
    ensure!(stat(&cache, "vm", "fetched_chunks_total")? == 128, "a warm read fetched");
    ensure!(stat(&cache, "vm", "hits_total")? > hits, "warm reads not counted as hits");
    std::fs::remove_file(&copy)?;
    Ok(())
}

#[test]
fn background_fill_then_replica_down() -> Result<()> {
    let t = tempfile::tempdir()?;
    let mut replica = Replica::start(&t.path().join("zdb"))?;
    let src = disk_image(&t.path().join("img"), 48 * MIB, &[(0, (40 * MIB) as usize)])?;
    let flist = t.path().join("img.flist");
    pack(&t.path().join("img"), &replica.url(), &flist)?;
    let cache = t.path().join("cache");
    let spec = format!("vm={}:/disk.raw", flist.display());
    let _srv = NbdServer::start(
        &cache,
        &[
            "--store",
            &replica.url(),
            "--fill",
            "background",
            "--fill-bandwidth",
            "400M",
            "--export",
            &spec,
        ],
    )?;
    wait_for("background fill to finish", Duration::from_secs(120), || {
        Ok((stat(&cache, "vm", "fill_permille")? == 1000).then_some(()))
    })?;
    ensure!(stat(&cache, "vm", "fetched_chunks_total")? == 40);
    ensure!(stat(&cache, "vm", "prefetched_total")? == 40, "fill was not the background prefetch");
    replica.kill9();
    let copy = t.path().join("copy.img");
    run(Command::new("nbdcopy").args([&_srv.uri("vm")]).arg(&copy))?;
    run(Command::new("cmp").arg(&src).arg(&copy))?;
    Ok(())
}

/// A blank disk is all zero chunks, none absent, and fully "filled".
#[test]
fn a_blank_disk_counts_zero_chunks_not_absent_ones() -> Result<()> {
    let t = tempfile::tempdir()?;
    let cache = t.path().join("cache");
    let _srv = NbdServer::start(&cache, &["--export", "blank=blank:64M"])?;
    let chunks = stat(&cache, "blank", "chunks")?;
    ensure!(chunks > 0);
    ensure!(stat(&cache, "blank", "chunks_zero")? == chunks, "blank chunks read as zeros");
    ensure!(stat(&cache, "blank", "chunks_absent")? == 0, "nothing to fetch on a blank disk");
    ensure!(stat(&cache, "blank", "fill_permille")? == 1000);
    Ok(())
}
