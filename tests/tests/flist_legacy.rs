//! rfs `.fl` compatibility: a fixture written by our own rfs writer (from
//! the published schema and codec) is listed, read, unpacked, verified and
//! converted by the `flist` tool; a missing chunk is a clear error.

use std::path::Path;
use std::process::Command;

use anyhow::{Result, ensure};
use zosfs_store::ChunkStore;
use zosfs_tests::flist::{compare_trees, dir_url, flist, noise, run};

/// A tree rfs can describe: files (several blocks too), dirs, symlinks
/// (no xattrs, no hardlinks: rfs records neither).
fn rfs_tree(root: &Path) -> Result<()> {
    std::fs::create_dir_all(root.join("etc/conf.d"))?;
    std::fs::write(root.join("etc/hostname"), b"zos\n")?;
    std::fs::write(root.join("etc/conf.d/big"), noise(9, 1_300_000))?;
    std::fs::write(root.join("empty"), b"")?;
    std::os::unix::fs::symlink("etc/hostname", root.join("link"))?;
    // rfs keeps mtimes in seconds: make the source whole seconds too.
    for p in ["etc/hostname", "etc/conf.d/big", "empty", "etc/conf.d", "etc", "."] {
        run(Command::new("touch").args(["-h", "-d", "2022-02-02 02:02:02"]).arg(root.join(p)))?;
    }
    run(Command::new("touch").args(["-h", "-d", "2022-02-02 02:02:02"]).arg(root.join("link")))?;
    Ok(())
}

fn write_fixture(src: &Path, fl: &Path, store: &Path) -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let s: std::sync::Arc<dyn ChunkStore> = rt.block_on(zosfs_store::backend::open_backend(
        &dir_url(store).parse()?,
        &Default::default(),
    ))?;
    zosfs_flist::legacy::rfs::write_fl(
        src,
        fl,
        &*s,
        rt.handle(),
        &[format!("zdb://:hunter2@hub.example:9900/{}", "ns")],
        &[("version", "v0.1"), ("description", "fixture")],
    )?;
    Ok(())
}

#[test]
fn rfs_fl_is_listed_read_unpacked_verified_and_converted() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (src, store, cache) =
        (tmp.path().join("src"), tmp.path().join("store"), tmp.path().join("cache"));
    std::fs::create_dir(&src)?;
    rfs_tree(&src)?;
    let fl = tmp.path().join("image.fl");
    write_fixture(&src, &fl, &store)?;
    let st = dir_url(&store);

    let ls = String::from_utf8(run(flist(&cache).args(["ls", "-R"]).arg(&fl))?.stdout)?;
    for p in ["etc/hostname", "etc/conf.d/big", "empty", "link"] {
        ensure!(ls.lines().any(|l| l == p), "ls -R lacks {p}: {ls}");
    }
    let inspect = String::from_utf8(run(flist(&cache).arg("inspect").arg(&fl))?.stdout)?;
    ensure!(inspect.contains("rfs (blake2b-256"), "{inspect}");
    ensure!(!inspect.contains("hunter2"), "the route password leaked: {inspect}");
    let cat = run(flist(&cache).arg("cat").arg(&fl).arg("etc/conf.d/big").args(["--store", &st]))?;
    ensure!(cat.stdout == noise(9, 1_300_000), "cat of a 3-block file differs");

    run(flist(&cache).arg("verify").arg(&fl).args(["--store", &st]))?;
    let dest = tmp.path().join("dest");
    run(flist(&cache).arg("unpack").arg(&fl).args(["--store", &st]).arg(&dest))?;
    compare_trees(&src, &dest, &[])?;

    // Convert to native, unpack that, same tree; the native one verifies too.
    let native = tmp.path().join("image.flist");
    let nstore = tmp.path().join("nstore");
    run(flist(&cache).arg("convert").arg(&fl).arg("-o").arg(&native).args([
        "--from-store",
        &st,
        "--store",
        &dir_url(&nstore),
    ]))?;
    run(flist(&cache).arg("verify").arg(&native).args(["--store", &dir_url(&nstore)]))?;
    let dest2 = tmp.path().join("dest2");
    run(flist(&cache).arg("unpack").arg(&native).args(["--store", &dir_url(&nstore)]).arg(&dest2))?;
    compare_trees(&src, &dest2, &[])?;
    let d = run(flist(&cache).arg("diff").arg(&fl).arg(&native));
    ensure!(d.is_err(), "diff must see the different chunk ids");
    Ok(())
}

#[test]
fn rfs_missing_chunk_is_a_clear_error() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (src, store, cache) =
        (tmp.path().join("src"), tmp.path().join("store"), tmp.path().join("cache"));
    std::fs::create_dir(&src)?;
    rfs_tree(&src)?;
    let fl = tmp.path().join("image.fl");
    write_fixture(&src, &fl, &store)?;
    // Drop one block file from the store.
    let victim = walkdir_first_file(&store)?;
    std::fs::remove_file(&victim)?;
    let id = victim.file_name().unwrap().to_string_lossy().into_owned();
    let v = flist(&cache).arg("verify").arg(&fl).args(["--store", &dir_url(&store)]).output()?;
    ensure!(v.status.code() == Some(1), "verify must fail");
    ensure!(
        String::from_utf8_lossy(&v.stdout).contains(&format!("missing {id}")),
        "verify names the chunk"
    );
    let dest = tmp.path().join("dest");
    let u = flist(&cache)
        .arg("unpack")
        .arg(&fl)
        .args(["--store", &dir_url(&store)])
        .arg(&dest)
        .output()?;
    let err = String::from_utf8_lossy(&u.stderr);
    ensure!(
        u.status.code() == Some(1) && err.contains("missing") && !err.contains("panicked"),
        "{err}"
    );
    Ok(())
}

fn walkdir_first_file(root: &Path) -> Result<std::path::PathBuf> {
    for a in std::fs::read_dir(root)? {
        for b in std::fs::read_dir(a?.path())? {
            if let Some(f) = std::fs::read_dir(b?.path())?.next() {
                return Ok(f?.path());
            }
        }
    }
    anyhow::bail!("empty store")
}
