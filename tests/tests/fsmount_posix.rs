//! A POSIX check of fsmount's merged view: the same script of file
//! operations runs against the merged mount (overlayfs: btrfs rw layer over
//! the FUSE lower) and against a plain directory on btrfs holding the same
//! starting tree. Every operation's outcome (value or errno) and the final
//! trees must be the same.

use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use zosfs_tests::fsmount::{EntryInfo, Env, describe_tree, fstype_at};

/// The starting tree both sides get.
fn make_base(root: &Path) -> Result<()> {
    fs::create_dir_all(root.join("dir/sub"))?;
    fs::create_dir_all(root.join("empty-dir"))?;
    fs::write(root.join("a.txt"), b"content of a\n")?;
    fs::write(root.join("b.txt"), b"content of b, longer\n")?;
    fs::write(root.join("gone.txt"), b"to be deleted\n")?;
    fs::write(root.join("dir/inner.txt"), b"inner\n")?;
    fs::write(root.join("dir/sub/deep.txt"), b"deep\n")?;
    let big: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    fs::write(root.join("big.bin"), &big)?;
    fs::write(root.join("mm.bin"), vec![b'.'; 8192])?;
    std::os::unix::fs::symlink("a.txt", root.join("link-to-a"))?;
    fs::hard_link(root.join("b.txt"), root.join("b-hard.txt"))?;
    setxattr(&root.join("a.txt"), "user.origin", b"lower")?;
    fs::set_permissions(root.join("a.txt"), fs::Permissions::from_mode(0o644))?;
    // Old times, so entries the script changes are told apart from those it
    // must leave exactly as they were.
    let out = Command::new("find")
        .arg(root)
        .args(["-exec", "touch", "-h", "-d", "@1000000000.5", "{}", "+"])
        .status()?;
    ensure!(out.success(), "touch the base tree");
    Ok(())
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in test paths")
}

/// The errno of the last failed libc call, as an outcome string.
fn errno_outcome(rc: libc::c_int) -> String {
    if rc == 0 { "ok".into() } else { errno_name(std::io::Error::last_os_error()) }
}

fn errno_name(e: std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => format!("errno {n}"),
        None => format!("error {e}"),
    }
}

fn setxattr(p: &Path, name: &str, value: &[u8]) -> Result<()> {
    let (c, n) = (cstr(p), CString::new(name)?);
    // SAFETY: valid C strings and a valid buffer of value.len() bytes.
    let rc =
        unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    ensure!(rc == 0, "setxattr {}: {}", p.display(), std::io::Error::last_os_error());
    Ok(())
}

fn getxattr(p: &Path, name: &str) -> String {
    let (c, n) = (cstr(p), CString::new(name).expect("name"));
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a writable buffer of buf.len() bytes.
    let rc = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if rc < 0 {
        return errno_name(std::io::Error::last_os_error());
    }
    buf.truncate(rc as usize);
    format!("value {:?}", String::from_utf8_lossy(&buf))
}

/// user.* names of an entry, sorted (overlayfs hides its own trusted.*).
fn user_xattrs(p: &Path) -> String {
    let c = cstr(p);
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C string and a writable buffer of buf.len() bytes.
    let rc = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if rc < 0 {
        return errno_name(std::io::Error::last_os_error());
    }
    let mut names: Vec<String> = buf[..rc as usize]
        .split(|b| *b == 0)
        .filter(|n| n.starts_with(b"user."))
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    names.sort();
    names.join(",")
}

fn read_all(p: &Path) -> String {
    match fs::read(p) {
        Ok(b) if b.len() <= 64 => format!("{:?}", String::from_utf8_lossy(&b)),
        Ok(b) => format!("{} bytes, sum {}", b.len(), b.iter().map(|x| *x as u64).sum::<u64>()),
        Err(e) => errno_name(e),
    }
}

fn io<T>(r: std::io::Result<T>, ok: impl FnOnce(T) -> String) -> String {
    match r {
        Ok(v) => ok(v),
        Err(e) => errno_name(e),
    }
}

fn stat_line(p: &Path) -> String {
    io(fs::symlink_metadata(p), |m| {
        format!(
            "mode {:o} uid {} gid {} size {} nlink {} rdev {:x}",
            m.mode(),
            m.uid(),
            m.gid(),
            m.size(),
            m.nlink(),
            m.rdev()
        )
    })
}

/// Map `len` bytes of `f` shared; read them, write `patch` at `at`, msync.
fn mmap_rw(f: &File, len: usize, at: usize, patch: &[u8]) -> Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    // SAFETY: a fresh shared mapping of a file opened read-write, at least
    // `len` bytes long; unmapped below before the slice goes out of scope.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    ensure!(p != libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
    // SAFETY: p maps len readable and writable bytes (checked above).
    let s = unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) };
    let before = s.to_vec();
    s[at..at + patch.len()].copy_from_slice(patch);
    // SAFETY: p/len is the mapping made above; unmapped exactly once.
    let rc = unsafe { libc::msync(p, len, libc::MS_SYNC) + libc::munmap(p, len) };
    ensure!(rc == 0, "msync/munmap: {}", std::io::Error::last_os_error());
    Ok(before)
}

/// Run the script under `root`; one outcome line per step.
fn script(root: &Path) -> Result<Vec<String>> {
    let r = |p: &str| root.join(p);
    let mut log = Vec::new();
    let mut step = |name: &str, outcome: String| log.push(format!("{name}: {outcome}"));

    // create, exclusive create, append
    step("create", io(fs::write(r("new.txt"), b"hello\n"), |_| read_all(&r("new.txt"))));
    let excl = OpenOptions::new().write(true).create_new(true).open(r("a.txt"));
    step("create_new existing", io(excl, |_| "opened".into()));
    let app = OpenOptions::new().append(true).open(r("a.txt")).and_then(|mut f| f.write_all(b"+"));
    step("append lower", io(app, |_| read_all(&r("a.txt"))));
    step("xattr kept by copy-up", getxattr(&r("a.txt"), "user.origin"));

    // hard links
    step("link lower", io(fs::hard_link(r("dir/inner.txt"), r("inner-link")), |_| "ok".into()));
    step("link nlink", stat_line(&r("inner-link")));
    step("link to dir", io(fs::hard_link(r("dir"), r("dir-link")), |_| "ok".into()));
    step("lower hardlink pair", stat_line(&r("b-hard.txt")));

    // unlink, rmdir
    step("unlink lower", io(fs::remove_file(r("gone.txt")), |_| "ok".into()));
    step("unlinked stat", stat_line(&r("gone.txt")));
    step("unlink dir", io(fs::remove_file(r("dir")), |_| "ok".into()));
    step("rmdir non-empty", io(fs::remove_dir(r("dir")), |_| "ok".into()));
    step("rmdir file", io(fs::remove_dir(r("a.txt")), |_| "ok".into()));
    step("rmdir empty lower", io(fs::remove_dir(r("empty-dir")), |_| "ok".into()));
    step(
        "recreate removed name",
        io(fs::write(r("gone.txt"), b"again"), |_| read_all(&r("gone.txt"))),
    );

    // renames
    step("rename over", io(fs::rename(r("a.txt"), r("b.txt")), |_| read_all(&r("b.txt"))));
    step("renamed source", stat_line(&r("a.txt")));
    step("rename dir", io(fs::rename(r("dir"), r("dir2")), |_| read_all(&r("dir2/sub/deep.txt"))));
    step("old dir", stat_line(&r("dir/inner.txt")));
    step("rename file onto dir", io(fs::rename(r("b.txt"), r("dir2")), |_| "ok".into()));
    step("rename dir onto file", io(fs::rename(r("dir2/sub"), r("new.txt")), |_| "ok".into()));
    step("rename missing", io(fs::rename(r("nope"), r("nope2")), |_| "ok".into()));

    // modes, owners, times
    let chmod = fs::set_permissions(r("b-hard.txt"), fs::Permissions::from_mode(0o4750));
    step("chmod lower", io(chmod, |_| stat_line(&r("b-hard.txt"))));
    let chown = std::os::unix::fs::lchown(r("mm.bin"), Some(1234), Some(5678));
    step("chown lower", io(chown, |_| stat_line(&r("mm.bin"))));
    let times = [
        libc::timespec { tv_sec: 1_000_000_000, tv_nsec: 123_456_789 },
        libc::timespec { tv_sec: 1_200_000_000, tv_nsec: 987_654_321 },
    ];
    // SAFETY: a valid C path and a two-element timespec array.
    let rc = unsafe {
        libc::utimensat(libc::AT_FDCWD, cstr(&r("dir2/inner.txt")).as_ptr(), times.as_ptr(), 0)
    };
    step("utimensat", errno_outcome(rc));
    step(
        "mtime",
        io(fs::metadata(r("dir2/inner.txt")), |m| format!("{}.{}", m.mtime(), m.mtime_nsec())),
    );

    // truncate
    let tr = OpenOptions::new().write(true).open(r("big.bin")).and_then(|f| f.set_len(10));
    step("truncate shrink lower", io(tr, |_| read_all(&r("big.bin"))));
    let tr = OpenOptions::new().write(true).open(r("big.bin")).and_then(|f| f.set_len(1 << 20));
    step("truncate grow", io(tr, |_| read_all(&r("big.bin"))));
    let ot = OpenOptions::new().write(true).truncate(true).open(r("dir2/sub/deep.txt"));
    step("open O_TRUNC lower", io(ot, |_| stat_line(&r("dir2/sub/deep.txt"))));

    // special files
    // SAFETY: valid C paths; plain mode/device numbers.
    let rc = unsafe { libc::mkfifo(cstr(&r("fifo")).as_ptr(), 0o640) };
    step("mkfifo", errno_outcome(rc));
    step("fifo stat", stat_line(&r("fifo")));
    // SAFETY: as above; char device 1:3 like /dev/null.
    let rc = unsafe {
        libc::mknod(cstr(&r("null")).as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3))
    };
    step("mknod", errno_outcome(rc));
    step("chardev stat", stat_line(&r("null")));
    step(
        "symlink",
        io(std::os::unix::fs::symlink("dir2/inner.txt", r("sl")), |_| read_all(&r("sl"))),
    );
    step("readlink lower", io(fs::read_link(r("link-to-a")), |t| format!("{t:?}")));
    step("dangling lower link", read_all(&r("link-to-a")));
    step("symlink exists", io(std::os::unix::fs::symlink("x", r("sl")), |_| "ok".into()));

    // xattrs
    step(
        "setxattr lower",
        errno_outcome(setxattr(&r("mm.bin"), "user.k", b"v1").map_or(-1, |_| 0)),
    );
    step("getxattr", getxattr(&r("mm.bin"), "user.k"));
    step("listxattr", user_xattrs(&r("mm.bin")));
    // SAFETY: valid C strings.
    let rc = unsafe { libc::lremovexattr(cstr(&r("mm.bin")).as_ptr(), c"user.k".as_ptr()) };
    step("removexattr", errno_outcome(rc));
    step("getxattr removed", getxattr(&r("mm.bin"), "user.k"));
    step("xattr on new dir", {
        fs::create_dir(r("xdir"))?;
        setxattr(&r("xdir"), "user.d", b"dir value")?;
        getxattr(&r("xdir"), "user.d")
    });

    // mmap read and write of a lower file
    let f = OpenOptions::new().read(true).write(true).open(r("mm.bin"))?;
    let before = mmap_rw(&f, 8192, 4096, b"MMAP")?;
    step("mmap read", format!("{}", before.iter().all(|b| *b == b'.')));
    let mut back = vec![0u8; 8];
    let mut g = File::open(r("mm.bin"))?;
    g.seek(SeekFrom::Start(4094))?;
    g.read_exact(&mut back)?;
    step("mmap write seen by read", format!("{:?}", String::from_utf8_lossy(&back)));

    // directories
    let dw = OpenOptions::new().write(true).open(r("dir2"));
    step("open dir for write", io(dw, |_| "opened".into()));
    let nd = OpenOptions::new().write(true).custom_flags(libc::O_DIRECTORY).open(r("mm.bin"));
    step("O_DIRECTORY on file", io(nd, |_| "opened".into()));
    step("mkdir existing", io(fs::create_dir(r("dir2")), |_| "ok".into()));
    step("readdir root", listing(root)?);
    step("readdir dir2", listing(&r("dir2"))?);
    Ok(log)
}

fn listing(d: &Path) -> Result<String> {
    let mut names: Vec<String> = fs::read_dir(d)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    names.sort();
    Ok(names.join(" "))
}

/// The final tree without the fields the two sides legitimately differ in:
/// inode numbers, and times the script set by changing an entry at
/// different instants on each side (those at or after `since`, in seconds,
/// become "changed"; untouched lower entries keep their exact mtime).
fn final_tree(root: &Path, since: i64) -> Result<Vec<(PathBuf, EntryInfo)>> {
    let t = describe_tree(root, true)?;
    Ok(t.into_iter()
        .map(|(p, mut e)| {
            e.ino = 0;
            if e.mtime.0 >= since {
                e.mtime = (-1, 0);
            }
            // Overlay hides its own trusted.overlay.* attributes; user.* stay.
            e.xattrs.retain(|k, _| !k.as_bytes().starts_with(b"trusted.overlay."));
            (p, e)
        })
        .filter(|(p, _)| p.as_os_str() != OsStr::new(""))
        .collect())
}

fn run(cmd: &mut Command) -> Result<()> {
    let st = cmd.status().with_context(|| format!("{cmd:?}"))?;
    ensure!(st.success(), "{cmd:?}: {st}");
    Ok(())
}

/// A plain btrfs directory: a loop-mounted image under the env (its Drop
/// unmounts and detaches it).
fn plain_btrfs(env: &Env) -> Result<PathBuf> {
    let img = env.path().join("plain.img");
    File::create(&img)?.set_len(512 << 20)?;
    run(Command::new("mkfs.btrfs").arg("-q").arg(&img))?;
    let mnt = env.mkdir("plain")?;
    run(Command::new("mount").arg("-o").arg("loop").arg(&img).arg(&mnt))?;
    Ok(mnt)
}

#[test]
fn merged_view_behaves_like_plain_btrfs() -> Result<()> {
    let env = Env::new()?;
    let src = env.mkdir("src")?;
    make_base(&src)?;

    let plain = plain_btrfs(&env)?;
    run(Command::new("cp").arg("-a").arg(format!("{}/.", src.display())).arg(&plain))?;
    let mnt = env.mkdir("mnt")?;
    env.mount(&src, &mnt, &["--rw", "posix", "--volume-size", "1G"])?;
    ensure!(fstype_at(&mnt).as_deref() == Some("overlay"), "no overlay at {}", mnt.display());

    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let since = since as i64 - 1;
    let want = script(&plain)?;
    let got = script(&mnt)?;
    eprintln!("script outcomes on fsmount:\n{}", got.join("\n"));
    let diffs: Vec<String> = want
        .iter()
        .zip(&got)
        .filter(|(w, g)| w != g)
        .map(|(w, g)| format!("  btrfs:   {w}\n  fsmount: {g}"))
        .collect();
    ensure!(want.len() == got.len(), "script lengths differ");
    ensure!(diffs.is_empty(), "{} steps differ:\n{}", diffs.len(), diffs.join("\n"));
    // The script must have exercised failures too (errno outcomes).
    ensure!(want.iter().filter(|l| l.contains("errno")).count() >= 10, "{want:#?}");

    let (tw, tg) = (final_tree(&plain, since)?, final_tree(&mnt, since)?);
    let tree_diffs: Vec<String> = tw
        .iter()
        .zip(&tg)
        .filter(|(w, g)| w != g)
        .map(|(w, g)| format!("  btrfs:   {w:?}\n  fsmount: {g:?}"))
        .collect();
    ensure!(tw.len() == tg.len(), "final trees differ in size: {} vs {}", tw.len(), tg.len());
    ensure!(tree_diffs.is_empty(), "final trees differ:\n{}", tree_diffs.join("\n"));

    env.umount(&mnt)?;
    Ok(())
}
