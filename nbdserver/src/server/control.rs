//! The control socket (`CACHE_DIR/.control/control.sock`): one text
//! command per connection, one text answer. Commands: `stats`, `metrics`,
//! and `commit NAME PATH` (the export as a new image flist at the absolute
//! PATH, written while it is served; answers `committed …` or
//! `error: …`). And the metrics endpoint: a minimal HTTP responder
//! serving Prometheus text on any GET.
//!
//! Who may use it: the socket is 0600 in a 0700 directory owned by the
//! server's user, and every connection's `SO_PEERCRED` uid must be root's
//! or the server's own; others get `error: …` and nothing else. A commit
//! writes only where the asking user could write itself (see
//! [`check_commit_path`]).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use zosfs_store::node::frame::{peer_uid, trusted_uid};

use super::export::ExportTable;
use super::stats;
use crate::error::{Error, Result, invalid};

/// Where a server keeps its control socket. Export names never start with
/// a dot, so the directory cannot clash with an export's.
pub fn control_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join(".control").join("control.sock")
}

/// The directory `dir`, owner-only and ours: created 0700, or an existing
/// real directory (not a symlink) owned by this user, set to 0700.
fn private_dir(dir: &Path) -> Result<()> {
    let shown = dir.display();
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(format!("create {shown}"), e)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| Error::io(format!("stat {shown}"), e))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !meta.file_type().is_dir() || meta.uid() != me {
        return Err(invalid(format!(
            "{shown} must be a directory owned by uid {me} (found uid {}, {:?}); remove it",
            meta.uid(),
            meta.file_type()
        )));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(format!("chmod 0700 {shown}"), e))
}

/// Bind the control socket at `path`: its directory is made private
/// first, and the socket is created under umask 077, so it is never
/// reachable by others, not even for a moment.
pub fn bind_private(path: &Path) -> Result<UnixListener> {
    let dir = path.parent().ok_or_else(|| invalid(format!("{} has no parent", path.display())))?;
    private_dir(dir)?;
    // SAFETY: umask only swaps the process's mask; restored right after.
    let old = unsafe { libc::umask(0o077) };
    let bound = super::bind_unix(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = bound?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(format!("chmod 0600 {}", path.display()), e))?;
    Ok(listener)
}

/// Longest command line or HTTP request head read.
const MAX_REQUEST: usize = 8192;

async fn answer(table: &ExportTable, command: &str, peer: u32) -> String {
    let command = command.trim();
    if let Some(args) = command.strip_prefix("commit ") {
        return commit(table, args, peer).await;
    }
    match command {
        "stats" => stats::render_text(table),
        "metrics" => stats::render_prometheus(table),
        other => {
            format!("error: unknown command {other:?} (try: stats, metrics, commit NAME PATH)\n")
        }
    }
}

/// Where a commit for the user `peer` may write `path`: an absolute path
/// without `.`, `..` or symlinks on the way, into an existing directory
/// owned by that user or by root that no one else may write to, over no
/// existing file but a regular one. So the server (often root) writes only
/// where the asking user could have written the flist itself, and no one
/// else can redirect the write (rename into a directory only its owner
/// changes).
pub fn check_commit_path(path: &Path, peer: u32) -> Result<()> {
    let shown = path.display();
    let plain = path.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !path.is_absolute() || !plain {
        return Err(invalid(format!("{shown}: give an absolute path without . or ..")));
    }
    let parent = path.parent().filter(|p| p.file_name().is_some()).unwrap_or(Path::new("/"));
    let real = std::fs::canonicalize(parent)
        .map_err(|e| Error::io(format!("commit directory {}", parent.display()), e))?;
    if real != parent {
        return Err(invalid(format!("{shown}: its directory goes through a symlink")));
    }
    let dir = std::fs::metadata(parent)
        .map_err(|e| Error::io(format!("commit directory {}", parent.display()), e))?;
    if !dir.is_dir() || (dir.uid() != peer && dir.uid() != 0) || dir.mode() & 0o022 != 0 {
        return Err(invalid(format!(
            "{shown}: commits go into a directory owned by you (uid {peer}) or root \
             and writable by its owner only; {} is uid {} mode {:o}",
            parent.display(),
            dir.uid(),
            dir.mode() & 0o7777
        )));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_file() => {
            Err(invalid(format!("{shown} exists and is not a regular file")))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("stat {shown}"), e)),
    }
}

/// `commit NAME PATH`: PATH is the rest of the line (it may hold spaces).
async fn commit(table: &ExportTable, args: &str, peer: u32) -> String {
    let Some((name, path)) = args.trim().split_once(' ') else {
        return "error: usage: commit NAME /absolute/path/NEW.flist\n".into();
    };
    let path = Path::new(path.trim());
    if let Err(e) = check_commit_path(path, peer) {
        return format!("error: refused: {}\n", e.chain());
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
        let peer = peer_uid(&stream);
        let table = table.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            let mut r = tokio::io::BufReader::new(r.take(MAX_REQUEST as u64));
            // The command is read even from a refused client, so that it is
            // not unread when the socket closes (that would reset the
            // connection before the client reads why).
            let read = tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line)).await;
            if !matches!(read, Ok(Ok(_))) {
                return;
            }
            let reply = match peer {
                Ok(uid) if trusted_uid(uid) => answer(&table, &line, uid).await,
                Ok(uid) => {
                    tracing::warn!("control socket: refused a client with uid {uid}");
                    format!("error: permission denied: uid {uid} may not use this socket\n")
                }
                Err(e) => format!("error: SO_PEERCRED: {e}\n"),
            };
            let _ = w.write_all(reply.as_bytes()).await;
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
