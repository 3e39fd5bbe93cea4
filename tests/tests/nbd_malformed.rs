//! Every malformed frame gets the protocol's error reply or a clean close,
//! never a crash, and never a hang of another connection. Sent over a raw
//! socket, since real clients refuse to send these.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Result, ensure};
use zosfs_tests::nbd::{
    IHAVEOPT, NbdServer, OPT_GO, OPT_STRUCTURED_REPLY, REP_ACK, REQUEST_MAGIC, RawClient, Req,
    STRUCTURED_REPLY_MAGIC,
};

const READ: u16 = 0;
const WRITE: u16 = 1;
const DISC: u16 = 2;
const FLUSH: u16 = 3;
const TRIM: u16 = 4;
const BLOCK_STATUS: u16 = 7;
const EPERM: u32 = 1;
const EINVAL: u32 = 22;
const ENOSPC: u32 = 28;
const REP_ERR_UNSUP: u32 = 0x8000_0001;
const REP_ERR_INVALID: u32 = 0x8000_0003;
const REP_ERR_UNKNOWN: u32 = 0x8000_0006;
const SIZE: u64 = 16 << 20;

fn go(port: u16, export: &str) -> Result<RawClient> {
    let mut c = RawClient::connect(port)?;
    c.go(export)?;
    Ok(c)
}

/// One simple request; returns its error value (payload of a READ is read).
fn simple(
    c: &mut RawClient,
    kind: u16,
    flags: u16,
    off: u64,
    len: u32,
    payload: &[u8],
) -> Result<u32> {
    c.request(Req::new(kind, off, len).flags(flags).cookie(0xc0ffee), payload)?;
    let (err, cookie) = c.simple_reply()?;
    ensure!(cookie == 0xc0ffee, "cookie {cookie:#x} not echoed");
    if kind == READ && err == 0 {
        let mut d = vec![0u8; len as usize];
        c.s.read_exact(&mut d)?;
    }
    Ok(err)
}

/// The connection still serves: write then read back a pattern.
fn healthy(c: &mut RawClient) -> Result<()> {
    let data = vec![0x5au8; 512];
    ensure!(simple(c, WRITE, 0, 4096, 512, &data)? == 0, "write failed");
    c.request(Req::new(READ, 4096, 512), &[])?;
    let (err, _) = c.simple_reply()?;
    ensure!(err == 0, "read failed with {err}");
    let mut got = vec![0u8; 512];
    c.s.read_exact(&mut got)?;
    ensure!(got == data, "read back other data");
    Ok(())
}

fn raw_greeting(port: u16) -> Result<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut g = [0u8; 18];
    s.read_exact(&mut g)?;
    Ok(s)
}

fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            // Drain replies still in flight before the close.
            Ok(_) => continue,
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

fn option_frame(code: u32, data: &[u8]) -> Vec<u8> {
    let mut b = IHAVEOPT.to_be_bytes().to_vec();
    b.extend_from_slice(&code.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    b
}

#[test]
fn malformed_handshakes() -> Result<()> {
    let t = tempfile::tempdir()?;
    let mut srv = NbdServer::start(&t.path().join("c"), &["--export", "disk=blank:16M"])?;
    let mut bystander = go(srv.port, "disk")?;

    // Client flags the server never offered: closed.
    let mut s = raw_greeting(srv.port)?;
    s.write_all(&0x8u32.to_be_bytes())?;
    ensure!(closed(&mut s), "unknown client flags not refused");

    // Bad option magic: closed.
    let mut s = raw_greeting(srv.port)?;
    s.write_all(&3u32.to_be_bytes())?;
    let mut f = option_frame(OPT_GO, &[]);
    f[0] ^= 0xff;
    s.write_all(&f)?;
    ensure!(closed(&mut s), "bad option magic not refused");

    // Option longer than the server accepts: closed before reading it.
    let mut s = raw_greeting(srv.port)?;
    s.write_all(&3u32.to_be_bytes())?;
    let mut f = IHAVEOPT.to_be_bytes().to_vec();
    f.extend_from_slice(&OPT_GO.to_be_bytes());
    f.extend_from_slice(&u32::MAX.to_be_bytes());
    s.write_all(&f)?;
    ensure!(closed(&mut s), "oversized option not refused");

    // Unknown option: ERR_UNSUP, and the negotiation goes on.
    let mut c = RawClient::connect(srv.port)?;
    c.send_option(42, b"anything")?;
    let (opt, typ, _) = c.option_reply()?;
    ensure!(opt == 42 && typ == REP_ERR_UNSUP, "unknown option: {typ:#x}");
    // Data on an option that takes none: ERR_INVALID.
    c.send_option(OPT_STRUCTURED_REPLY, b"x")?;
    ensure!(c.option_reply()?.1 == REP_ERR_INVALID);
    // GO whose name length overruns the option: ERR_INVALID.
    c.send_option(OPT_GO, &[0, 0, 1, 0, b'd', 0, 0])?;
    ensure!(c.option_reply()?.1 == REP_ERR_INVALID);
    // GO on an unknown export: ERR_UNKNOWN, with a message naming it.
    let mut d = 4u32.to_be_bytes().to_vec();
    d.extend_from_slice(b"nope");
    d.extend_from_slice(&0u16.to_be_bytes());
    c.send_option(OPT_GO, &d)?;
    let (_, typ, msg) = c.option_reply()?;
    ensure!(typ == REP_ERR_UNKNOWN, "unknown export: {typ:#x}");
    ensure!(String::from_utf8_lossy(&msg).contains("nope"), "message does not name the export");
    // After all that, GO still works.
    let (size, _) = c.go("disk")?;
    ensure!(size == SIZE);
    healthy(&mut c)?;

    // A client that stops mid-handshake holds nobody else up.
    let mut stall = raw_greeting(srv.port)?;
    stall.write_all(&3u32.to_be_bytes())?;
    stall.write_all(&IHAVEOPT.to_be_bytes()[..5])?;
    healthy(&mut bystander)?;
    ensure!(srv.alive(), "server died");
    drop(stall);
    srv.stop()
}

#[test]
fn malformed_requests() -> Result<()> {
    let t = tempfile::tempdir()?;
    let mut srv = NbdServer::start(
        &t.path().join("c"),
        &["--export", "disk=blank:16M", "--export-ro", "ro=blank:1M"],
    )?;
    let mut bystander = go(srv.port, "disk")?;
    let mut c = go(srv.port, "disk")?;

    ensure!(simple(&mut c, 42, 0, 0, 0, &[])? == EINVAL, "unknown command");
    ensure!(simple(&mut c, READ, 1 << 9, 0, 512, &[])? == EINVAL, "unknown flag");
    ensure!(simple(&mut c, READ, 1 << 2, 0, 512, &[])? == EINVAL, "DF without structured replies");
    ensure!(simple(&mut c, TRIM, 1 << 1, 0, 512, &[])? == EINVAL, "NO_HOLE on TRIM");
    ensure!(simple(&mut c, READ, 0, SIZE - 256, 512, &[])? == EINVAL, "read past the end");
    ensure!(simple(&mut c, READ, 0, u64::MAX, 512, &[])? == EINVAL, "offset overflow");
    ensure!(simple(&mut c, READ, 0, 0, 64 << 20, &[])? == EINVAL, "read over the maximum");
    // A refused WRITE still has its payload skipped: the stream stays in sync.
    ensure!(simple(&mut c, WRITE, 0, SIZE, 512, &[7u8; 512])? == ENOSPC, "write past the end");
    ensure!(simple(&mut c, WRITE, 1 << 9, 0, 512, &[7u8; 512])? == EINVAL, "write bad flag");
    ensure!(simple(&mut c, BLOCK_STATUS, 0, 0, 512, &[])? == EINVAL, "block status, no context");
    ensure!(simple(&mut c, FLUSH, 0, 1, 0, &[])? == EINVAL, "flush with an offset");
    healthy(&mut c)?;

    // Read-only export: writes and trims are EPERM, reads work.
    let mut r = go(srv.port, "ro")?;
    ensure!(simple(&mut r, WRITE, 0, 0, 512, &[1u8; 512])? == EPERM, "write to ro");
    ensure!(simple(&mut r, TRIM, 0, 0, 512, &[])? == EPERM, "trim on ro");
    ensure!(simple(&mut r, READ, 0, 0, 512, &[])? == 0, "read on ro");

    // Structured replies: a refused READ gets an error chunk, not a simple reply.
    let mut sc = RawClient::connect(srv.port)?;
    sc.send_option(OPT_STRUCTURED_REPLY, &[])?;
    ensure!(sc.option_reply()?.1 == REP_ACK);
    sc.go("disk")?;
    sc.request(Req::new(READ, SIZE, 512), &[])?;
    let mut h = [0u8; 20];
    sc.s.read_exact(&mut h)?;
    ensure!(u32::from_be_bytes(h[..4].try_into()?) == STRUCTURED_REPLY_MAGIC, "not structured");
    ensure!(u16::from_be_bytes(h[6..8].try_into()?) == 0x8001, "not an error chunk");
    let len = u32::from_be_bytes(h[16..20].try_into()?) as usize;
    let mut p = vec![0u8; len];
    sc.s.read_exact(&mut p)?;
    ensure!(u32::from_be_bytes(p[..4].try_into()?) == EINVAL, "error chunk value");

    // Frames that cannot be resynchronised close the connection cleanly.
    let mut m = go(srv.port, "disk")?;
    m.request(Req::new(READ, 0, 512).magic(0xdead_beef), &[])?;
    ensure!(closed(&mut m.s), "bad request magic not closed");
    let mut w = go(srv.port, "disk")?;
    w.request(Req::new(WRITE, 0, (32 << 20) + 1), &[])?;
    ensure!(closed(&mut w.s), "oversized write not closed");
    // DISC: the server answers what is in flight and closes.
    let mut d = go(srv.port, "disk")?;
    d.request(Req::new(DISC, 0, 0), &[])?;
    ensure!(closed(&mut d.s), "DISC did not close");
    // Half a header, then silence: others are not held up.
    let mut half = go(srv.port, "disk")?;
    half.s.write_all(&REQUEST_MAGIC.to_be_bytes())?;

    healthy(&mut bystander)?;
    healthy(&mut c)?;
    ensure!(srv.alive(), "server died");
    drop(half);
    srv.stop()
}
