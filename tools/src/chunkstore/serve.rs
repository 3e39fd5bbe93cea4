//! `chunkstore serve`: a 0-db-compatible server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use zosfs_store::StoreUrl;
use zosfs_store::server::{Password, Server, ServerConfig, ServerMode};

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default)]
pub enum ModeArg {
    /// Every namespace uses client-chosen keys (up to 255 bytes).
    User,
    /// Every namespace assigns 8-byte little-endian ids (SET with an empty key).
    Seq,
    /// Each namespace is user or sequential; `NSSET ns mode user|seq` switches an empty one.
    #[default]
    Mixed,
}

/// Run a 0-db-compatible server (RESP over TCP and a unix socket).
///
/// Speaks the 0-db dialect of RESP as 0-db v2.0.7 does (namespaces, user and
/// sequential keys, SELECT with passwords, AUTH SECURE challenges), keeping
/// metadata in journals under --data and values in the node's local store.
///
/// Writes are acknowledged once their metadata (journal) and value (store)
/// reached the page cache; journals and values are fsynced every --sync-time
/// seconds and at shutdown, or before every reply with --sync. SIGTERM or SIGINT
/// stops the server cleanly: it finishes running requests, syncs, exits 0.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// TCP address to listen on: HOST:PORT, or just PORT for 127.0.0.1:PORT.
    /// Port 0 picks a free port (the address is printed on stderr).
    #[arg(long, default_value = "127.0.0.1:9900", value_name = "ADDR")]
    pub listen: String,
    /// Also listen on this unix socket (a stale socket file is replaced).
    #[arg(long, value_name = "PATH")]
    pub unix: Option<PathBuf>,
    /// Admin password: without it every client is admin; with it clients
    /// must `AUTH` before NSNEW/NSDEL/NSSET and timestamped SET/DEL.
    /// Prefer the environment variable: command lines are visible to all users.
    #[arg(long, env = "CHUNKSTORE_ADMIN", hide_env_values = true, value_name = "PASSWORD")]
    pub admin: Option<String>,
    /// Key mode of the namespaces.
    #[arg(long, value_enum, default_value_t = ModeArg::Mixed)]
    pub mode: ModeArg,
    /// Protect the `default` namespace with the admin password: clients
    /// start on it read-only until `SELECT default <password>` (needs --admin).
    #[arg(long, requires = "admin")]
    pub protect: bool,
    /// Data directory: namespace journals, and values unless --values is given.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Store for values (default: local://DATA/chunks, synced like the journals),
    /// e.g. dir:///srv/values.
    #[arg(long, value_name = "URL")]
    pub values: Option<String>,
    /// fsync journals and values every this many seconds.
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    pub sync_time: u64,
    /// fsync the journal before every reply to a write (slower, no loss on power failure).
    #[arg(long)]
    pub sync: bool,
}

/// `PORT`, `:PORT`, `HOST:PORT` or `[V6]:PORT`; a bare port binds 127.0.0.1.
fn parse_listen(s: &str) -> Result<SocketAddr> {
    let s = s.trim();
    let port_only = s.strip_prefix(':').unwrap_or(s);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .with_context(|| format!("--listen {s:?}: want PORT or HOST:PORT"))?
        .next()
        .with_context(|| format!("--listen {s:?}: resolves to no address"))
}

fn config(a: ServeArgs) -> Result<ServerConfig> {
    if a.sync_time == 0 {
        bail!("--sync-time must be at least 1 second");
    }
    let values = match &a.values {
        Some(u) => Some(StoreUrl::parse(u)?),
        None => None,
    };
    let mut cfg = ServerConfig::new(a.data);
    cfg.listen = Some(parse_listen(&a.listen)?);
    cfg.unix = a.unix;
    cfg.values = values;
    cfg.mode = match a.mode {
        ModeArg::User => ServerMode::User,
        ModeArg::Seq => ServerMode::Sequential,
        ModeArg::Mixed => ServerMode::Mixed,
    };
    cfg.admin = a.admin.map(Password::new);
    cfg.protect = a.protect;
    cfg.sync_writes = a.sync;
    cfg.sync_interval = Duration::from_secs(a.sync_time);
    Ok(cfg)
}

/// Resolves on the first SIGTERM or SIGINT.
pub(super) async fn stop_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

pub async fn serve(a: ServeArgs) -> Result<ExitCode> {
    let cfg = config(a)?;
    let unix = cfg.unix.clone();
    let data = cfg.data.clone();
    // Install the handlers before binding: a stop request during start-up
    // is then handled as a clean shutdown.
    let stop = tokio::spawn(stop_signal());
    let server = Server::bind(cfg).await.with_context(|| format!("serve {}", data.display()))?;
    if let Some(addr) = server.local_addr() {
        eprintln!("chunkstore serve: listening on {addr}");
    }
    if let Some(p) = &unix {
        eprintln!("chunkstore serve: listening on unix:{}", p.display());
    }
    server
        .run(async move {
            match stop.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("signal handler: {e}"),
                Err(e) => tracing::error!("signal task: {e}"),
            }
        })
        .await
        .context("shutdown")?;
    eprintln!("chunkstore serve: stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        assert_eq!(parse_listen("9900").unwrap(), "127.0.0.1:9900".parse().unwrap());
        assert_eq!(parse_listen(":9901").unwrap(), "127.0.0.1:9901".parse().unwrap());
        assert_eq!(parse_listen("0.0.0.0:1").unwrap(), "0.0.0.0:1".parse().unwrap());
        assert_eq!(parse_listen("[::1]:2").unwrap(), "[::1]:2".parse().unwrap());
        assert!(parse_listen("nonsense").is_err());
    }
}
