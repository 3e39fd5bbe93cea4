//! The round trip of the flist issue, on a real filesystem as root: a tree
//! with every file type, hardlinks, xattrs (security.capability too),
//! sparse, empty and 100 MiB files and odd names → `flist pack` → `flist
//! unpack` → identical by `diff -r`, stat of every entry and getfattr.
//! Then the same through a tar stream, and determinism of a second pack.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, ensure};
use zosfs_tests::flist::{TreeSpec, compare_trees, dir_url, flist, make_tree, run, store_count};

fn content_digest(cache: &std::path::Path, f: &std::path::Path) -> Result<String> {
    let out = run(flist(cache).arg("inspect").arg(f))?;
    let text = String::from_utf8(out.stdout)?;
    text.lines()
        .find_map(|l| l.strip_prefix("content:").map(|d| d.trim().to_string()))
        .context("inspect prints a content digest")
}

#[test]
fn directory_round_trip_is_exact_and_packing_is_deterministic() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (src, dest, store, cache) = (
        tmp.path().join("src"),
        tmp.path().join("dest"),
        tmp.path().join("store"),
        tmp.path().join("cache"),
    );
    std::fs::create_dir(&src)?;
    make_tree(&src, &TreeSpec { big: 100 << 20, socket: true })?;

    let f1 = tmp.path().join("one.flist");
    run(flist(&cache)
        .args(["pack", "--no-progress", "-o"])
        .arg(&f1)
        .args(["--store", &dir_url(&store)])
        .arg(&src))?;
    let chunks_after_first = store_count(&store)?;
    ensure!(chunks_after_first > 0, "pack stored no chunk");

    run(flist(&cache)
        .args(["unpack", "--same-root-perms"])
        .arg(&f1)
        .args(["--store", &dir_url(&store)])
        .arg(&dest))?;
    compare_trees(&src, &dest, &[])?;
    // The comparison itself must see a one-bit difference in metadata.
    let fifo = dest.join("fifo");
    std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o644))?;
    ensure!(compare_trees(&src, &dest, &[]).is_err(), "compare_trees missed a mode change");
    std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o640))?;

    // Sparse files come back sparse.
    let (s, d) =
        (std::fs::metadata(src.join("sparse.img"))?, std::fs::metadata(dest.join("sparse.img"))?);
    ensure!(
        d.blocks() <= s.blocks() + 2048,
        "sparse.img lost its holes: {} vs {} blocks",
        d.blocks(),
        s.blocks()
    );

    // Packing the same tree again: same content, nothing new uploaded.
    let f2 = tmp.path().join("two.flist");
    let out = run(flist(&cache)
        .args(["pack", "--no-progress", "-o"])
        .arg(&f2)
        .args(["--store", &dir_url(&store)])
        .arg(&src))?;
    let msg = String::from_utf8_lossy(&out.stderr);
    ensure!(msg.contains(" 0 uploaded"), "second pack uploaded chunks: {msg}");
    ensure!(store_count(&store)? == chunks_after_first, "second pack added chunks to the store");
    ensure!(
        content_digest(&cache, &f1)? == content_digest(&cache, &f2)?,
        "two packs of one tree differ"
    );
    Ok(())
}

#[test]
fn tar_stream_round_trip_is_exact() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (src, dest, store, cache) = (
        tmp.path().join("src"),
        tmp.path().join("dest"),
        tmp.path().join("store"),
        tmp.path().join("cache"),
    );
    std::fs::create_dir(&src)?;
    // tar cannot carry sockets; a smaller big file keeps this test quick.
    make_tree(&src, &TreeSpec { big: 20 << 20, socket: false })?;

    let f = tmp.path().join("tar.flist");
    let mut tar = Command::new("tar")
        .args([
            "--format=posix",
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "-cpf",
            "-",
            "-C",
        ])
        .arg(&src)
        .arg(".")
        .stdout(Stdio::piped())
        .spawn()
        .context("run tar")?;
    let tar_out = tar.stdout.take().context("tar stdout")?;
    let pack = flist(&cache)
        .args(["pack", "--no-progress", "-o"])
        .arg(&f)
        .args(["--store", &dir_url(&store), "-"])
        .stdin(Stdio::from(tar_out))
        .output()?;
    ensure!(tar.wait()?.success(), "tar failed");
    ensure!(
        pack.status.success(),
        "pack from tar stream: {}",
        String::from_utf8_lossy(&pack.stderr)
    );

    run(flist(&cache)
        .args(["unpack", "--same-root-perms"])
        .arg(&f)
        .args(["--store", &dir_url(&store)])
        .arg(&dest))?;
    compare_trees(&src, &dest, &[])?;
    Ok(())
}

/// A chunk the first replica already has must still reach a second replica
/// that lacks it: packing again with one more store fills that store.
#[test]
fn packing_again_with_a_new_replica_uploads_to_it() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (src, a, b, cache) = (
        tmp.path().join("src"),
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("cache"),
    );
    std::fs::create_dir(&src)?;
    for i in 0..5u64 {
        std::fs::write(src.join(format!("f{i}")), zosfs_tests::flist::noise(2 * i + 1, 300_000))?;
    }
    let out = tmp.path().join("t.flist");
    run(flist(&cache).arg("pack").arg("-o").arg(&out).args(["--store", &dir_url(&a)]).arg(&src))?;
    let in_a = store_count(&a)?;
    ensure!(in_a == 5, "first pack stored {in_a} chunks");

    run(flist(&cache)
        .arg("pack")
        .arg("-o")
        .arg(&out)
        .args(["--store", &dir_url(&a), "--store", &dir_url(&b)])
        .arg(&src))?;
    ensure!(store_count(&b)? == in_a, "the new replica got {} of {in_a} chunks", store_count(&b)?);
    run(flist(&cache).arg("verify").arg(&out).args(["--store", &dir_url(&b)]))?;
    Ok(())
}
