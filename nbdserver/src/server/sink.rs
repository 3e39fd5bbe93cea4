//! The output side of a connection: reply parts and the sockets they go to.
//!
//! A reply is a list of [`Part`]s: bytes in memory, or a range of a
//! device's local file. A file range goes out by `sendfile(2)`, from the
//! page cache into the socket with no copy through user space, on sockets
//! that allow it ([`ReplySink::can_send_file`]: plain TCP and unix
//! sockets, not TLS). That halves the copying of large warm reads.

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use zosfs_store::lazy::FileRange;

/// One piece of a reply, in wire order.
#[derive(Debug, Clone)]
pub enum Part {
    Mem(Bytes),
    /// Bytes of a local file, read when sent.
    File(FileRange),
}

impl Part {
    pub fn len(&self) -> usize {
        match self {
            Part::Mem(b) => b.len(),
            Part::File(r) => r.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A reply made of bytes only.
    pub fn mem_all(parts: Vec<Bytes>) -> Vec<Part> {
        parts.into_iter().map(Part::Mem).collect()
    }
}

/// The write half of a client connection.
pub trait ReplySink: AsyncWrite + Unpin + Send + 'static {
    /// Whether [`send_file`](Self::send_file) works on this socket.
    fn can_send_file(&self) -> bool {
        false
    }

    /// Send the whole range straight from the page cache. Sockets without
    /// it answer Unsupported (the reader makes file parts only for sockets
    /// that [`can_send_file`](Self::can_send_file)).
    fn send_file(&mut self, _r: &FileRange) -> impl Future<Output = io::Result<()>> + Send {
        async { Err(io::Error::from(io::ErrorKind::Unsupported)) }
    }
}

impl ReplySink for tokio::net::tcp::OwnedWriteHalf {
    fn can_send_file(&self) -> bool {
        true
    }

    fn send_file(&mut self, r: &FileRange) -> impl Future<Output = io::Result<()>> + Send {
        send_file_on(AsRef::<TcpStream>::as_ref(self), r)
    }
}

impl ReplySink for tokio::net::unix::OwnedWriteHalf {
    fn can_send_file(&self) -> bool {
        true
    }

    fn send_file(&mut self, r: &FileRange) -> impl Future<Output = io::Result<()>> + Send {
        send_file_on(AsRef::<UnixStream>::as_ref(self), r)
    }
}

/// TLS (and anything else split by `tokio::io::split`): bytes only.
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> ReplySink for tokio::io::WriteHalf<T> {}

/// What `sendfile` needs of a tokio socket.
trait Socket: AsRawFd + Sync {
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send;
    fn try_write_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
}

impl Socket for TcpStream {
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send {
        TcpStream::writable(self)
    }

    fn try_write_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        self.try_io(tokio::io::Interest::WRITABLE, f)
    }
}

impl Socket for UnixStream {
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send {
        UnixStream::writable(self)
    }

    fn try_write_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        self.try_io(tokio::io::Interest::WRITABLE, f)
    }
}

async fn send_file_on<S: Socket>(s: &S, r: &FileRange) -> io::Result<()> {
    let end = r.offset + r.len as u64;
    let mut off = r.offset;
    while off < end {
        s.writable().await?;
        let left = (end - off) as usize;
        let sent = s.try_write_io(|| sendfile(s.as_raw_fd(), r.file.as_raw_fd(), &mut off, left));
        match sent {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("data file ends before byte {end} of a reply"),
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One `sendfile(2)` call; advances `off` by what was sent.
fn sendfile(sock: RawFd, file: RawFd, off: &mut u64, len: usize) -> io::Result<usize> {
    let mut o = *off as libc::off_t;
    // SAFETY: plain syscall on two open descriptors; `o` outlives the call.
    let n = unsafe { libc::sendfile(sock, file, &mut o, len) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    *off = o as u64;
    Ok(n as usize)
}
