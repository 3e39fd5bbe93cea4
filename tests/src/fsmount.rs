//! Helpers for the fsmount end-to-end tests: a temp environment whose Drop
//! unmounts everything under it and detaches its loop devices (also when
//! the test panicked), running the `fsmount` binary, and comparing two
//! trees entry by entry (stat, xattrs, content).

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::{bin, wait_for};

/// A temp dir with a state directory and its own node registry and run
/// directory (ZOSFS_REGISTRY, ZOSFS_RUN_DIR: parallel tests never see each
/// other's mounts); everything mounted, attached or started under it is
/// torn down on drop.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Result<Env> {
        // Under /var/tmp-like disk space, not tmpfs: volume images are sparse.
        let dir = tempfile::Builder::new().prefix("fsmount-test-").tempdir_in("/tmp")?;
        std::fs::create_dir(dir.path().join("state"))?;
        Ok(Env { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn state(&self) -> PathBuf {
        self.path().join("state")
    }

    /// The node cache of this env's fsmount server.
    pub fn cache(&self) -> PathBuf {
        self.path().join("cache")
    }

    /// This env's node registry (ZOSFS_REGISTRY).
    pub fn registry(&self) -> PathBuf {
        self.path().join("registry")
    }

    /// This env's run directory (ZOSFS_RUN_DIR).
    pub fn run_dir(&self) -> PathBuf {
        self.path().join("run")
    }

    /// `fsmount ARGS` with nothing but this env's node directories: no
    /// --state, no ZOSFS_STATE / ZOSFS_CACHE / ZOSFS_STORE, as a person
    /// types it on a node.
    pub fn fsmount_bare(&self, args: &[&OsStr]) -> Result<Output> {
        Command::new(bin("fsmount"))
            .args(args)
            .env_remove("ZOSFS_STATE")
            .env_remove("ZOSFS_CACHE")
            .env_remove("ZOSFS_STORE")
            .env("ZOSFS_REGISTRY", self.registry())
            .env("ZOSFS_RUN_DIR", self.run_dir())
            .stdin(Stdio::null())
            .output()
            .context("run fsmount")
    }

    /// Like [`Env::fsmount_bare`] but fails with its stderr unless it succeeded.
    pub fn fsmount_bare_ok(&self, args: &[&OsStr]) -> Result<String> {
        ok_stdout(args, self.fsmount_bare(args)?)
    }

    /// A fresh directory under the env.
    pub fn mkdir(&self, name: &str) -> Result<PathBuf> {
        let p = self.path().join(name);
        std::fs::create_dir_all(&p)?;
        Ok(p)
    }

    /// `fsmount ARGS --state STATE`, capturing output.
    pub fn fsmount(&self, args: &[&OsStr]) -> Result<Output> {
        let out = Command::new(bin("fsmount"))
            .args(args)
            .arg("--state")
            .arg(self.state())
            .env("ZOSFS_CACHE", self.cache())
            .env_remove("ZOSFS_STORE")
            .env("ZOSFS_REGISTRY", self.registry())
            .env("ZOSFS_RUN_DIR", self.run_dir())
            .stdin(Stdio::null())
            .output()
            .context("run fsmount")?;
        Ok(out)
    }

    /// Like [`Env::fsmount`] but fails with its stderr unless it succeeded.
    pub fn fsmount_ok(&self, args: &[&OsStr]) -> Result<String> {
        ok_stdout(args, self.fsmount(args)?)
    }

    /// `fsmount -d SOURCE MOUNTPOINT EXTRA…`: returns once the mount is ready.
    pub fn mount(&self, source: &Path, mnt: &Path, extra: &[&str]) -> Result<String> {
        let mut args: Vec<&OsStr> = vec![OsStr::new("-d"), source.as_os_str(), mnt.as_os_str()];
        args.extend(extra.iter().map(OsStr::new));
        self.fsmount_ok(&args)
    }

    pub fn umount(&self, mnt: &Path) -> Result<String> {
        self.fsmount_ok(&[OsStr::new("umount"), mnt.as_os_str()])
    }

    /// Pid of the process serving `mnt` (from its mount record).
    pub fn daemon_pid(&self, mnt: &Path) -> Result<u32> {
        record_pid(&self.state(), mnt)
    }

    /// Mounts under this env (mountinfo), deepest first.
    pub fn mounts_under(&self) -> Vec<PathBuf> {
        let root = self.path().as_os_str().as_bytes().to_vec();
        let mut v: Vec<PathBuf> = mountinfo()
            .into_iter()
            .map(|(mp, _)| mp)
            .filter(|mp| mp.as_os_str().as_bytes().starts_with(&root))
            .collect();
        v.reverse();
        v
    }

    /// Loop devices backed by files under this env.
    pub fn loops_under(&self) -> Vec<PathBuf> {
        let root = self.path().to_path_buf();
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir("/sys/block") {
            for e in rd.flatten() {
                if let Ok(bf) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
                    if Path::new(bf.trim_end()).starts_with(&root) {
                        out.push(PathBuf::from("/dev").join(e.file_name()));
                    }
                }
            }
        }
        out
    }

    /// Wait until nothing is mounted or attached under the env.
    pub fn wait_clean(&self) -> Result<()> {
        wait_for("mounts and loop devices to go", Duration::from_secs(10), || {
            let (m, l) = (self.mounts_under(), self.loops_under());
            Ok((m.is_empty() && l.is_empty()).then_some(()))
        })
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // 1. Ask fsmount to clean every mount recorded in the env's state
        //    directory or its registry (kills its daemons).
        for dir in [self.state().join("mounts"), self.registry().join("mounts")] {
            let Ok(rd) = std::fs::read_dir(dir) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "toml") {
                    if let Ok(text) = std::fs::read_to_string(&p) {
                        if let Some(mp) = text.lines().find_map(|l| l.strip_prefix("mountpoint = "))
                        {
                            let mp = mp.trim_matches('"').to_string();
                            let _ = self.fsmount(&[
                                OsStr::new("umount"),
                                OsStr::new(&mp),
                                OsStr::new("--lazy"),
                                OsStr::new("--force"),
                            ]);
                        }
                    }
                }
            }
        }
        // 2. fsmount processes still running for the env (by pid).
        for pid in fsmount_pids_under(self.path()) {
            // SAFETY: kill(2) of a process found by its command line.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        // 3. Whatever is still mounted under the env: lazy unmount.
        for mp in self.mounts_under() {
            let _ = umount_lazy(&mp);
        }
        // 4. Loop devices of images under the env.
        for dev in self.loops_under() {
            let _ = Command::new("losetup").arg("-d").arg(&dev).status();
        }
    }
}

/// Fail with the output unless the command succeeded; its stdout.
fn ok_stdout(args: &[&OsStr], out: Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "fsmount {:?} failed ({}): {}{}",
            args,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Pid of the process serving `mnt`, from its record in state directory
/// `state`.
pub fn record_pid(state: &Path, mnt: &Path) -> Result<u32> {
    for ent in std::fs::read_dir(state.join("mounts"))? {
        let p = ent?.path();
        if p.extension().is_some_and(|x| x == "toml") {
            let text = std::fs::read_to_string(&p)?;
            if text.contains(&format!("mountpoint = \"{}\"", mnt.display())) {
                let pid_line =
                    text.lines().find(|l| l.starts_with("pid = ")).context("record without pid")?;
                return Ok(pid_line.trim_start_matches("pid = ").trim().parse()?);
            }
        }
    }
    bail!("no record for {} in {}", mnt.display(), state.display())
}

/// Live fsmount processes whose command line names a path under `root`
/// (every fsmount a test starts mounts under its env).
pub fn fsmount_pids_under(root: &Path) -> Vec<u32> {
    let root = root.as_os_str().as_bytes();
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else { return out };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else { continue };
        let mut args = cmdline.split(|b| *b == 0);
        let is_fsmount = args.next().is_some_and(|a0| a0.ends_with(b"fsmount"));
        if is_fsmount && args.any(|a| a.starts_with(root)) && !process_gone(pid) {
            out.push(pid);
        }
    }
    out
}

fn umount_lazy(p: &Path) -> std::io::Result<()> {
    let c = CString::new(p.as_os_str().as_bytes())?;
    // SAFETY: c is a valid NUL-terminated path.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether a process has exited (a zombie not yet reaped counts as gone:
/// daemons are reparented to an init that reaps when it likes).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(')').and_then(|(_, r)| r.trim_start().chars().next());
            matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => true,
    }
}

/// Wait until `pid` has exited.
pub fn wait_gone(pid: u32) -> Result<()> {
    wait_for(&format!("pid {pid} to exit"), Duration::from_secs(10), || {
        Ok(process_gone(pid).then_some(()))
    })
}

/// (mountpoint, fstype) of every mount, in mount order.
pub fn mountinfo() -> Vec<(PathBuf, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mp = left.split(' ').nth(4)?;
            let fstype = right.split(' ').next()?;
            Some((PathBuf::from(OsStr::from_bytes(&unescape(mp))), fstype.to_string()))
        })
        .collect()
}

fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// The fstype mounted on top at `p`, if any.
pub fn fstype_at(p: &Path) -> Option<String> {
    mountinfo().into_iter().rev().find(|(mp, _)| mp == p).map(|(_, t)| t)
}

/// Everything the comparison looks at for one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u64,
    pub mtime: (i64, i64),
    pub rdev: u64,
    pub ino: u64,
    pub target: Option<OsString>,
    pub xattrs: BTreeMap<OsString, Vec<u8>>,
    /// BLAKE3-free digest: the content itself for small files, else a
    /// length + FNV hash (enough to catch any wrong byte in tests).
    pub content: Option<(u64, u64)>,
}

fn kind_of(ft: std::fs::FileType) -> &'static str {
    if ft.is_file() {
        "file"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_char_device() {
        "chardev"
    } else if ft.is_block_device() {
        "blockdev"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else {
        "unknown"
    }
}

/// FNV-1a over a file's bytes (streamed).
pub fn content_hash(p: &Path) -> Result<(u64, u64)> {
    use std::io::Read;
    let mut f = std::fs::File::open(p).with_context(|| format!("open {}", p.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).with_context(|| format!("read {}", p.display()))?;
        if n == 0 {
            break;
        }
        len += n as u64;
        for b in &buf[..n] {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    Ok((len, h))
}

/// All xattrs of a path (not following symlinks).
pub fn xattrs(p: &Path) -> Result<BTreeMap<OsString, Vec<u8>>> {
    let c = CString::new(p.as_os_str().as_bytes())?;
    let mut names = vec![0u8; 64 * 1024];
    // SAFETY: c is valid; names is a live buffer of the given length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOTSUP) {
            return Ok(BTreeMap::new());
        }
        return Err(e).with_context(|| format!("listxattr {}", p.display()));
    }
    names.truncate(n as usize);
    let mut out = BTreeMap::new();
    for name in names.split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let cn = CString::new(name)?;
        let mut val = vec![0u8; 64 * 1024];
        // SAFETY: c and cn are valid; val is a live buffer of the given length.
        let m =
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), val.as_mut_ptr().cast(), val.len()) };
        if m < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("getxattr {} {:?}", p.display(), cn));
        }
        val.truncate(m as usize);
        out.insert(OsString::from_vec(name.to_vec()), val);
    }
    Ok(out)
}

/// Walk `root` (not following symlinks) and describe every entry by its
/// path relative to `root` ("" is the root itself).
pub fn describe_tree(root: &Path, with_content: bool) -> Result<BTreeMap<PathBuf, EntryInfo>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let p = root.join(&rel);
        let md = std::fs::symlink_metadata(&p).with_context(|| format!("lstat {}", p.display()))?;
        let ft = md.file_type();
        if ft.is_dir() {
            for e in std::fs::read_dir(&p).with_context(|| format!("readdir {}", p.display()))? {
                stack.push(rel.join(e?.file_name()));
            }
        }
        let info = EntryInfo {
            kind: kind_of(ft),
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            size: if ft.is_dir() { 0 } else { md.size() },
            nlink: md.nlink(),
            mtime: (md.mtime(), md.mtime_nsec()),
            rdev: md.rdev(),
            ino: md.ino(),
            target: if ft.is_symlink() {
                Some(std::fs::read_link(&p)?.into_os_string())
            } else {
                None
            },
            xattrs: xattrs(&p)?,
            content: if ft.is_file() && with_content { Some(content_hash(&p)?) } else { None },
        };
        out.insert(rel, info);
    }
    Ok(out)
}

/// Compare two descriptions; `ignore` names fields to skip (e.g. "ino").
pub fn compare_trees(
    want: &BTreeMap<PathBuf, EntryInfo>,
    got: &BTreeMap<PathBuf, EntryInfo>,
    ignore: &[&str],
) -> Result<()> {
    let mut problems = Vec::new();
    for p in want.keys().filter(|k| !got.contains_key(*k)) {
        problems.push(format!("missing {p:?}"));
    }
    for p in got.keys().filter(|k| !want.contains_key(*k)) {
        problems.push(format!("extra {p:?}"));
    }
    for (p, w) in want {
        let Some(g) = got.get(p) else { continue };
        let mut w = w.clone();
        let mut g = g.clone();
        for f in ignore {
            match *f {
                "ino" => (w.ino, g.ino) = (0, 0),
                "dir_nlink" if w.kind == "dir" => (w.nlink, g.nlink) = (0, 0),
                "root" if p.as_os_str().is_empty() => continue,
                _ => {}
            }
        }
        if ignore.contains(&"root") && p.as_os_str().is_empty() {
            continue;
        }
        if w != g {
            problems.push(format!("{p:?}:\n  want {w:?}\n  got  {g:?}"));
        }
    }
    ensure!(problems.is_empty(), "{} differences:\n{}", problems.len(), problems.join("\n"));
    Ok(())
}

/// Build a tree with every kind of entry a root filesystem has: all file
/// types, hardlinks, xattrs (security.capability too), set-uid and sticky
/// modes, owners, nanosecond mtimes, sparse/empty files, awkward names.
pub fn make_rich_tree(root: &Path) -> Result<()> {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let w = |p: &str, data: &[u8]| -> Result<PathBuf> {
        let path = root.join(p);
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(&path, data)?;
        Ok(path)
    };
    w("etc/hostname", b"zosfs\n")?;
    w("etc/empty", b"")?;
    let big: Vec<u8> =
        (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    w("usr/lib/big.bin", &big)?;
    let bin = w("usr/bin/tool", b"#!/bin/sh\necho tool\n")?;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o4755))?;
    set_xattr(
        &bin,
        "security.capability",
        &[1, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    )?;
    set_xattr(&bin, "user.note", b"hello xattr")?;
    std::fs::hard_link(&bin, root.join("usr/bin/tool-link"))?;
    std::fs::create_dir_all(root.join("tmp"))?;
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    symlink("../usr/bin/tool", root.join("etc/tool"))?;
    symlink("/nonexistent/target", root.join("etc/dangling"))?;
    symlink("usr", root.join("usrlink"))?;
    w("names/with space", b"sp")?;
    w("names/new\nline", b"nl")?;
    let raw = root.join("names").join(OsStr::from_bytes(b"bad\xff\xfeutf8"));
    std::fs::write(&raw, b"raw")?;
    // A sparse file: 8 MiB hole with a little data at both ends.
    {
        use std::os::unix::fs::FileExt;
        std::fs::create_dir_all(root.join("var"))?;
        let f = std::fs::File::create(root.join("var/sparse"))?;
        f.write_at(b"head", 0)?;
        f.write_at(b"tail", 8 << 20)?;
    }
    // Device nodes, a fifo, a socket.
    std::fs::create_dir_all(root.join("dev"))?;
    mknod(&root.join("dev/null"), libc::S_IFCHR | 0o666, libc::makedev(1, 3))?;
    mknod(&root.join("dev/loop9"), libc::S_IFBLK | 0o660, libc::makedev(7, 9))?;
    mknod(&root.join("dev/bigminor"), libc::S_IFCHR | 0o600, libc::makedev(259, 70000))?;
    mknod(&root.join("run-fifo"), libc::S_IFIFO | 0o644, 0)?;
    {
        let _l = std::os::unix::net::UnixListener::bind(root.join("sock"))?;
    }
    // Owners and a private directory.
    let home = root.join("home/user");
    std::fs::create_dir_all(&home)?;
    w("home/user/.profile", b"export X=1\n")?;
    chown(&home, 1000, 1000)?;
    chown(&home.join(".profile"), 1000, 100)?;
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700))?;
    set_xattr(&home, "user.dirattr", b"d")?;
    // A wide directory.
    for i in 0..300 {
        w(&format!("wide/f{i:04}"), format!("{i}").as_bytes())?;
    }
    // Nanosecond mtimes (set last, bottom-up, so they stick).
    set_mtime(&root.join("etc/hostname"), 1_600_000_000, 123_456_789)?;
    set_mtime(&root.join("usr/lib/big.bin"), 1_500_000_000, 987_654_321)?;
    Ok(())
}

pub fn set_xattr(p: &Path, name: &str, val: &[u8]) -> Result<()> {
    let c = CString::new(p.as_os_str().as_bytes())?;
    let n = CString::new(name)?;
    // SAFETY: valid C strings and a live value buffer.
    let rc = unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), val.as_ptr().cast(), val.len(), 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setxattr {name} {}", p.display()));
    }
    Ok(())
}

pub fn mknod(p: &Path, mode: u32, dev: u64) -> Result<()> {
    let c = CString::new(p.as_os_str().as_bytes())?;
    // SAFETY: c is a valid path.
    if unsafe { libc::mknod(c.as_ptr(), mode, dev) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("mknod {}", p.display()));
    }
    Ok(())
}

pub fn chown(p: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", p.display()))
}

pub fn set_mtime(p: &Path, secs: i64, nsec: i64) -> Result<()> {
    let c = CString::new(p.as_os_str().as_bytes())?;
    let ts = [
        libc::timespec { tv_sec: secs, tv_nsec: nsec },
        libc::timespec { tv_sec: secs, tv_nsec: nsec },
    ];
    // SAFETY: c is valid; ts is an array of two timespecs.
    if unsafe {
        libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW)
    } != 0
    {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("utimensat {}", p.display()));
    }
    Ok(())
}
