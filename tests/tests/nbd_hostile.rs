//! Hostile NBD clients against the real nbdserver, each while a
//! well-behaved client keeps reading (and checking) its data: requests
//! pipelined without reading a reply, BLOCK_STATUS floods, a thousand idle
//! connections, slowloris handshakes. The server's resident memory is
//! sampled while the attack holds (after waiting for the condition that
//! shows it does) and must stay under [`RSS_BOUND`].

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use zosfs_tests::nbd::{IHAVEOPT, NbdServer, RawClient, Req, pattern, stat, vm_rss};
use zosfs_tests::wait_for;

const MIB: u64 = 1 << 20;
/// The server's resident memory must stay below this during every attack.
const RSS_BOUND: u64 = 256 * MIB;
const SIZE: u64 = 8 << 30;
const READ: u16 = 0;
const WRITE: u16 = 1;
const BLOCK_STATUS: u16 = 7;
/// What the good client writes at offset 0 and then reads back.
const REGION: u64 = 4 * MIB;
const BLOCK: u32 = 64 << 10;

fn server(dir: &std::path::Path, extra: &[&str]) -> Result<NbdServer> {
    let mut args = vec!["--export", "disk=blank:8G"];
    args.extend_from_slice(extra);
    NbdServer::start(&dir.join("cache"), &args)
}

fn write(c: &mut RawClient, off: u64, data: &[u8]) -> Result<()> {
    c.request(Req::new(WRITE, off, data.len() as u32).cookie(off), data)?;
    let (err, cookie) = c.simple_reply()?;
    ensure!(err == 0 && cookie == off, "write at {off}: error {err}");
    Ok(())
}

/// A well-behaved client in a thread: reads its region block by block and
/// checks every byte; counts the reads, stops at the first error.
struct GoodClient {
    reads: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl GoodClient {
    /// Connect, write the region, then read it in a loop. `setup` runs on
    /// the connection before the reads start.
    fn start(port: u16, setup: impl FnOnce(&mut RawClient) -> Result<()>) -> Result<Self> {
        let mut c = RawClient::connect(port)?;
        c.go("disk")?;
        let data = pattern(77, REGION as usize);
        for (i, piece) in data.chunks(BLOCK as usize).enumerate() {
            write(&mut c, i as u64 * u64::from(BLOCK), piece)?;
        }
        setup(&mut c)?;
        let (reads, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (r, s) = (reads.clone(), stop.clone());
        let thread = std::thread::spawn(move || -> Result<()> {
            let mut got = vec![0u8; BLOCK as usize];
            for i in (0..REGION / u64::from(BLOCK)).cycle() {
                if s.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let off = i * u64::from(BLOCK);
                c.request(Req::new(READ, off, BLOCK).cookie(off), &[])?;
                let (err, cookie) = c.simple_reply()?;
                ensure!(err == 0 && cookie == off, "good read at {off}: error {err}");
                c.s.read_exact(&mut got)?;
                let want = &data[off as usize..(off + u64::from(BLOCK)) as usize];
                ensure!(got == want, "good read at {off}: wrong data");
                r.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        });
        Ok(GoodClient { reads, stop, thread: Some(thread) })
    }

    /// Wait until it has done `n` more checked reads than now.
    fn wait_served(&mut self, n: u64) -> Result<()> {
        let goal = self.reads.load(Ordering::Relaxed) + n;
        wait_for("the good client to be served", Duration::from_secs(120), || {
            if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
                let t = self.thread.take().context("joined")?;
                t.join().map_err(|_| anyhow::anyhow!("good client panicked"))??;
                bail!("the good client stopped");
            }
            Ok((self.reads.load(Ordering::Relaxed) >= goal).then_some(()))
        })
    }

    fn finish(mut self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().map_err(|_| anyhow::anyhow!("good client panicked"))??;
        }
        Ok(self.reads.load(Ordering::Relaxed))
    }
}

/// A client that sends the same batch of requests over and over and never
/// reads a reply. Its thread ends when the socket is shut down.
struct Flood {
    s: TcpStream,
    thread: JoinHandle<u64>,
}

impl Flood {
    fn start(c: RawClient, batch: Vec<u8>, per_batch: u64) -> Result<Self> {
        let s = c.s.try_clone()?;
        let mut w = c.s;
        let thread = std::thread::spawn(move || {
            let mut sent = 0;
            while w.write_all(&batch).is_ok() {
                sent += per_batch;
            }
            sent
        });
        Ok(Flood { s, thread })
    }

    /// Stop it; returns how many requests it got onto the wire.
    fn end(self) -> u64 {
        let _ = self.s.shutdown(Shutdown::Both);
        self.thread.join().unwrap_or(0)
    }
}

/// Wait until the server reports a connection whose reader stopped because
/// its client does not read replies.
fn wait_stalled(srv: &NbdServer) -> Result<()> {
    wait_for("the server to stop reading from the flooder", Duration::from_secs(120), || {
        Ok((stat(&srv.cache_dir, "disk", "stalled_connections")? >= 1).then_some(()))
    })
}

fn check_rss(srv: &NbdServer, case: &str) -> Result<u64> {
    let rss = vm_rss(srv.pid())?;
    eprintln!("{case}: nbdserver VmRSS {:.1} MiB", rss as f64 / MIB as f64);
    ensure!(rss < RSS_BOUND, "{case}: nbdserver RSS {rss} bytes, over the bound {RSS_BOUND}");
    Ok(rss)
}

/// Once the server stops reading from the flooder, its memory is within
/// the bound, and stays so while the good client gets 50 more reads.
fn hold_flood(srv: &NbdServer, good: &mut GoodClient, flood: Flood, case: &str) -> Result<()> {
    wait_stalled(srv)?;
    check_rss(srv, &format!("{case}, replies never read"))?;
    good.wait_served(50)?;
    check_rss(srv, &format!("{case}, after 50 good reads"))?;
    let sent = flood.end();
    eprintln!("{case}: {sent} requests went onto the wire before the flooder was stopped");
    Ok(())
}

#[test]
fn refused_requests_never_read_hold_a_bounded_budget() -> Result<()> {
    let t = tempfile::tempdir()?;
    let mut srv = server(t.path(), &[])?;
    let mut good = GoodClient::start(srv.port, |_| Ok(()))?;
    let mut c = RawClient::connect(srv.port)?;
    c.go("disk")?;
    // Reads past the end, an unknown command, an unknown flag: each gets
    // an error reply the client never reads.
    let mut batch = Vec::new();
    for i in 0..1000u64 {
        batch.extend(
            match i % 3 {
                0 => Req::new(READ, SIZE, 512).cookie(i),
                1 => Req::new(42, 0, 0).cookie(i),
                _ => Req::new(READ, 0, 512).flags(1 << 9).cookie(i),
            }
            .header(),
        );
    }
    hold_flood(&srv, &mut good, Flood::start(c, batch, 1000)?, "refused requests")?;
    ensure!(good.finish()? >= 50);
    srv.stop()
}

/// Read one structured BLOCK_STATUS reply: (context id, descriptors).
fn block_status_reply(c: &mut RawClient) -> Result<(u32, Vec<(u32, u32)>)> {
    let mut h = [0u8; 20];
    c.s.read_exact(&mut h)?;
    let typ = u16::from_be_bytes(h[6..8].try_into()?);
    let len = u32::from_be_bytes(h[16..20].try_into()?) as usize;
    let mut p = vec![0u8; len];
    c.s.read_exact(&mut p)?;
    ensure!(typ == 5, "reply chunk type {typ}, not BLOCK_STATUS: {p:?}");
    let id = u32::from_be_bytes(p[..4].try_into()?);
    let d = p[4..]
        .chunks_exact(8)
        .map(|d| {
            (
                u32::from_be_bytes([d[0], d[1], d[2], d[3]]),
                u32::from_be_bytes([d[4], d[5], d[6], d[7]]),
            )
        })
        .collect();
    Ok((id, d))
}

#[test]
fn block_status_floods_are_capped_and_charged() -> Result<()> {
    let t = tempfile::tempdir()?;
    let mut srv = server(t.path(), &[])?;
    // Data in every other 1 MiB chunk from 8 MiB on: 2400 extents in the
    // first 4 GiB, more than a reply carries.
    let mut good = GoodClient::start(srv.port, |c| {
        for k in 0..1200u64 {
            write(c, (8 + 2 * k) * MIB, &[1u8; 512])?;
        }
        Ok(())
    })?;
    let asked = u32::MAX - 511;
    let mut one = RawClient::connect(srv.port)?;
    one.structured_with_meta("disk", "base:allocation")?;
    one.go("disk")?;
    one.request(Req::new(BLOCK_STATUS, 0, asked).cookie(9), &[])?;
    let (_, d) = block_status_reply(&mut one)?;
    let covered: u64 = d.iter().map(|&(l, _)| u64::from(l)).sum();
    ensure!(d.len() == 1024, "{} descriptors in one reply, expected the cap of 1024", d.len());
    ensure!(covered < u64::from(asked) && covered > 0, "reply covers {covered} bytes");
    ensure!(
        d[2] == (MIB as u32, 0) && d[3] == (MIB as u32, 3),
        "alternating extents: {:?}",
        &d[..4]
    );

    let mut c = RawClient::connect(srv.port)?;
    c.structured_with_meta("disk", "base:allocation")?;
    c.go("disk")?;
    let mut batch = Vec::new();
    for i in 0..1000u64 {
        batch.extend(Req::new(BLOCK_STATUS, 0, asked).cookie(i).header());
    }
    hold_flood(&srv, &mut good, Flood::start(c, batch, 1000)?, "BLOCK_STATUS flood")?;
    good.finish()?;
    srv.stop()
}

/// Connect and read the greeting: Some(stream) when the server greeted,
/// None when it closed the connection without a byte.
fn greeted(port: u16) -> Result<Option<TcpStream>> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut g = [0u8; 18];
    let n = s.read(&mut g)?;
    if n == 0 {
        return Ok(None);
    }
    s.read_exact(&mut g[n..])?;
    ensure!(u64::from_be_bytes(g[8..16].try_into()?) == IHAVEOPT, "not a greeting: {g:?}");
    Ok(Some(s))
}

#[test]
fn a_thousand_idle_connections_meet_the_connection_limit() -> Result<()> {
    let t = tempfile::tempdir()?;
    let max = 64usize;
    let mut srv = server(t.path(), &["--max-connections", "64", "--handshake-timeout", "600"])?;
    let mut good = GoodClient::start(srv.port, |_| Ok(()))?;
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..1000 {
        match greeted(srv.port)? {
            Some(s) => held.push(s),
            None => refused += 1,
        }
    }
    check_rss(&srv, "1000 idle connections")?;
    // The good client has the one other slot.
    ensure!(
        held.len() == max - 1,
        "{} idle connections were greeted with --max-connections {max}",
        held.len()
    );
    ensure!(refused + held.len() == 1000);
    eprintln!("idle connections: {} held, {refused} closed at once", held.len());
    good.wait_served(50)?;
    // Once they go, their slots are free again.
    drop(held);
    wait_for("a new client to be greeted", Duration::from_secs(60), || greeted(srv.port))?;
    let mut c = RawClient::connect(srv.port)?;
    c.go("disk")?;
    good.finish()?;
    srv.stop()
}

#[test]
fn slowloris_handshakes_are_dropped_at_the_deadline() -> Result<()> {
    let t = tempfile::tempdir()?;
    let mut srv = server(t.path(), &["--handshake-timeout", "2"])?;
    let mut good = GoodClient::start(srv.port, |_| Ok(()))?;
    let mut slow = Vec::new();
    for i in 0..100 {
        let mut s = greeted(srv.port)?.context("a slow client was refused")?;
        s.write_all(&3u32.to_be_bytes())?;
        if i % 2 == 0 {
            // Half an option header, then nothing.
            s.write_all(&IHAVEOPT.to_be_bytes()[..5])?;
        } else {
            // A 64 KiB option, of which one byte comes.
            let mut h = IHAVEOPT.to_be_bytes().to_vec();
            h.extend_from_slice(&7u32.to_be_bytes());
            h.extend_from_slice(&(64u32 << 10).to_be_bytes());
            h.push(0);
            s.write_all(&h)?;
        }
        slow.push(s);
    }
    check_rss(&srv, "100 slowloris handshakes")?;
    good.wait_served(20)?;
    // Each is closed by the server once its deadline passes.
    for s in &mut slow {
        let mut b = [0u8; 16];
        ensure!(s.read(&mut b)? == 0, "the server answered a handshake it never got");
    }
    // The deadline is for handshakes only: the good client goes on.
    good.wait_served(20)?;
    good.finish()?;
    srv.stop()
}
