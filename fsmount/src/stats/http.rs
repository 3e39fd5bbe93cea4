//! `--metrics ADDR`: Prometheus text over a minimal HTTP/1.0 responder.
//! Only `GET /metrics` (and `/`) answer; one connection at a time with a
//! short read timeout, so a slow client cannot hold the mount's threads.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result, invalid};

/// Parse `--metrics`: `PORT`, `:PORT`, `HOST:PORT` (host defaults to 127.0.0.1).
pub fn parse_addr(s: &str) -> Result<SocketAddr> {
    let full = if let Ok(port) = s.parse::<u16>() {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = s.strip_prefix(':') {
        format!("127.0.0.1:{port}")
    } else {
        s.to_string()
    };
    full.to_socket_addrs()
        .map_err(|e| invalid(format!("metrics address {s:?}: {e}")))?
        .next()
        .ok_or_else(|| invalid(format!("metrics address {s:?} resolves to nothing")))
}

/// Serve `render()` on `addr` in a thread; returns the bound address.
pub fn serve(
    addr: SocketAddr,
    render: Arc<dyn Fn() -> String + Send + Sync>,
) -> Result<SocketAddr> {
    let l = TcpListener::bind(addr).map_err(|e| Error::io(format!("bind metrics on {addr}"), e))?;
    let local = l.local_addr().map_err(|e| Error::io("metrics local address", e))?;
    std::thread::Builder::new()
        .name("fsmount-metrics".into())
        .spawn(move || {
            for conn in l.incoming().flatten() {
                if let Err(e) = answer(conn, render.as_ref()) {
                    tracing::debug!("metrics connection: {e}");
                }
            }
        })
        .map_err(|e| Error::io("spawn metrics thread", e))?;
    Ok(local)
}

fn answer(s: TcpStream, render: &(dyn Fn() -> String + Send + Sync)) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut r = BufReader::new(s.try_clone()?).take(8192);
    let mut first = String::new();
    r.read_line(&mut first)?;
    // Drain headers up to the blank line.
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let path = first.split_whitespace().nth(1).unwrap_or("");
    let mut w = s;
    let (status, ctype, body) = if first.starts_with("GET ") && (path == "/metrics" || path == "/")
    {
        ("200 OK", "text/plain; version=0.0.4; charset=utf-8", render())
    } else {
        ("404 Not Found", "text/plain", "not found\n".to_string())
    };
    write!(
        w,
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_default_to_loopback() {
        assert_eq!(parse_addr("9100").unwrap().to_string(), "127.0.0.1:9100");
        assert_eq!(parse_addr(":9101").unwrap().to_string(), "127.0.0.1:9101");
        assert_eq!(parse_addr("0.0.0.0:9102").unwrap().to_string(), "0.0.0.0:9102");
        assert!(parse_addr("nonsense").is_err());
    }

    #[test]
    fn serves_metrics() {
        let addr = serve(parse_addr("0").unwrap(), Arc::new(|| "m 1\n".to_string())).unwrap();
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.0 200 OK\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\nm 1\n"), "{out}");
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /other HTTP/1.0\r\n\r\n").unwrap();
        out.clear();
        c.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.0 404"), "{out}");
    }
}
