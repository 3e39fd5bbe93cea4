//! Legacy flists: rfs `.fl` and 0-fs `.flist` fixtures written by our own
//! writers (from the published schemas and codecs) are listed, read,
//! unpacked, verified and converted by the `flist` tool; a missing chunk
//! and a damaged flist are clear errors, never a panic.

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
    let s: std::sync::Arc<dyn ChunkStore> =
        rt.block_on(zosfs_store::open_backend(&dir_url(store).parse()?, &Default::default()))?;
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
    run(flist(&cache)
        .args(["unpack", "--same-root-perms"])
        .arg(&fl)
        .args(["--store", &st])
        .arg(&dest))?;
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
    run(flist(&cache)
        .args(["unpack", "--same-root-perms"])
        .arg(&native)
        .args(["--store", &dir_url(&nstore)])
        .arg(&dest2))?;
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

/// A tree 0-fs can describe: files (several blocks too), dirs, symlinks,
/// devices, a fifo and a socket, modes and numeric owners (no xattrs, no
/// hardlinks, whole-second mtimes: 0-fs records none of those).
fn zerofs_tree(root: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(root.join("etc/conf.d"))?;
    std::fs::create_dir_all(root.join("dev"))?;
    std::fs::create_dir_all(root.join("empty dir"))?;
    std::fs::write(root.join("etc/hostname"), b"zos\n")?;
    std::fs::write(root.join("etc/conf.d/big"), noise(11, 1_300_000))?;
    std::fs::write(root.join("empty"), b"")?;
    std::fs::write(root.join("setuid"), b"#!/bin/sh\n")?;
    std::fs::set_permissions(root.join("setuid"), std::fs::Permissions::from_mode(0o4755))?;
    std::fs::set_permissions(root.join("etc/hostname"), std::fs::Permissions::from_mode(0o640))?;
    std::os::unix::fs::symlink("etc/hostname", root.join("link"))?;
    std::os::unix::fs::symlink("/nowhere/at/all", root.join("dangling"))?;
    run(Command::new("mknod").arg(root.join("dev/null")).args(["c", "1", "3"]))?;
    run(Command::new("mknod").arg(root.join("dev/loop9")).args(["b", "7", "9"]))?;
    run(Command::new("mkfifo").arg(root.join("dev/fifo")))?;
    drop(std::os::unix::net::UnixListener::bind(root.join("dev/sock"))?);
    run(Command::new("chown").args(["-h", "1234:5678"]).arg(root.join("etc/hostname")))?;
    run(Command::new("chown").args(["-h", "4321:8765"]).arg(root.join("link")))?;
    // 0-fs keeps mtimes in seconds: make the source whole seconds too.
    let all = [
        "etc/hostname",
        "etc/conf.d/big",
        "etc/conf.d",
        "etc",
        "empty",
        "setuid",
        "link",
        "dangling",
        "dev/null",
        "dev/loop9",
        "dev/fifo",
        "dev/sock",
        "dev",
        "empty dir",
        ".",
    ];
    for p in all {
        run(Command::new("touch").args(["-h", "-d", "2019-03-04 05:06:07"]).arg(root.join(p)))?;
    }
    Ok(())
}

fn write_zerofs_fixture(src: &Path, out: &Path, store: &Path) -> Result<()> {
    use zosfs_flist::legacy::zerofs::{WriteOptions, write_flist};
    let rt = tokio::runtime::Runtime::new()?;
    let s: std::sync::Arc<dyn ChunkStore> =
        rt.block_on(zosfs_store::open_backend(&dir_url(store).parse()?, &Default::default()))?;
    let opts = WriteOptions {
        backend: Some(("hub.example".into(), 9900, "ns".into(), "hunter2".into())),
        tags: vec![("entrypoint".into(), "/bin/sh".into())],
        ..WriteOptions::default()
    };
    write_flist(src, out, &*s, rt.handle(), &opts)?;
    Ok(())
}

/// A 0-fs fixture in a temp dir: (tmp, src, flist, store, cache).
struct ZeroFsFixture {
    tmp: tempfile::TempDir,
    src: std::path::PathBuf,
    flist: std::path::PathBuf,
    store: std::path::PathBuf,
    cache: std::path::PathBuf,
}

fn zerofs_fixture() -> Result<ZeroFsFixture> {
    let tmp = tempfile::tempdir()?;
    let (src, store, cache) =
        (tmp.path().join("src"), tmp.path().join("store"), tmp.path().join("cache"));
    std::fs::create_dir(&src)?;
    zerofs_tree(&src)?;
    let flist = tmp.path().join("image.flist");
    write_zerofs_fixture(&src, &flist, &store)?;
    Ok(ZeroFsFixture { tmp, src, flist, store, cache })
}

#[test]
fn zerofs_flist_is_listed_read_unpacked_verified_and_converted() -> Result<()> {
    let f = zerofs_fixture()?;
    let (cache, fl) = (&f.cache, &f.flist);
    let st = dir_url(&f.store);

    let ls = String::from_utf8(run(flist(cache).args(["ls", "-R"]).arg(fl))?.stdout)?;
    for p in
        ["etc/hostname", "etc/conf.d/big", "empty", "link", "dev/null", "dev/sock", "empty dir"]
    {
        ensure!(ls.lines().any(|l| l == p), "ls -R lacks {p}: {ls}");
    }
    let inspect = String::from_utf8(run(flist(cache).arg("inspect").arg(fl))?.stdout)?;
    ensure!(inspect.contains("0-fs (blake2b-128"), "{inspect}");
    ensure!(inspect.contains("zdb://hub.example:9900/ns"), "the backend route: {inspect}");
    ensure!(!inspect.contains("hunter2"), "the backend password leaked: {inspect}");
    let cat = run(flist(cache).arg("cat").arg(fl).arg("etc/conf.d/big").args(["--store", &st]))?;
    ensure!(cat.stdout == noise(11, 1_300_000), "cat of a 3-block file differs");
    let cat = run(flist(cache).arg("cat").arg(fl).arg("link").args(["--store", &st]))?;
    ensure!(cat.stdout == b"zos\n", "cat follows the symlink");

    run(flist(cache).arg("verify").arg(fl).args(["--store", &st]))?;
    let dest = f.tmp.path().join("dest");
    run(flist(cache)
        .args(["unpack", "--same-root-perms"])
        .arg(fl)
        .args(["--store", &st])
        .arg(&dest))?;
    compare_trees(&f.src, &dest, &[])?;

    // Convert to native, unpack that, same tree; the native one verifies too.
    let native = f.tmp.path().join("native.flist");
    let nstore = f.tmp.path().join("nstore");
    run(flist(cache).arg("convert").arg(fl).arg("-o").arg(&native).args([
        "--from-store",
        &st,
        "--store",
        &dir_url(&nstore),
    ]))?;
    run(flist(cache).arg("verify").arg(&native).args(["--store", &dir_url(&nstore)]))?;
    let inspect = String::from_utf8(run(flist(cache).arg("inspect").arg(&native))?.stdout)?;
    ensure!(inspect.contains("zck1"), "the converted flist is native: {inspect}");
    let dest2 = f.tmp.path().join("dest2");
    run(flist(cache)
        .args(["unpack", "--same-root-perms"])
        .arg(&native)
        .args(["--store", &dir_url(&nstore)])
        .arg(&dest2))?;
    compare_trees(&f.src, &dest2, &[])?;
    Ok(())
}

#[test]
fn zerofs_missing_chunk_is_a_clear_error() -> Result<()> {
    let f = zerofs_fixture()?;
    let victim = walkdir_first_file(&f.store)?;
    std::fs::remove_file(&victim)?;
    let id = victim.file_name().unwrap().to_string_lossy().into_owned();
    let st = dir_url(&f.store);
    let v = flist(&f.cache).arg("verify").arg(&f.flist).args(["--store", &st]).output()?;
    ensure!(v.status.code() == Some(1), "verify must fail");
    ensure!(
        String::from_utf8_lossy(&v.stdout).contains(&format!("missing {id}")),
        "verify names the chunk: {}",
        String::from_utf8_lossy(&v.stdout)
    );
    let dest = f.tmp.path().join("dest");
    let u =
        flist(&f.cache).arg("unpack").arg(&f.flist).args(["--store", &st]).arg(&dest).output()?;
    let err = String::from_utf8_lossy(&u.stderr);
    ensure!(
        u.status.code() == Some(1) && err.contains("missing") && !err.contains("panicked"),
        "{err}"
    );
    let out = f.tmp.path().join("native.flist");
    let c = flist(&f.cache)
        .arg("convert")
        .arg(&f.flist)
        .arg("-o")
        .arg(&out)
        .args(["--from-store", &st, "--store", &dir_url(&f.tmp.path().join("n"))])
        .output()?;
    let err = String::from_utf8_lossy(&c.stderr);
    ensure!(
        c.status.code() == Some(1) && err.contains("missing") && !err.contains("panicked"),
        "{err}"
    );
    ensure!(!out.exists(), "no half-converted flist is left behind");
    Ok(())
}

#[test]
fn zerofs_truncated_or_bit_flipped_flist_is_a_clear_error() -> Result<()> {
    let f = zerofs_fixture()?;
    let good = std::fs::read(&f.flist)?;
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in [good.len() / 2, good.len() - 1, 600] {
        cases.push((format!("truncated to {cut}"), good[..cut].to_vec()));
    }
    for at in [good.len() / 4, good.len() / 2, good.len() - 5] {
        let mut bad = good.clone();
        bad[at] ^= 0x04;
        cases.push((format!("bit flipped at {at}"), bad));
    }
    let st = dir_url(&f.store);
    for (n, (what, bytes)) in cases.iter().enumerate() {
        let p = f.tmp.path().join(format!("bad{n}.flist"));
        std::fs::write(&p, bytes)?;
        let cache = f.tmp.path().join(format!("cache{n}"));
        let dest = f.tmp.path().join(format!("dest{n}"));
        for args in [
            vec!["ls".into(), "-R".into(), p.clone().into_os_string()],
            vec![
                "unpack".into(),
                p.clone().into_os_string(),
                "--store".into(),
                st.clone().into(),
                dest.clone().into_os_string(),
            ],
        ] {
            let o = flist(&cache).args(&args).output()?;
            let err = String::from_utf8_lossy(&o.stderr);
            ensure!(o.status.code() == Some(1), "{what}: {args:?} must fail: {err}");
            ensure!(!err.contains("panicked"), "{what}: {args:?} panicked: {err}");
            ensure!(
                err.contains("damaged") || err.contains("truncated") || err.contains("corrupt"),
                "{what}: {args:?}: the error says what is wrong: {err}"
            );
        }
        ensure!(
            !dest.exists() || std::fs::read_dir(&dest)?.next().is_none(),
            "{what}: nothing unpacked"
        );
    }
    Ok(())
}
