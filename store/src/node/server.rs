//! The owner's side of the socket: one accept thread, one thread per
//! client connection, each carrying out one request at a time on the
//! owner's store ([`exec`]).
//!
//! Bounds: at most [`MAX_CONNECTIONS`] clients; one request of at most
//! [`MAX_REQUEST`] bytes in memory per connection; peers are checked with
//! SO_PEERCRED (same uid or root) before anything is read.
//!
//! Stopping ([`Server::stop`], also on drop) closes the listener, shuts
//! every connection down and joins every thread: requests in flight finish
//! on the store first, so once `stop` returns nobody else uses it and the
//! caller may close it.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use super::exec::exec;
use super::frame;
use super::locate::{OWNER_FILE, OwnerRecord};
use super::proto::{HELLO_LEN, Hello, MAX_REQUEST, Op, Reply, VERSION, encode_reply};
use crate::error::{Error, ErrorKind, Result};
use crate::local::LocalStore;

/// Clients served at once (each may hold one request of up to 8 MiB).
pub const MAX_CONNECTIONS: usize = 128;
/// How long a new connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

struct Conns {
    next: AtomicU64,
    /// Clones of the live connections, to shut them down on stop.
    live: Mutex<HashMap<u64, UnixStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stopping: AtomicBool,
}

pub(crate) struct Server {
    socket: PathBuf,
    dir: PathBuf,
    listener: Arc<UnixListener>,
    conns: Arc<Conns>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Bind `socket`, record it in the store's `OWNER` file and serve
    /// `store`. The caller holds the store's lock, so a socket file found at
    /// `socket` belongs to a dead owner.
    pub(crate) fn start(store: Arc<LocalStore>, socket: &Path) -> Result<Server> {
        let dir = store.path().to_path_buf();
        let name = format!("local://{}", dir.display());
        let ctx = |what: &str| format!("{name}: {what} {}", socket.display());
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket).map_err(|e| Error::io(ctx("listen on"), e))?;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(ctx("chmod"), e))?;
        OwnerRecord { pid: std::process::id(), socket: socket.to_path_buf() }
            .write(&dir)
            .map_err(|e| Error::io(format!("{name}: write {OWNER_FILE}"), e))?;
        let listener = Arc::new(listener);
        let conns = Arc::new(Conns {
            next: AtomicU64::new(0),
            live: Mutex::new(HashMap::new()),
            threads: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
        });
        let (l, c) = (listener.clone(), conns.clone());
        let accept = std::thread::Builder::new()
            .name("zosfs-store-accept".into())
            .spawn(move || accept_loop(&l, &c, &store))
            .map_err(|e| Error::io(format!("{name}: start the socket thread"), e))?;
        Ok(Server { socket: socket.to_path_buf(), dir, listener, conns, accept: Some(accept) })
    }

    pub(crate) fn stop(&mut self) {
        let Some(accept) = self.accept.take() else { return };
        self.conns.stopping.store(true, Ordering::SeqCst);
        // Wakes accept(): it fails with EINVAL on a shut-down listener.
        // SAFETY: shutdown on a socket fd we own.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        let _ = accept.join();
        for s in self.conns.live.lock().values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        let threads = std::mem::take(&mut *self.conns.threads.lock());
        for t in threads {
            let _ = t.join();
        }
        // Remove the socket and OWNER only while they still name us (a
        // successor may already have replaced them).
        if let Some(Ok(rec)) = OwnerRecord::read(&self.dir) {
            if rec.pid == std::process::id() && rec.socket == self.socket {
                let _ = std::fs::remove_file(self.dir.join(OWNER_FILE));
                let _ = std::fs::remove_file(&self.socket);
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: &UnixListener, conns: &Arc<Conns>, store: &Arc<LocalStore>) {
    loop {
        let accepted = listener.accept();
        if conns.stopping.load(Ordering::SeqCst) {
            return;
        }
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!("{}: accept: {e}", store.path().display());
                // EMFILE and the like: do not spin.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        match frame::peer_uid(&stream) {
            Ok(uid) if frame::trusted_uid(uid) => {}
            Ok(uid) => {
                tracing::warn!("{}: refused a client of uid {uid}", store.path().display());
                continue;
            }
            Err(e) => {
                tracing::warn!("{}: SO_PEERCRED: {e}", store.path().display());
                continue;
            }
        }
        reap(conns);
        if conns.live.lock().len() >= MAX_CONNECTIONS {
            tracing::warn!(
                "{}: {MAX_CONNECTIONS} clients connected: refused one more",
                store.path().display()
            );
            continue;
        }
        spawn_conn(stream, conns, store);
    }
}

/// Join the threads of closed connections.
fn reap(conns: &Conns) {
    let mut threads = conns.threads.lock();
    let (done, live): (Vec<_>, Vec<_>) =
        std::mem::take(&mut *threads).into_iter().partition(|t| t.is_finished());
    *threads = live;
    drop(threads);
    for t in done {
        let _ = t.join();
    }
}

fn spawn_conn(stream: UnixStream, conns: &Arc<Conns>, store: &Arc<LocalStore>) {
    let Ok(clone) = stream.try_clone() else { return };
    let id = conns.next.fetch_add(1, Ordering::Relaxed);
    conns.live.lock().insert(id, clone);
    let (c, st) = (conns.clone(), store.clone());
    let spawned = std::thread::Builder::new()
        .name("zosfs-store-conn".into())
        .stack_size(1 << 20)
        .spawn(move || {
            if let Err(e) = serve(stream, &st) {
                tracing::debug!("{}: client connection: {e}", st.path().display());
            }
            c.live.lock().remove(&id);
        });
    match spawned {
        Ok(t) => conns.threads.lock().push(t),
        Err(e) => {
            tracing::warn!("{}: start a connection thread: {e}", store.path().display());
            conns.live.lock().remove(&id);
        }
    }
}

/// LOCATE: the record's place, with a read-only fd of its segment the
/// first time this connection hears of that segment. The fd is a fresh
/// read-only open of the owner's segment (through /proc/self/fd, so it
/// works for a segment already unlinked by compaction): a client can read
/// records, never write them.
fn locate(
    s: &mut UnixStream,
    store: &LocalStore,
    id: &crate::chunk::ChunkId,
    sent: &mut HashSet<u32>,
) -> std::io::Result<()> {
    let Some((at, file)) = store.locate(id) else {
        let (head, _) = encode_reply(&Ok(Reply::Located(None)));
        return frame::write(s, &head, None);
    };
    if !sent.contains(&at.seg) {
        if let Ok(ro) = std::fs::File::open(format!("/proc/self/fd/{}", file.as_raw_fd())) {
            let (head, _) = encode_reply(&Ok(Reply::Located(Some((at, true)))));
            sent.insert(at.seg);
            return frame::write_with_fd(s, &head, std::os::fd::AsFd::as_fd(&ro));
        }
    }
    let (head, _) = encode_reply(&Ok(Reply::Located(Some((at, false)))));
    frame::write(s, &head, None)
}

/// One client: hello, then requests until it hangs up.
fn serve(mut s: UnixStream, store: &LocalStore) -> std::io::Result<()> {
    s.set_read_timeout(Some(HELLO_TIMEOUT))?;
    let mut hello = [0u8; HELLO_LEN];
    s.read_exact(&mut hello)?;
    // Our hello goes out whatever theirs says: a client of another version
    // learns ours and reports it.
    s.write_all(&Hello::ours().encode())?;
    match Hello::decode(&hello) {
        Ok(h) if h.version == VERSION => {}
        Ok(h) => return Err(std::io::Error::other(format!("client speaks version {}", h.version))),
        Err(e) => return Err(std::io::Error::other(e)),
    }
    s.set_read_timeout(None)?;
    // Segments whose fd this connection has already been given.
    let mut sent = HashSet::new();
    loop {
        let body = match frame::read(&mut s, MAX_REQUEST) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let (res, fatal) = match Op::decode(body) {
            Ok(Op::Locate(id)) => {
                locate(&mut s, store, &id, &mut sent)?;
                continue;
            }
            Ok(op) => (futures::executor::block_on(exec(store, op)), false),
            Err(why) => (Err(Error::new(ErrorKind::Protocol, format!("bad request: {why}"))), true),
        };
        let (head, tail) = encode_reply(&res);
        frame::write(&mut s, &head, tail.as_ref())?;
        if fatal {
            return Ok(());
        }
    }
}
