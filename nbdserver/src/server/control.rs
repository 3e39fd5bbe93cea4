//! The control socket (`CACHE_DIR/control.sock`): one text command per
//! connection, one text answer. Commands: `stats`, `metrics`, and
//! `commit NAME PATH` (the export as a new image flist at the absolute
//! PATH, written while it is served; answers `committed …` or
//! `error: …`). And the metrics
//! endpoint: a minimal HTTP responder serving Prometheus text on any GET.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

use super::export::ExportTable;
use super::stats;
use crate::error::{Error, Result};

/// Where a server keeps its control socket.
pub fn control_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join("control.sock")
}

/// Longest command line or HTTP request head read.
const MAX_REQUEST: usize = 8192;

async fn answer(table: &ExportTable, command: &str) -> String {
    let command = command.trim();
    if let Some(args) = command.strip_prefix("commit ") {
        return commit(table, args).await;
    }
    match command {
        "stats" => stats::render_text(table),
        "metrics" => stats::render_prometheus(table),
        other => {
            format!("error: unknown command {other:?} (try: stats, metrics, commit NAME PATH)\n")
        }
    }
}

/// `commit NAME PATH`: PATH is the rest of the line (it may hold spaces).
async fn commit(table: &ExportTable, args: &str) -> String {
    let Some((name, path)) = args.trim().split_once(' ') else {
        return "error: usage: commit NAME /absolute/path/NEW.flist\n".into();
    };
    let path = Path::new(path.trim());
    if !path.is_absolute() {
        return format!("error: {} is not an absolute path\n", path.display());
    }
    let Some(export) = table.get(name).filter(|_| !name.is_empty()) else {
        return format!("error: no export named {name:?}\n");
    };
    tracing::info!("commit of {name} to {} requested", path.display());
    match export.commit(path).await {
        Ok(r) => format!("committed {name} ({r}) -> {}\n", path.display()),
        Err(e) => format!("error: commit {name}: {}\n", e.chain()),
    }
}

/// Serve control connections until `stop` turns true.
pub async fn serve_control(
    listener: UnixListener,
    table: Arc<ExportTable>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let conn = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            c = listener.accept() => c,
        };
        let Ok((stream, _)) = conn else { continue };
        let table = table.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            let mut r = tokio::io::BufReader::new(r.take(MAX_REQUEST as u64));
            let read = tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line)).await;
            if matches!(read, Ok(Ok(_))) {
                let _ = w.write_all(answer(&table, &line).await.as_bytes()).await;
            }
        });
    }
}

/// Answer every HTTP request with the Prometheus text of all exports.
pub async fn serve_metrics(
    listener: TcpListener,
    table: Arc<ExportTable>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let conn = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            c = listener.accept() => c,
        };
        let Ok((mut stream, _)) = conn else { continue };
        let table = table.clone();
        tokio::spawn(async move {
            // Read the request head (we answer any path the same way).
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
                match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
            let body = stats::render_prometheus(&table);
            let reply = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Send one command to a running server's control socket (blocking client,
/// for `nbdserver stats`).
pub fn query(socket: &Path, command: &str) -> Result<String> {
    let io = |e| Error::io(format!("control socket {}", socket.display()), e);
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(io)?;
    // A commit answers when its upload is done: allow for a big one.
    s.set_read_timeout(Some(Duration::from_secs(3600))).map_err(io)?;
    s.write_all(format!("{command}\n").as_bytes()).map_err(io)?;
    s.shutdown(std::net::Shutdown::Write).map_err(io)?;
    let mut out = String::new();
    for line in BufReader::new(s).lines() {
        out.push_str(&line.map_err(io)?);
        out.push('\n');
    }
    Ok(out)
}
