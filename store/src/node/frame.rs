//! Frames on a blocking unix stream: a u32 length, then the body. Reads are
//! bounded by the caller's maximum before any allocation.

use std::io::{self, IoSlice, Read, Write};
use std::os::unix::net::UnixStream;

use bytes::Bytes;

/// Write `head` then `tail` as one frame, in as few writes as the socket
/// takes (the tail, a blob, is not copied).
pub fn write(s: &mut UnixStream, head: &[u8], tail: Option<&Bytes>) -> io::Result<()> {
    let tail: &[u8] = tail.map_or(&[], |b| &b[..]);
    let len = u32::try_from(head.len() + tail.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
    let len = len.to_le_bytes();
    let mut parts = [IoSlice::new(&len), IoSlice::new(head), IoSlice::new(tail)];
    let mut bufs = &mut parts[..];
    while !bufs.is_empty() {
        match s.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Read one frame of at most `max` bytes. A clean end of stream before the
/// length is `UnexpectedEof`, like any other cut.
pub fn read(s: &mut UnixStream, max: usize) -> io::Result<Bytes> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes over the limit of {max}"),
        ));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok(Bytes::from(body))
}

/// The uid of the process at the other end.
pub fn peer_uid(s: &UnixStream) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED fills a ucred of the length we pass; both outlive
    // the call.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// Whether a peer with `uid` may use our store: the same user, or root.
pub fn trusted_uid(uid: u32) -> bool {
    // SAFETY: geteuid has no preconditions.
    uid == 0 || uid == unsafe { libc::geteuid() }
}
