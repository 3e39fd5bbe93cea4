//! `chunkstore serve`: a 0-db-compatible server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use zosfs_store::StoreUrl;
use zosfs_store::process::daemon::Started;
use zosfs_store::process::http;
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
///
/// Without an admin password every client is admin (0-db's behaviour), so
/// the server refuses a non-loopback --listen address without one unless
/// --insecure-no-auth is given. The `default` namespace is open to every
/// client, as in 0-db, unless --protect. Limits against hostile clients:
/// a request carries at most 8.5 MiB of arguments, replies are written out
/// as they are produced, a request must arrive (and a reply be read) within
/// --request-timeout, at most --max-connections clients are served, and a
/// connection is closed after 3 wrong passwords (later attempts from the
/// same address are spaced out, doubling per failure).
///
/// With -d the server detaches once it listens (the command exits 0 and
/// prints where, or exits 1 with the start-up error); its log goes to
/// --log-file (default DATA/serve.log). Passwords given on the command
/// line are masked in it once read.
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
    /// Read the admin password from this file (its first line), so it is
    /// neither in the command line nor in the environment.
    #[arg(long, value_name = "PATH", conflicts_with = "admin")]
    pub admin_file: Option<PathBuf>,
    /// Allow a non-loopback --listen address without an admin password
    /// (every client is then admin); a warning is printed.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Clients served at once (TCP and unix socket together); more are
    /// answered with an error and closed.
    #[arg(long, default_value_t = zosfs_store::server::DEFAULT_MAX_CONNECTIONS, value_name = "N")]
    pub max_connections: usize,
    /// Seconds a request may take to arrive from its first byte, and a
    /// reply may wait for the client to read it, before the connection is closed.
    #[arg(long, default_value_t = zosfs_store::server::DEFAULT_REQUEST_TIMEOUT.as_secs(), value_name = "SECS")]
    pub request_timeout: u64,
    /// Key mode of the namespaces.
    #[arg(long, value_enum, default_value_t = ModeArg::Mixed)]
    pub mode: ModeArg,
    /// Protect the `default` namespace with the admin password: clients
    /// start on it read-only until `SELECT default <password>` (needs --admin).
    #[arg(long)]
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
    /// Serve Prometheus metrics (GET /metrics) on this address: PORT,
    /// :PORT or HOST:PORT (a bare port binds 127.0.0.1), e.g. 127.0.0.1:9901.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    #[command(flatten)]
    pub process: super::DaemonArgs,
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
    if a.request_timeout == 0 {
        bail!("--request-timeout must be at least 1 second");
    }
    let admin = match (&a.admin_file, a.admin) {
        (Some(path), _) => Some(super::ns::read_first_line(path, "--admin-file")?),
        (None, admin) => admin,
    };
    if a.protect && admin.is_none() {
        bail!("--protect needs an admin password (--admin-file, CHUNKSTORE_ADMIN or --admin)");
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
    cfg.admin = admin.map(Password::new);
    cfg.protect = a.protect;
    cfg.sync_writes = a.sync;
    cfg.sync_interval = Duration::from_secs(a.sync_time);
    cfg.max_connections = a.max_connections;
    cfg.request_timeout = Duration::from_secs(a.request_timeout);
    cfg.insecure_no_auth = a.insecure_no_auth;
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

/// Parse and check everything, detach with -d, then serve on a runtime
/// started in the process that serves (fork keeps only the calling thread).
pub fn run(a: ServeArgs) -> Result<ExitCode> {
    let metrics = a.metrics.as_deref().map(http::parse_addr).transpose()?;
    let process = a.process.options();
    let cfg = config(a)?;
    // -d without --log-file logs into DATA, which must exist before
    // detaching (otherwise nothing is created before the checks of bind).
    if process.daemon && process.log_file.is_none() {
        std::fs::create_dir_all(&cfg.data)
            .with_context(|| format!("create {}", cfg.data.display()))?;
    }
    let started = process.start("chunkstore serve", &cfg.data.join("serve.log"))?;
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            started.readiness.failed(&format!("{e:#}"));
            return Err(e);
        }
    };
    rt.block_on(serve(cfg, metrics, started))
}

/// Bind the server and the metrics endpoint; on success tell a waiting
/// `-d` parent where it listens.
async fn bind(cfg: ServerConfig, metrics: Option<SocketAddr>) -> Result<(Server, Vec<String>)> {
    let unix = cfg.unix.clone();
    let data = cfg.data.clone();
    let server = Server::bind(cfg).await.with_context(|| format!("serve {}", data.display()))?;
    let mut listening = Vec::new();
    if let Some(addr) = server.local_addr() {
        listening.push(addr.to_string());
    }
    if let Some(p) = &unix {
        listening.push(format!("unix:{}", p.display()));
    }
    if let Some(addr) = metrics {
        let shared = server.shared().clone();
        let render = Arc::new(move || zosfs_store::server::metrics::render(&shared));
        let bound = http::serve(addr, render)?;
        listening.push(format!("metrics http://{bound}/metrics"));
    }
    Ok((server, listening))
}

async fn serve(
    cfg: ServerConfig,
    metrics: Option<SocketAddr>,
    started: Started,
) -> Result<ExitCode> {
    // Install the handlers before binding: a stop request during start-up
    // is then handled as a clean shutdown.
    let stop = tokio::spawn(stop_signal());
    let (server, listening) = match bind(cfg, metrics).await {
        Ok(b) => b,
        Err(e) => {
            started.readiness.failed(&format!("{e:#}"));
            return Err(e);
        }
    };
    for l in &listening {
        eprintln!("chunkstore serve: listening on {l}");
    }
    let note = started.log_note();
    started.readiness.ready(&format!("listening on {}{note}", listening.join(", ")));
    let _pid_file = started.pid_file;
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
