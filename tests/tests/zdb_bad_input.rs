//! Bad input never hurts other clients: truncated frames, garbage, clients
//! that vanish mid-frame, oversized keys and values each get a clear error
//! or a clean close, while a well-behaved client connected at the same time
//! keeps being served.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use zosfs_tests::zdb::{Conn, Reply, Zdb, encode, steady_client};

const T: Duration = Duration::from_secs(30);

fn expect_error_then_close(c: &mut Conn, err: &str) -> Result<()> {
    let raw = c.read_replies(1, T)?;
    assert_eq!(raw, format!("-{err}\r\n").as_bytes());
    assert!(c.closed_within(T)?, "connection should be closed after -{err}");
    Ok(())
}

#[test]
fn bad_clients_do_not_disturb_a_good_one() -> Result<()> {
    let data = tempfile::tempdir()?;
    let server = Zdb::start(data.path(), &[])?;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let steady = steady_client(&server, stop.clone(), done.clone())?;

    // 1. A truncated SET, then the client disappears mid-frame.
    let mut c = server.connect()?;
    c.send(b"*3\r\n$3\r\nSET\r\n$5\r\ntrunc\r\n$10\r\nabc")?;
    c.drop_now();

    // 2. Garbage that is not an array: error line, then closed.
    let mut c = server.connect()?;
    c.send(b"\x00\xffGARBAGE\r\n")?;
    expect_error_then_close(&mut c, "Malformed request, array expected")?;

    // 3. A client announcing 8 MiB, sending 1 MiB and vanishing.
    let mut c = server.connect()?;
    c.send(b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$8388608\r\n")?;
    c.send(&vec![b'x'; 1 << 20])?;
    c.drop_now();

    // 4. Oversized key (refused, connection usable) and value (closed).
    let mut c = server.connect()?;
    let long_key = vec![b'K'; 256];
    assert_eq!(c.call(&[b"SET", &long_key, b"v"])?, Reply::err("Key too large"));
    assert_eq!(c.call(&[b"GET", &long_key])?, Reply::err("Invalid key"));
    assert_eq!(c.call(&[b"PING"])?, Reply::Status("PONG".into()));
    c.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$8388609\r\n")?;
    expect_error_then_close(&mut c, "Payload too big")?;
    let mut c = server.connect()?;
    c.send(b"*2\r\n$3\r\nGET\r\n$999999999999\r\n")?;
    expect_error_then_close(&mut c, "Payload too big")?;

    // 5. Stuck connections answer the same error per read, then give up
    //    once their 8 KiB buffer would overflow.
    let mut c = server.connect()?;
    c.send(b"*0\r\n")?;
    assert_eq!(c.read_replies(1, T)?, b"-Missing arguments\r\n");
    c.send(&encode(&[b"PING"]))?;
    assert_eq!(c.read_replies(1, T)?, b"-Missing arguments\r\n");
    let _ = c.send(&vec![b'z'; 16 * 1024]);
    assert!(c.closed_within(T)?, "a stuck connection fed 16 KiB must be dropped");

    // 6. A header line that never ends.
    let mut c = server.connect()?;
    c.send(b"*1\r\n$")?;
    let _ = c.send(&vec![b'9'; 10_000]);
    let raw = c.read_replies(1, T)?;
    assert!(raw.starts_with(b"-Malformed"), "{:?}", String::from_utf8_lossy(&raw));
    assert!(c.closed_within(T)?);

    // 7. Negative and non-numeric lengths.
    let mut c = server.connect()?;
    c.send(b"*1\r\n$-5\r\n")?;
    assert_eq!(c.read_replies(1, T)?, b"-Malformed query string\r\n");
    let mut c = server.connect()?;
    c.send(b"*abc\r\n")?;
    assert_eq!(c.read_replies(1, T)?, b"-Missing arguments\r\n");

    // 8. Many clients connecting and vanishing at once.
    let churn: Vec<_> = (0..16)
        .map(|i| {
            let addr = server.addr;
            std::thread::spawn(move || -> Result<()> {
                for j in 0..20 {
                    let mut c = Conn::tcp(addr)?;
                    if (i + j) % 2 == 0 {
                        c.send(b"*2\r\n$3\r\nGET\r\n$4\r\nab")?;
                    } else {
                        assert_eq!(c.call(&[b"PING"])?, Reply::Status("PONG".into()));
                    }
                    c.drop_now();
                }
                Ok(())
            })
        })
        .collect();
    for t in churn {
        t.join().expect("churn thread")?;
    }

    stop.store(true, Ordering::Relaxed);
    steady.join().expect("steady thread")?;
    assert!(done.load(Ordering::Relaxed) >= 10);

    // Nothing of the broken requests was stored.
    let mut c = server.connect()?;
    assert_eq!(c.call(&[b"EXISTS", b"trunc"])?, Reply::Int(0));
    assert_eq!(c.call(&[b"EXISTS", b"big"])?, Reply::Int(0));
    assert_eq!(c.call(&[b"EXISTS", b"k"])?, Reply::Int(0));
    drop(c);
    let mut server = server;
    assert!(server.stop()?.success());
    Ok(())
}

#[test]
fn many_concurrent_clients_each_see_their_own_writes() -> Result<()> {
    let data = tempfile::tempdir()?;
    let server = Zdb::start(data.path(), &[])?;
    let threads: Vec<_> = (0..32)
        .map(|t| {
            let addr = server.addr;
            std::thread::spawn(move || -> Result<()> {
                let mut c = Conn::tcp(addr)?;
                for i in 0..40 {
                    let key = format!("t{t}-k{i}");
                    let val = vec![(t * 7 + i) as u8; 1 + (i * 997) % 70_000];
                    assert_eq!(
                        c.call(&[b"SET", key.as_bytes(), &val])?,
                        Reply::bulk(key.as_bytes())
                    );
                    assert_eq!(c.call(&[b"GET", key.as_bytes()])?, Reply::Bulk(Some(val)));
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread")?;
    }
    let mut c = server.connect()?;
    assert_eq!(c.call(&[b"DBSIZE"])?, Reply::Int(32 * 40));
    Ok(())
}
