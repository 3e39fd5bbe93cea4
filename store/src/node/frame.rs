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
    read_body(s, len, max)
}

/// The body of a frame whose length prefix was `len`, refused before any
/// allocation when over `max`.
fn read_body(s: &mut UnixStream, len: [u8; 4], max: usize) -> io::Result<Bytes> {
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

/// The uid of the process at the other end of a connected unix socket
/// (SO_PEERCRED: taken when it connected, not spoofable). Every zosfs
/// socket checks its peers with this and [`trusted_uid`].
pub fn peer_uid(s: &impl std::os::fd::AsRawFd) -> io::Result<u32> {
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

/// [`write`] of a small frame with `fd` attached (SCM_RIGHTS): the peer
/// reads it with [`read_with_fd`].
pub fn write_with_fd(
    s: &mut UnixStream,
    head: &[u8],
    fd: std::os::fd::BorrowedFd<'_>,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len =
        u32::try_from(head.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut data = len.to_le_bytes().to_vec();
    data.extend_from_slice(head);
    let raw = fd.as_raw_fd();
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    let mut iov = libc::iovec { iov_base: data.as_mut_ptr().cast(), iov_len: data.len() };
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: msg_control points at `space` bytes, enough for one fd; the
    // CMSG_* macros stay inside it.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>(), raw);
    }
    // SAFETY: msg and everything it points at outlive the call.
    let n = unsafe { libc::sendmsg(s.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // The fd went with the first byte; the rest (rarely any) follows plainly.
    s.write_all(&data[n as usize..])
}

/// [`read`] that also takes an fd sent with the frame ([`write_with_fd`]).
pub fn read_with_fd(
    s: &mut UnixStream,
    max: usize,
) -> io::Result<(Bytes, Option<std::os::fd::OwnedFd>)> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut head = [0u8; 4];
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    let mut iov = libc::iovec { iov_base: head.as_mut_ptr().cast(), iov_len: head.len() };
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space;
    let n = loop {
        // SAFETY: msg points at buffers that outlive the call.
        let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut fd = None;
    // SAFETY: the kernel filled msg_control; CMSG_* walk inside it. An
    // SCM_RIGHTS message carries open fds that are ours to close.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let raw = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                fd = Some(OwnedFd::from_raw_fd(raw));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    s.read_exact(&mut head[n..])?;
    Ok((read_body(s, head, max)?, fd))
}
