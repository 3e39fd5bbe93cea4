//! Helpers of the nbdserver end-to-end tests: a server under test that is
//! always stopped, running the real NBD clients with their output checked,
//! deterministic test data, and a minimal raw-socket client for frames no
//! real client would send.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::{ChildGuard, bin, free_port, wait_port};

/// An `nbdserver` child on a free port with its own cache dir.
pub struct NbdServer {
    pub port: u16,
    pub cache_dir: PathBuf,
    args: Vec<String>,
    guard: Option<ChildGuard>,
    /// Listened once: restarts must get the same port.
    started: bool,
}

/// Whether process `pid` has a TCP socket listening on `port` (its socket
/// fds against the kernel's table of listening sockets).
fn listens(pid: u32, port: u16) -> Result<bool> {
    let mut inodes = std::collections::HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(link) = std::fs::read_link(fd?.path()) else { continue };
        let link = link.to_string_lossy().into_owned();
        if let Some(inode) = link.strip_prefix("socket:[").and_then(|l| l.strip_suffix(']')) {
            inodes.insert(inode.to_string());
        }
    }
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp"))?;
    Ok(table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let local_port = f.get(1).and_then(|a| a.rsplit(':').next());
        // Field 3 is the state (0A: LISTEN), field 9 the socket's inode.
        f.len() > 9
            && f[3] == "0A"
            && inodes.contains(f[9])
            && local_port.and_then(|p| u16::from_str_radix(p, 16).ok()) == Some(port)
    }))
}

impl NbdServer {
    /// Start with the given extra arguments (`--export …`); `cache_dir`
    /// outlives restarts.
    pub fn start(cache_dir: &Path, args: &[&str]) -> Result<Self> {
        let mut s = NbdServer {
            port: free_port(),
            cache_dir: cache_dir.to_path_buf(),
            args: args.iter().map(|s| s.to_string()).collect(),
            guard: None,
            started: false,
        };
        s.spawn()?;
        Ok(s)
    }

    /// Start the server and wait until it listens on `self.port`. Ports
    /// come from [`free_port`], which another process on the machine may
    /// take before the server binds it: then the server exits, and a test
    /// waiting only for the port would talk to that other process (seen
    /// as connection resets in `nbd_tls`). So the wait is for a listening
    /// socket of this very child; on a first start whose port was taken,
    /// the next free port is tried.
    fn spawn(&mut self) -> Result<()> {
        for _ in 0..4 {
            if self.spawn_on_port()? {
                return Ok(());
            }
            ensure!(!self.started, "nbdserver could not listen again on port {}", self.port);
            self.port = free_port();
        }
        bail!("nbdserver found no free port")
    }

    /// True once the child listens on the port; false when it exited first.
    fn spawn_on_port(&mut self) -> Result<bool> {
        let mut cmd = Command::new(bin("nbdserver"));
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--cache-dir")
            .arg(&self.cache_dir)
            .args(&self.args)
            .env_remove("ZOSFS_STORE")
            .stdout(Stdio::null());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        let mut guard = ChildGuard::spawn(cmd, "nbdserver")?;
        let port = self.port;
        let listening = crate::wait_for("nbdserver to listen", Duration::from_secs(20), || {
            if guard.child.try_wait()?.is_some() {
                return Ok(Some(false));
            }
            Ok(listens(guard.pid(), port)?.then_some(true))
        })?;
        if listening {
            self.guard = Some(guard);
            self.started = true;
        }
        Ok(listening)
    }

    pub fn uri(&self, export: &str) -> String {
        format!("nbd://127.0.0.1:{}/{export}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.guard.as_ref().map_or(0, |g| g.pid())
    }

    /// SIGTERM; the server must exit 0 (after flushing) within 30 s.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut g) = self.guard.take() {
            let st = g.terminate(Duration::from_secs(30))?;
            ensure!(st.success(), "nbdserver exited with {st} after SIGTERM");
        }
        Ok(())
    }

    /// SIGKILL (crash).
    pub fn kill9(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.kill9();
        }
    }

    /// Clean stop, then start again on the same port and cache dir.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.spawn()
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        self.guard.as_mut().is_some_and(|g| matches!(g.child.try_wait(), Ok(None)))
    }
}

/// Resident memory of a process (VmRSS of /proc/PID/status), in bytes.
pub fn vm_rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))?;
    Ok(kb * 1024)
}

/// Run a command; fail with its stderr unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} exited with {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Run and return stdout as text.
pub fn run_text(cmd: &mut Command) -> Result<String> {
    Ok(String::from_utf8(run(cmd)?.stdout)?)
}

/// Deterministic pseudo-random bytes (xorshift64*), different per seed.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

// ---- A minimal raw client, for frames real clients never send ----

pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
pub const OPT_LIST: u32 = 3;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_SET_META_CONTEXT: u32 = 10;
pub const REP_ACK: u32 = 1;

/// A request header, any field of which a test may break.
#[derive(Debug, Clone, Copy)]
pub struct Req {
    pub magic: u32,
    pub flags: u16,
    pub kind: u16,
    pub cookie: u64,
    pub offset: u64,
    pub len: u32,
}

impl Req {
    pub fn new(kind: u16, offset: u64, len: u32) -> Self {
        Req { magic: REQUEST_MAGIC, flags: 0, kind, cookie: 1, offset, len }
    }

    pub fn flags(self, flags: u16) -> Self {
        Req { flags, ..self }
    }

    pub fn magic(self, magic: u32) -> Self {
        Req { magic, ..self }
    }

    pub fn cookie(self, cookie: u64) -> Self {
        Req { cookie, ..self }
    }

    /// The 28-byte request header on the wire.
    pub fn header(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(28);
        b.extend_from_slice(&self.magic.to_be_bytes());
        b.extend_from_slice(&self.flags.to_be_bytes());
        b.extend_from_slice(&self.kind.to_be_bytes());
        b.extend_from_slice(&self.cookie.to_be_bytes());
        b.extend_from_slice(&self.offset.to_be_bytes());
        b.extend_from_slice(&self.len.to_be_bytes());
        b
    }
}

/// A raw NBD connection over TCP.
pub struct RawClient {
    pub s: TcpStream,
}

impl RawClient {
    /// Connect and send client flags (fixed newstyle + no zeroes).
    pub fn connect(port: u16) -> Result<Self> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut c = RawClient { s };
        let mut g = [0u8; 18];
        c.s.read_exact(&mut g)?;
        ensure!(u64::from_be_bytes(g[..8].try_into()?) == NBD_MAGIC, "no NBDMAGIC");
        ensure!(u64::from_be_bytes(g[8..16].try_into()?) == IHAVEOPT, "no IHAVEOPT");
        c.s.write_all(&3u32.to_be_bytes())?;
        Ok(c)
    }

    pub fn send_option(&mut self, code: u32, data: &[u8]) -> Result<()> {
        let mut b = Vec::new();
        b.extend_from_slice(&IHAVEOPT.to_be_bytes());
        b.extend_from_slice(&code.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        Ok(self.s.write_all(&b)?)
    }

    /// One option reply: (option, type, data).
    pub fn option_reply(&mut self) -> Result<(u32, u32, Vec<u8>)> {
        let mut h = [0u8; 20];
        self.s.read_exact(&mut h)?;
        let opt = u32::from_be_bytes(h[8..12].try_into()?);
        let typ = u32::from_be_bytes(h[12..16].try_into()?);
        let len = u32::from_be_bytes(h[16..20].try_into()?);
        let mut d = vec![0u8; len as usize];
        self.s.read_exact(&mut d)?;
        Ok((opt, typ, d))
    }

    /// NBD_OPT_GO on `export`; returns (size, transmission flags).
    pub fn go(&mut self, export: &str) -> Result<(u64, u16)> {
        let mut d = Vec::new();
        d.extend_from_slice(&(export.len() as u32).to_be_bytes());
        d.extend_from_slice(export.as_bytes());
        d.extend_from_slice(&0u16.to_be_bytes());
        self.send_option(OPT_GO, &d)?;
        let mut info = None;
        loop {
            let (_, typ, data) = self.option_reply()?;
            match typ {
                REP_ACK => break,
                3 if data.len() == 12 && data[..2] == [0, 0] => {
                    let size = u64::from_be_bytes(data[2..10].try_into()?);
                    let flags = u16::from_be_bytes(data[10..12].try_into()?);
                    info = Some((size, flags));
                }
                3 => {}
                other => bail!(
                    "GO failed with reply type {other:#x}: {}",
                    String::from_utf8_lossy(&data)
                ),
            }
        }
        info.context("GO succeeded without NBD_INFO_EXPORT")
    }

    /// Structured replies, then SET_META_CONTEXT of `query` on `export`.
    pub fn structured_with_meta(&mut self, export: &str, query: &str) -> Result<()> {
        self.send_option(OPT_STRUCTURED_REPLY, &[])?;
        ensure!(self.option_reply()?.1 == REP_ACK, "structured replies refused");
        let mut d = (export.len() as u32).to_be_bytes().to_vec();
        d.extend_from_slice(export.as_bytes());
        d.extend_from_slice(&1u32.to_be_bytes());
        d.extend_from_slice(&(query.len() as u32).to_be_bytes());
        d.extend_from_slice(query.as_bytes());
        self.send_option(OPT_SET_META_CONTEXT, &d)?;
        loop {
            let (_, typ, data) = self.option_reply()?;
            match typ {
                REP_ACK => return Ok(()),
                4 => {}
                other => bail!("SET_META_CONTEXT: reply {other:#x} {:?}", data),
            }
        }
    }

    /// Send a request header and its payload.
    pub fn request(&mut self, r: Req, payload: &[u8]) -> Result<()> {
        let mut b = r.header();
        b.extend_from_slice(payload);
        Ok(self.s.write_all(&b)?)
    }

    /// A simple reply: (error, cookie). Data of a successful simple READ is
    /// left unread.
    pub fn simple_reply(&mut self) -> Result<(u32, u64)> {
        let mut h = [0u8; 16];
        self.s.read_exact(&mut h)?;
        ensure!(
            u32::from_be_bytes(h[..4].try_into()?) == SIMPLE_REPLY_MAGIC,
            "not a simple reply: {h:?}"
        );
        Ok((u32::from_be_bytes(h[4..8].try_into()?), u64::from_be_bytes(h[8..16].try_into()?)))
    }

    /// True when the server closed the connection (EOF), within the read timeout.
    pub fn closed_by_server(&mut self) -> bool {
        let mut b = [0u8; 1];
        match self.s.read(&mut b) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    }
}

// ---- An export as a file and a block device, without the kernel client ----

/// `nbdfuse DIR URI`: the export appears as `DIR/nbd`. Unmounted and
/// stopped when dropped.
pub struct FuseFile {
    pub dir: PathBuf,
    guard: Option<ChildGuard>,
}

impl FuseFile {
    pub fn mount(dir: &Path, uri: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let pidfile = dir.with_extension("pid");
        let _ = std::fs::remove_file(&pidfile);
        let mut cmd = Command::new("nbdfuse");
        cmd.arg("-P").arg(&pidfile).arg(dir).arg(uri);
        let guard = ChildGuard::spawn(cmd, "nbdfuse")?;
        let f = FuseFile { dir: dir.to_path_buf(), guard: Some(guard) };
        // nbdfuse writes its pid file once the file is being served.
        crate::wait_for("nbdfuse to serve", Duration::from_secs(20), || {
            Ok(pidfile.exists().then_some(()))
        })?;
        Ok(f)
    }

    pub fn file(&self) -> PathBuf {
        self.dir.join("nbd")
    }

    /// Unmount and wait for nbdfuse to exit 0.
    pub fn unmount(mut self) -> Result<()> {
        run(Command::new("fusermount3").arg("-u").arg(&self.dir))?;
        if let Some(mut g) = self.guard.take() {
            let st = crate::wait_for("nbdfuse to exit", Duration::from_secs(20), || {
                Ok(g.child.try_wait()?)
            })?;
            ensure!(st.success(), "nbdfuse exited with {st}");
        }
        Ok(())
    }
}

impl Drop for FuseFile {
    fn drop(&mut self) {
        if self.guard.is_some() {
            let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(&self.dir).status();
        }
    }
}

/// A loop device over a file, detached when dropped.
pub struct LoopDev {
    pub dev: String,
}

impl LoopDev {
    pub fn attach(file: &Path) -> Result<Self> {
        let dev = run_text(Command::new("losetup").args(["--find", "--show"]).arg(file))?;
        Ok(LoopDev { dev: dev.trim().to_string() })
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// A mounted filesystem, unmounted when dropped.
pub struct Mounted {
    pub dir: PathBuf,
    mounted: bool,
}

impl Mounted {
    pub fn mount(dev: &str, dir: &Path, opts: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        run(Command::new("mount").args(["-o", opts, dev]).arg(dir))?;
        Ok(Mounted { dir: dir.to_path_buf(), mounted: true })
    }

    pub fn unmount(mut self) -> Result<()> {
        run(Command::new("umount").arg(&self.dir))?;
        self.mounted = false;
        Ok(())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

// ---- Images in a chunk store replica ----

/// `chunkstore serve` (the 0-db-compatible server) on a fixed port, so it
/// can be stopped and started again at the same address.
pub struct Replica {
    pub port: u16,
    pub data: PathBuf,
    guard: Option<ChildGuard>,
}

impl Replica {
    pub fn start(data: &Path) -> Result<Self> {
        let mut r = Replica { port: free_port(), data: data.to_path_buf(), guard: None };
        r.spawn()?;
        Ok(r)
    }

    fn spawn(&mut self) -> Result<()> {
        let mut cmd = Command::new(bin("chunkstore"));
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{}", self.port), "--data"])
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.guard = Some(ChildGuard::spawn(cmd, "chunkstore serve")?);
        wait_port(self.port, Duration::from_secs(20))
    }

    /// The store URL (namespace `default`).
    pub fn url(&self) -> String {
        format!("zdb://127.0.0.1:{}/default", self.port)
    }

    /// Crash it (SIGKILL).
    pub fn kill9(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.kill9();
        }
    }

    /// Start it again on the same port and data.
    pub fn restart(&mut self) -> Result<()> {
        if let Some(mut g) = self.guard.take() {
            g.terminate(Duration::from_secs(30))?;
        }
        self.spawn()
    }
}

/// Write `disk.raw` of `size` bytes into a fresh directory: zeros except
/// the given `(offset, length)` ranges, filled with [`pattern`] data.
/// Returns the image path.
pub fn disk_image(dir: &Path, size: u64, data: &[(u64, usize)]) -> Result<PathBuf> {
    use std::os::unix::fs::FileExt;
    std::fs::create_dir_all(dir)?;
    let path = dir.join("disk.raw");
    let f = std::fs::File::create(&path)?;
    f.set_len(size)?;
    for (i, &(off, len)) in data.iter().enumerate() {
        f.write_all_at(&pattern(1000 + i as u64, len), off)?;
    }
    f.sync_all()?;
    Ok(path)
}

/// `flist pack DIR` into `out`, chunks to `store`.
pub fn pack(dir: &Path, store: &str, out: &Path) -> Result<()> {
    run(Command::new(bin("flist"))
        .args(["pack", "--no-progress", "--store", store, "--output"])
        .arg(out)
        .arg(dir))?;
    Ok(())
}

/// `nbdserver stats`: export name → counter → value.
pub fn stats(
    cache_dir: &Path,
) -> Result<std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>> {
    let text =
        run_text(Command::new(bin("nbdserver")).arg("stats").arg("--cache-dir").arg(cache_dir))?;
    let mut out = std::collections::BTreeMap::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("export ") {
            cur = Some(name.to_string());
            out.insert(name.to_string(), std::collections::BTreeMap::new());
        } else if let (Some(c), Some((k, v))) = (&cur, line.trim().split_once(' ')) {
            if let Ok(v) = v.parse::<u64>() {
                out.get_mut(c).expect("inserted").insert(k.to_string(), v);
            }
        }
    }
    Ok(out)
}

/// One counter of one export.
pub fn stat(cache_dir: &Path, export: &str, key: &str) -> Result<u64> {
    let s = stats(cache_dir)?;
    s.get(export)
        .and_then(|e| e.get(key))
        .copied()
        .with_context(|| format!("no {key} for export {export} in nbdserver stats"))
}

/// `nbdsh` runs `python3 -m nbd`; the Debian module lives in the system
/// interpreter, which may not be the first python3 on PATH.
pub fn nbdsh() -> Command {
    let path = std::env::var("PATH").unwrap_or_default();
    let mut c = Command::new("nbdsh");
    c.env("PATH", format!("/usr/bin:{path}"));
    c
}

/// Run a Python script under nbdsh with `sys.argv[1:] = args`.
pub fn nbdsh_script(dir: &Path, name: &str, script: &str, args: &[&str]) -> Command {
    let file = dir.join(name);
    std::fs::write(&file, script).expect("write nbdsh script");
    let argv: Vec<String> =
        std::iter::once(name.to_string()).chain(args.iter().map(|s| s.to_string())).collect();
    let code = format!(
        "import sys; sys.argv = {argv:?}; exec(open({:?}).read())",
        file.display().to_string()
    );
    let mut c = nbdsh();
    c.arg("-c").arg(code);
    c
}
