//! What a local unprivileged user (`nobody`, via setpriv) can reach while
//! root serves an flist with fsmount: the container's view (the overlay)
//! as the image says, and nothing behind it — not the FUSE lower, the
//! volume, the control socket, the node cache or the state directory.

use std::ffi::OsStr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, ensure};
use zosfs_tests::flist::{dir_url, flist, run};
use zosfs_tests::fsmount::Env;

const NOBODY: u32 = 65534;

/// `args` run as nobody (no groups, no capabilities). setpriv keeps its
/// capabilities until it execs, so the path of its own exec would be
/// looked up as root: a shell, which runs as plain nobody, execs `args`.
fn as_nobody(args: &[&OsStr]) -> Result<Output> {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["/bin/sh", "-c", "exec \"$@\"", "sh"])
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .context("run setpriv (util-linux)")
}

/// As nobody, `args` fails with "Permission denied" (a 0700 directory on
/// the way) or "No such file" — never succeeds.
fn nobody_is_refused(what: &str, args: &[&OsStr]) -> Result<()> {
    let out = as_nobody(args)?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success(),
        "{what}: nobody succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    ensure!(
        err.contains("Permission denied") || err.contains("No such file"),
        "{what}: unexpected failure: {err}"
    );
    Ok(())
}

/// Per-mount options (field 6), fstype and super options of the mount at
/// `path` (the topmost one).
fn mount_options(path: &Path) -> Result<(String, String, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    let want = path.to_str().context("utf-8 path")?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.split(' ').nth(4) == Some(want))
        .with_context(|| format!("nothing mounted at {want}"))?;
    let opts = line.split(' ').nth(5).context("mount options")?.to_string();
    let right: Vec<&str> = line.split_once(" - ").context("separator")?.1.split(' ').collect();
    ensure!(right.len() >= 3, "short mountinfo line {line}");
    Ok((opts, right[0].to_string(), right[2].to_string()))
}

/// The one directory in `dir` (a mount's or volume's directory).
fn only_dir(dir: &Path) -> Result<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| Ok(e?.path()))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    ensure!(v.len() == 1, "expected one directory in {}: {v:?}", dir.display());
    Ok(v.remove(0))
}

/// An image with a setuid-root `id` and the null device.
fn image(env: &Env) -> Result<PathBuf> {
    let src = env.mkdir("image")?;
    std::fs::create_dir(src.join("bin"))?;
    std::fs::create_dir(src.join("dev"))?;
    std::fs::copy("/usr/bin/id", src.join("bin/suid-id"))?;
    std::fs::set_permissions(src.join("bin/suid-id"), std::fs::Permissions::from_mode(0o4755))?;
    run(Command::new("mknod")
        .args(["-m", "0666"])
        .arg(src.join("dev/null"))
        .args(["c", "1", "3"]))?;
    std::fs::write(src.join("secret"), b"root only\n")?;
    std::fs::set_permissions(src.join("secret"), std::fs::Permissions::from_mode(0o600))?;
    Ok(src)
}

#[test]
fn nobody_reaches_only_the_overlay() -> Result<()> {
    let env = Env::new()?;
    // nobody may traverse the test's temp dir (as it would /var/lib).
    std::fs::set_permissions(env.path(), std::fs::Permissions::from_mode(0o755))?;
    let store = dir_url(&env.path().join("store"));
    let fl = env.path().join("image.flist");
    run(flist(&env.path().join("pack-cache"))
        .args(["pack", "--no-progress", "-o"])
        .arg(&fl)
        .args(["--store", &store])
        .arg(image(&env)?))?;
    let mnt = env.mkdir("mnt")?;
    env.mount(&fl, &mnt, &["--store", &store, "--rw", "app", "--volume-size", "1G"])?;
    // A setuid file written by the container into its rw layer.
    std::fs::copy("/usr/bin/id", mnt.join("rw-suid-id"))?;
    std::fs::set_permissions(mnt.join("rw-suid-id"), std::fs::Permissions::from_mode(0o4755))?;

    let state = env.state();
    let lower = only_dir(&state.join("mounts"))?.join("lower");
    let volume = only_dir(&state.join("volumes"))?;
    let upper = volume.join("rw/app/upper");
    ensure!(lower.join("bin/suid-id").is_file() && upper.join("rw-suid-id").is_file());

    // The container's view keeps setuid and devices: nobody runs the
    // image's setuid-root id as euid 0 and writes the null device.
    let (opts, fstype, _) = mount_options(&mnt)?;
    ensure!(fstype == "overlay" && !opts.contains("nosuid") && !opts.contains("nodev"), "{opts}");
    let out = as_nobody(&[mnt.join("bin/suid-id").as_os_str(), OsStr::new("-u")])?;
    ensure!(String::from_utf8_lossy(&out.stdout).trim() == "0", "overlay suid: {out:?}");
    let out = as_nobody(&[
        OsStr::new("sh"),
        OsStr::new("-c"),
        OsStr::new("echo x > \"$0\""),
        mnt.join("dev/null").as_os_str(),
    ])?;
    ensure!(out.status.success(), "overlay device: {out:?}");
    // What the image keeps from others stays kept.
    nobody_is_refused("image's 0600 file", &[OsStr::new("cat"), mnt.join("secret").as_os_str()])?;

    // Behind the overlay: nosuid,nodev mounts, in 0700 directories.
    for (what, p, fstype) in [("FUSE lower", &lower, "fuse.zosfs"), ("volume", &volume, "btrfs")] {
        let (opts, t, super_opts) = mount_options(p)?;
        ensure!(t == fstype, "{what}: {t}");
        ensure!(opts.contains("nosuid") && opts.contains("nodev"), "{what} options: {opts}");
        // Only root (the overlay's mounter) uses the lower.
        ensure!(!super_opts.contains("allow_other"), "{what}: {super_opts}");
    }
    for d in [
        &state,
        &state.join("mounts"),
        &state.join("volumes"),
        &lower.parent().unwrap().to_path_buf(),
    ] {
        let mode = std::fs::metadata(d)?.mode() & 0o777;
        ensure!(mode == 0o700, "{} is {mode:o}", d.display());
    }
    nobody_is_refused(
        "exec the lower's setuid file",
        &[lower.join("bin/suid-id").as_os_str(), OsStr::new("-u")],
    )?;
    nobody_is_refused(
        "open the lower's device",
        &[OsStr::new("cat"), lower.join("dev/null").as_os_str()],
    )?;
    nobody_is_refused(
        "exec the rw layer's setuid file",
        &[upper.join("rw-suid-id").as_os_str(), OsStr::new("-u")],
    )?;
    nobody_is_refused("list the state", &[OsStr::new("ls"), state.as_os_str()])?;

    // The node cache: contents and unpacked flists.
    let cache = env.cache();
    for d in [cache.clone(), cache.join("contents"), cache.join("flists")] {
        let mode = std::fs::metadata(&d)?.mode() & 0o777;
        ensure!(mode == 0o700, "{} is {mode:o}", d.display());
        nobody_is_refused("list the cache", &[OsStr::new("ls"), d.as_os_str()])?;
    }

    // The control socket: 0600 in a 0700 directory, and the server checks
    // the peer itself: a link to it nobody can reach is still refused.
    let servers = env.run_dir().join("servers");
    let sock = std::fs::read_dir(&servers)?
        .map(|e| Ok(e?.path()))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .find(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket()))
        .context("server socket")?;
    ensure!(std::fs::metadata(&sock)?.mode() & 0o777 == 0o600);
    let connect = "import socket,sys\n\
        s=socket.socket(socket.AF_UNIX)\n\
        s.connect(sys.argv[1])\n\
        s.sendall(b'ping')\n\
        s.shutdown(socket.SHUT_WR)\n\
        print(s.recv(4096).decode())\n";
    let py = |p: &Path| {
        as_nobody(&[OsStr::new("python3"), OsStr::new("-c"), OsStr::new(connect), p.as_os_str()])
    };
    let out = py(&sock)?;
    ensure!(!out.status.success(), "nobody connected: {out:?}");
    let open = env.mkdir("open")?;
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755))?;
    let link = open.join("server.sock");
    std::fs::hard_link(&sock, &link)?;
    std::fs::set_permissions(&link, std::fs::Permissions::from_mode(0o666))?;
    let out = py(&link)?;
    let answer = String::from_utf8_lossy(&out.stdout);
    ensure!(answer.contains("permission denied: uid 65534"), "peer check: {out:?}");
    std::fs::set_permissions(&link, std::fs::Permissions::from_mode(0o600))?;
    std::fs::remove_file(&link)?;

    env.umount(&mnt)?;
    env.wait_clean()
}

#[test]
fn an_unprivileged_default_flist_cache_is_private() -> Result<()> {
    let env = Env::new()?;
    std::fs::set_permissions(env.path(), std::fs::Permissions::from_mode(0o755))?;
    let src = env.mkdir("tree")?;
    std::fs::write(src.join("f"), b"x")?;
    let fl = env.path().join("t.flist");
    run(flist(&env.path().join("pack-cache"))
        .args(["pack", "--no-progress", "-o"])
        .arg(&fl)
        .args(["--store", &dir_url(&env.path().join("store"))])
        .arg(&src))?;
    std::fs::set_permissions(&fl, std::fs::Permissions::from_mode(0o644))?;
    // A shared temp dir where someone planted the cache name as a symlink.
    let tmp = env.mkdir("tmp")?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))?;
    let cache = tmp.join(format!("zosfs-flists-{NOBODY}"));
    std::os::unix::fs::symlink(env.path().join("elsewhere"), &cache)?;
    let ls = |tmp: &Path| -> Result<Output> {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(zosfs_tests::bin("flist"))
            .arg("ls")
            .arg(&fl)
            .env_clear()
            .env("TMPDIR", tmp)
            .output()
            .context("run flist as nobody")
    };
    let out = ls(&tmp)?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success() && err.contains("not a symlink"), "planted symlink: {err}");
    ensure!(!env.path().join("elsewhere").exists());
    std::fs::remove_file(&cache)?;
    let out = ls(&tmp)?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let md = std::fs::symlink_metadata(&cache)?;
    ensure!(md.is_dir() && md.uid() == NOBODY && md.mode() & 0o777 == 0o700, "{md:?}");
    Ok(())
}
