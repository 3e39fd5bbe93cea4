//! `--metrics ADDR`: Prometheus text over a minimal HTTP/1.0 responder.
//! Only `GET /metrics` (and `/`) answer; one connection at a time with a
//! short read timeout and an 8 KiB cap on the request, so a slow or
//! hostile client cannot hold the serving process's threads. Used by
//! `fsmount --metrics` and `chunkstore serve --metrics`; [`escape_label`]
//! is for the text they render.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
        .name("metrics-http".into())
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

/// Most bytes of a request (line and headers) read before answering.
const MAX_REQUEST: usize = 8192;
/// Longest a client may take to send its request, and to read the reply.
const REQUEST_TIME: Duration = Duration::from_secs(2);

/// The request line and headers, up to the blank line, [`MAX_REQUEST`]
/// or [`REQUEST_TIME`] (whichever comes first; what arrived is used).
fn read_request(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let deadline = Instant::now() + REQUEST_TIME;
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while req.len() < MAX_REQUEST && !has_blank_line(&req) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => req.extend_from_slice(&buf[..n.min(MAX_REQUEST - req.len())]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(req)
}

fn has_blank_line(b: &[u8]) -> bool {
    b.windows(4).any(|w| w == b"\r\n\r\n") || b.windows(2).any(|w| w == b"\n\n")
}

fn answer(mut s: TcpStream, render: &(dyn Fn() -> String + Send + Sync)) -> std::io::Result<()> {
    let req = read_request(&mut s)?;
    let first = String::from_utf8_lossy(req.split(|&b| b == b'\n').next().unwrap_or(&[]));
    let path = first.split_whitespace().nth(1).unwrap_or("");
    let (status, ctype, body) = if first.starts_with("GET ") && (path == "/metrics" || path == "/")
    {
        ("200 OK", "text/plain; version=0.0.4; charset=utf-8", render())
    } else {
        ("404 Not Found", "text/plain", "not found\n".to_string())
    };
    s.set_write_timeout(Some(REQUEST_TIME))?;
    write!(
        s,
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A label value in the text exposition format: `\\`, `\"` and `\n` escaped.
pub fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
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
