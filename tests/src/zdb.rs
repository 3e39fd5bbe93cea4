//! Helpers for the 0-db server tests: start `chunkstore serve`, talk raw
//! RESP over TCP or a unix socket, parse replies.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{ChildGuard, bin};

/// A running `chunkstore serve`, killed when dropped.
pub struct Zdb {
    pub guard: ChildGuard,
    pub addr: SocketAddr,
    pub data: PathBuf,
    pub unix: Option<PathBuf>,
    /// Every line the server wrote to stderr so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Zdb {
    /// Start on 127.0.0.1 with a port the server picks (read back from its
    /// "listening on" line), data in `data`, plus `extra` flags.
    pub fn start(data: &Path, extra: &[&str]) -> Result<Zdb> {
        Self::start_with(data, None, extra)
    }

    /// Same, also listening on the unix socket `unix`.
    pub fn start_with(data: &Path, unix: Option<&Path>, extra: &[&str]) -> Result<Zdb> {
        Self::start_on("127.0.0.1:0", data, unix, extra)
    }

    /// Same, on the TCP address `listen`.
    pub fn start_on(listen: &str, data: &Path, unix: Option<&Path>, extra: &[&str]) -> Result<Zdb> {
        let mut cmd = Command::new(bin("chunkstore"));
        cmd.args(["serve", "--listen", listen, "--data"]).arg(data).args(extra);
        if let Some(u) = unix {
            cmd.arg("--unix").arg(u);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut guard = ChildGuard::spawn(cmd, "chunkstore serve")?;
        let stderr = guard.child.stderr.take().expect("stderr piped");
        let (tx, rx) = mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = log.clone();
        // Forward the server's stderr to ours, keep it, report the address.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                eprintln!("[chunkstore serve] {line}");
                keep.lock().expect("log lock").push(line.clone());
                if let Some(a) = line.strip_prefix("chunkstore serve: listening on ") {
                    if let Ok(addr) = a.parse::<SocketAddr>() {
                        let _ = tx.send(addr);
                    }
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let status = guard.child.try_wait()?;
                bail!("chunkstore serve did not start (exit status {status:?})");
            }
        };
        Ok(Zdb { guard, addr, data: data.to_path_buf(), unix: unix.map(Path::to_path_buf), log })
    }

    pub fn connect(&self) -> Result<Conn> {
        Conn::tcp(self.addr)
    }

    /// The server's stderr lines so far that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log.lock().expect("log lock").iter().filter(|l| l.contains(needle)).cloned().collect()
    }

    pub fn connect_unix(&self) -> Result<Conn> {
        Conn::unix(self.unix.as_deref().context("server has no unix socket")?)
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        self.guard.terminate(Duration::from_secs(30))
    }
}

/// A client that keeps doing SET/GET round trips until told to stop.
pub fn steady_client(
    server: &Zdb,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
) -> Result<std::thread::JoinHandle<Result<()>>> {
    let mut c = server.connect()?;
    Ok(std::thread::spawn(move || {
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) || i < 10 {
            let key = format!("steady-{}", i % 64);
            let val = format!("value-{i}");
            let r = c.call(&[b"SET", key.as_bytes(), val.as_bytes()])?;
            anyhow::ensure!(r == Reply::bulk(key.as_bytes()), "SET {key}: {r:?}");
            let r = c.call(&[b"GET", key.as_bytes()])?;
            anyhow::ensure!(r == Reply::bulk(val.as_bytes()), "GET {key}: {r:?}");
            done.fetch_add(1, Ordering::Relaxed);
            i += 1;
        }
        Ok(())
    }))
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// A raw RESP connection.
pub struct Conn {
    s: Stream,
    /// Bytes received but not yet returned.
    buf: Vec<u8>,
}

impl Conn {
    pub fn tcp(addr: SocketAddr) -> Result<Conn> {
        let s = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
        s.set_nodelay(true)?;
        Ok(Conn { s: Stream::Tcp(s), buf: Vec::new() })
    }

    pub fn unix(path: &Path) -> Result<Conn> {
        let s = UnixStream::connect(path).with_context(|| format!("connect {}", path.display()))?;
        Ok(Conn { s: Stream::Unix(s), buf: Vec::new() })
    }

    /// A second handle on the same socket (for a writer thread).
    pub fn try_clone_writer(&self) -> Result<Box<dyn Write + Send>> {
        Ok(match &self.s {
            Stream::Tcp(s) => Box::new(s.try_clone()?),
            Stream::Unix(s) => Box::new(s.try_clone()?),
        })
    }

    pub fn send(&mut self, b: &[u8]) -> std::io::Result<()> {
        match &mut self.s {
            Stream::Tcp(s) => s.write_all(b),
            Stream::Unix(s) => s.write_all(b),
        }
    }

    fn set_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        match &self.s {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
        }
    }

    fn read_some(&mut self, deadline: Instant) -> std::io::Result<usize> {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        self.set_timeout(Some(left))?;
        let mut chunk = vec![0u8; 256 * 1024];
        let n = match &mut self.s {
            Stream::Tcp(s) => s.read(&mut chunk)?,
            Stream::Unix(s) => s.read(&mut chunk)?,
        };
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Exactly the bytes of the next `n` complete replies.
    pub fn read_replies(&mut self, n: usize, timeout: Duration) -> Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(len) = replies_len(&self.buf, n) {
                return Ok(self.buf.drain(..len).collect());
            }
            if Instant::now() >= deadline {
                bail!(
                    "timed out waiting for {n} replies; have {:?}",
                    String::from_utf8_lossy(&self.buf[..self.buf.len().min(200)])
                );
            }
            match self.read_some(deadline) {
                Ok(0) => bail!(
                    "connection closed before {n} replies; have {:?}",
                    String::from_utf8_lossy(&self.buf[..self.buf.len().min(200)])
                ),
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(e) => bail!("read: {e}; have {:?}", String::from_utf8_lossy(&self.buf)),
            }
        }
    }

    /// Send one command and return its parsed reply.
    pub fn call(&mut self, args: &[&[u8]]) -> Result<Reply> {
        self.send(&encode(args))?;
        let raw = self.read_replies(1, Duration::from_secs(30))?;
        Ok(parse_reply(&raw).expect("complete reply").0)
    }

    /// Nothing arrives within `wait` (the connection stays open and silent).
    pub fn silent_for(&mut self, wait: Duration) -> Result<bool> {
        if !self.buf.is_empty() {
            return Ok(false);
        }
        match self.read_some(Instant::now() + wait) {
            Ok(0) => Ok(false),
            Ok(_) => Ok(false),
            Err(e) if is_timeout(&e) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// The server closed (or reset) the connection within `timeout`,
    /// with nothing more sent before.
    pub fn closed_within(&mut self, timeout: Duration) -> Result<bool> {
        if !self.buf.is_empty() {
            return Ok(false);
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.read_some(deadline) {
                Ok(0) => return Ok(true),
                Ok(_) => return Ok(false),
                Err(e) if is_timeout(&e) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(true),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }

    /// Close our side abruptly (tests of clients that vanish).
    pub fn drop_now(self) {
        if let Stream::Tcp(s) = &self.s {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

/// A RESP request: an array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A parsed RESP reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

impl Reply {
    pub fn bulk(b: &[u8]) -> Reply {
        Reply::Bulk(Some(b.to_vec()))
    }
    pub fn err(s: &str) -> Reply {
        Reply::Error(s.to_string())
    }
    pub fn ok() -> Reply {
        Reply::Status("OK".into())
    }
}

fn line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let i = buf.windows(2).position(|w| w == b"\r\n")?;
    Some((&buf[..i], i + 2))
}

/// Parse one reply; returns it and the bytes it used, or None if incomplete.
pub fn parse_reply(buf: &[u8]) -> Option<(Reply, usize)> {
    let (&kind, _) = buf.split_first()?;
    let (text, used) = line(&buf[1..]).map(|(t, n)| (t, n + 1))?;
    let text_s = String::from_utf8_lossy(text).into_owned();
    match kind {
        b'+' => Some((Reply::Status(text_s), used)),
        b'-' => Some((Reply::Error(text_s), used)),
        b':' => Some((Reply::Int(text_s.parse().ok()?), used)),
        b'$' => {
            let n: i64 = text_s.parse().ok()?;
            if n < 0 {
                return Some((Reply::Bulk(None), used));
            }
            let n = n as usize;
            if buf.len() < used + n + 2 {
                return None;
            }
            Some((Reply::Bulk(Some(buf[used..used + n].to_vec())), used + n + 2))
        }
        b'*' => {
            let n: i64 = text_s.parse().ok()?;
            let mut items = Vec::new();
            let mut off = used;
            for _ in 0..n.max(0) {
                let (r, u) = parse_reply(&buf[off..])?;
                items.push(r);
                off += u;
            }
            Some((Reply::Array(items), off))
        }
        // Not RESP: treat everything as one opaque "reply" so callers see it.
        _ => Some((
            Reply::Error(format!("<not RESP: {:?}>", String::from_utf8_lossy(buf))),
            buf.len(),
        )),
    }
}

/// Length of the first `n` complete replies in `buf`.
pub fn replies_len(buf: &[u8], n: usize) -> Option<usize> {
    let mut off = 0;
    for _ in 0..n {
        off += parse_reply(&buf[off..])?.1;
    }
    Some(off)
}
