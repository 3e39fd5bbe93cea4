//! Serving: start-up, SIGHUP reload of the export list, clean shutdown.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use zosfs_nbdserver::config::{ConfigFile, FillMode};
use zosfs_nbdserver::device::BlockDevice;
use zosfs_nbdserver::device::spec::{DeviceSpec, ExportSpec, parse_size};
use zosfs_nbdserver::server::control::control_path;
use zosfs_nbdserver::server::export::DEFAULT_FETCH_DEPTH;
use zosfs_nbdserver::server::tls::{Tls, TlsFiles};
use zosfs_nbdserver::server::{Export, ExportTable, Listener, Opener, Server, ServerConfig};
use zosfs_store::engine::shared_engine;
use zosfs_store::process::daemon::{DaemonOptions, Started};

use crate::settings::{DeviceArgs, Settings};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub devices: DeviceArgs,
    /// TCP address to listen on (repeatable). Default 127.0.0.1:10809,
    /// unless only --unix is given.
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<String>,
    /// Unix socket to listen on (nbd+unix:///NAME?socket=PATH).
    #[arg(long, value_name = "PATH")]
    pub unix: Option<PathBuf>,
    /// Background fill of image devices: none, or background (fetch every
    /// chunk so the device no longer needs the network).
    #[arg(long, value_name = "MODE")]
    pub fill: Option<FillMode>,
    /// Bandwidth cap of the background fill, bytes/s (e.g. 50M).
    #[arg(long, value_name = "RATE")]
    pub fill_bandwidth: Option<String>,
    /// Chunk fetches in flight per device, and connections per remote
    /// store (a 0-db connection carries one request at a time).
    /// [default: 32]
    #[arg(long, value_name = "N")]
    pub fetch_depth: Option<usize>,
    /// Seconds a read waits out an outage (no store reachable, or every
    /// replica hanging) before it fails with EIO, retrying meanwhile; the
    /// client sees a pause. 0: fail at once. [default: 300]
    #[arg(long, value_name = "SECS")]
    pub outage_wait: Option<u64>,
    /// TLS: PEM certificate chain of the server. With --tls-key, TCP
    /// clients must upgrade with STARTTLS (nbds:// URIs) unless
    /// --tls-allow-plain. Unix socket clients stay plain.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS: PEM private key of the certificate.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// TLS: PEM CA certificates; clients must present a certificate
    /// signed by one of them.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// TLS: also serve TCP clients that do not upgrade.
    #[arg(long, requires = "tls_cert")]
    pub tls_allow_plain: bool,
    /// Serve Prometheus metrics over HTTP on this address.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// NBD connections open at once (TCP and unix); more are closed as
    /// soon as they are accepted. [default: 256]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Seconds a client has to finish the handshake (TLS included) before
    /// it is disconnected. [default: 10]
    #[arg(long, value_name = "SECS")]
    pub handshake_timeout: Option<u64>,
    /// Serve a --listen address that other hosts can reach without TLS
    /// client certificates: anyone who can connect may then read (and,
    /// unless read-only, write) every export. Without this flag such a
    /// server refuses to start.
    #[arg(long)]
    pub insecure_no_tls: bool,
    #[command(flatten)]
    pub process: DaemonArgs,
}

/// `-d`, `--pid-file`, `--log-file` (the work is
/// `zosfs_store::process::daemon`, shared with fsmount and chunkstore serve).
#[derive(clap::Args, Debug, Clone)]
pub struct DaemonArgs {
    /// Detach once every listener is bound; the command exits with the
    /// start-up outcome. The log goes to --log-file (default CACHE_DIR/nbdserver.log).
    #[arg(short = 'd', long)]
    pub daemon: bool,
    /// Write the serving process's pid here (removed at exit; a symlink
    /// at the path is refused).
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Append the log (stderr) here (a symlink at the path is refused).
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
}

impl DaemonArgs {
    fn options(&self) -> DaemonOptions {
        DaemonOptions {
            daemon: self.daemon,
            pid_file: self.pid_file.clone(),
            log_file: self.log_file.clone(),
        }
    }
}

/// What start-up and reloads need to open devices.
struct Ctx {
    opener: Opener,
    fill: FillMode,
    bandwidth: Option<u64>,
}

impl Ctx {
    async fn open(&self, spec: &ExportSpec) -> Result<Arc<Export>> {
        let e = self.opener.open(spec).await.with_context(|| format!("export {}", spec.name))?;
        if self.fill == FillMode::Background && matches!(spec.device, DeviceSpec::Image { .. }) {
            e.device.start_fill(0, e.device.size(), self.bandwidth);
        }
        tracing::info!("export {}: {}", e.name, e.description());
        Ok(Arc::new(e))
    }
}

/// A TCP listener other hosts can reach must authenticate its clients:
/// TLS required (no plain clients) with client certificates. Otherwise the
/// server starts only with --insecure-no-tls, and says so loudly.
fn check_exposure(listeners: &[Listener], tls: Option<&Tls>, insecure: bool) -> Result<()> {
    let authenticated = tls.is_some_and(|t| t.required && t.verifies_clients);
    for addr in listeners.iter().filter_map(Listener::exposed_addr) {
        if authenticated {
            continue;
        }
        if !insecure {
            bail!(
                "--listen {addr} is reachable from other hosts, and without TLS client \
                 certificates anyone there could read and write the exports: give \
                 --tls-cert, --tls-key and --tls-client-ca (without --tls-allow-plain), \
                 listen on a loopback address, or accept the risk with --insecure-no-tls"
            );
        }
        tracing::warn!(
            "INSECURE: {addr} serves every export to anyone who can connect \
             (no TLS client certificates; --insecure-no-tls)"
        );
    }
    Ok(())
}

async fn listeners(a: &ServeArgs, s: &Settings, tls: Option<&Tls>) -> Result<Vec<Listener>> {
    let mut out = Vec::new();
    let mut tcp = if a.listen.is_empty() { s.file.listen.clone() } else { a.listen.clone() };
    let unix = a.unix.clone().or_else(|| s.file.unix.clone());
    if tcp.is_empty() && unix.is_none() {
        tcp.push("127.0.0.1:10809".into());
    }
    for addr in &tcp {
        out.push(Listener::tcp(addr).await?);
    }
    check_exposure(&out, tls, a.insecure_no_tls || s.file.insecure_no_tls)?;
    if let Some(p) = &unix {
        out.push(Listener::unix(p)?);
    }
    out.push(Listener::control(&control_path(&s.cache_dir))?);
    if let Some(m) = a.metrics.clone().or_else(|| s.file.metrics.clone()) {
        out.push(Listener::metrics(&m).await?);
    }
    Ok(out)
}

/// Re-read the config: keep unchanged exports, open new ones, drop removed
/// ones. An export whose device changed is replaced only when no client
/// uses it (its cache must be closed before it is opened again). An export
/// that fails to open is logged and left out; the others still change.
async fn reload(
    args: &DeviceArgs,
    ctx: &Ctx,
    table: &ExportTable,
    running: &ConfigFile,
) -> Result<()> {
    let settings = args.resolve()?;
    let changed = running.startup_changes(&settings.file);
    if !changed.is_empty() {
        tracing::warn!(
            "SIGHUP: {} changed in the config; that takes effect at the next start \
             (a reload changes the export list only)",
            changed.join(", ")
        );
    }
    let mut old: Vec<Arc<Export>> = table.all();
    let mut next = Vec::new();
    for spec in &settings.specs {
        let Some(pos) = old.iter().position(|e| e.name == spec.name) else {
            match ctx.open(spec).await {
                Ok(e) => next.push(e),
                Err(e) => tracing::error!("{e:#}"),
            }
            continue;
        };
        // References: the table's and `old`'s; more means clients.
        if old[pos].spec == *spec || Arc::strong_count(&old[pos]) > 2 {
            if old[pos].spec != *spec {
                tracing::error!("export {}: in use, keeping its old device", spec.name);
            }
            next.push(old.remove(pos));
            continue;
        }
        let writes = old[pos].device.lazy().dirty_chunks().len();
        if writes > 0 {
            // Opening the new device would reset the cache and lose them;
            // the export must not silently disappear either.
            tracing::error!(
                "export {}: its device changed in the config, but its cache holds local \
                 writes ({writes} chunks): keeping the old device. Commit them (`nbdserver \
                 commit {} -o NEW.flist`) or remove the export, then reload",
                spec.name,
                spec.name
            );
            next.push(old.remove(pos));
            continue;
        }
        let e = old.remove(pos);
        table.replace(table.all().into_iter().filter(|o| o.name != e.name).collect());
        e.device.cancel_fills();
        let lazy = e.device.lazy().clone();
        drop(e);
        match tokio::time::timeout(Duration::from_secs(10), lazy.close()).await {
            Ok(Ok(())) => match ctx.open(spec).await {
                Ok(e) => next.push(e),
                Err(e) => tracing::error!("{e:#}"),
            },
            Ok(Err(e)) => tracing::error!("close {}: {}", spec.name, e.chain()),
            Err(_) => tracing::error!("export {}: still in use, not replaced", spec.name),
        }
    }
    for e in old {
        tracing::info!("export {} removed", e.name);
        e.device.cancel_fills();
        if let Err(err) = e.device.flush().await {
            tracing::error!("flush {}: {}", e.name, err.chain());
        }
    }
    table.replace(next);
    Ok(())
}

/// `running`: the config the process started with (what a reload compares
/// the non-export settings against).
async fn stop_signal(
    args: DeviceArgs,
    running: ConfigFile,
    ctx: Arc<Ctx>,
    table: Arc<ExportTable>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return tracing::info!("SIGTERM"),
            _ = int.recv() => return tracing::info!("SIGINT"),
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                match reload(&args, &ctx, &table, &running).await {
                    Ok(()) => tracing::info!("reloaded: {} exports", table.all().len()),
                    Err(e) => tracing::error!("reload failed, keeping the running set: {e:#}"),
                }
            }
        }
    }
}

fn server_config(a: &ServeArgs, s: &Settings) -> ServerConfig {
    let mut cfg = ServerConfig::default();
    if let Some(n) = a.max_connections.or(s.file.max_connections) {
        cfg.max_connections = n;
    }
    if let Some(secs) = a.handshake_timeout.or(s.file.handshake_timeout) {
        cfg.handshake_timeout = Duration::from_secs(secs);
    }
    cfg
}

/// TLS settings: the flags, else the config's `[tls]` table.
fn tls_files(a: &ServeArgs, s: &Settings) -> Option<TlsFiles> {
    match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: a.tls_client_ca.clone(),
            required: !a.tls_allow_plain,
        }),
        _ => s.file.tls.as_ref().map(|t| t.files()),
    }
}

pub fn run(a: ServeArgs) -> Result<()> {
    let settings = a.devices.resolve()?;
    settings.require_exports()?;
    let bandwidth =
        a.fill_bandwidth.as_deref().map(parse_size).transpose()?.or(settings.file.bandwidth()?);
    let fill = settings.fill(a.fill);
    let tls = tls_files(&a, &settings).as_ref().map(Tls::load).transpose()?;
    if let Some(t) = &tls {
        let mode = if t.required { "required" } else { "offered" };
        tracing::info!("TLS {mode} on TCP listeners");
    }
    // Before detaching: the default log file lives there.
    std::fs::create_dir_all(&settings.cache_dir)
        .with_context(|| format!("create cache dir {}", settings.cache_dir.display()))?;
    let started =
        a.process.options().start("nbdserver", &settings.cache_dir.join("nbdserver.log"))?;
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            started.readiness.failed(&format!("start the runtime: {e}"));
            return Err(e.into());
        }
    };
    rt.block_on(serve(a, settings, fill, bandwidth, tls, started))
}

/// Open the exports and bind the listeners; on success tell a waiting
/// `-d` parent where it listens, then serve until SIGTERM / SIGINT.
async fn serve(
    a: ServeArgs,
    settings: Settings,
    fill: FillMode,
    bandwidth: Option<u64>,
    tls: Option<Tls>,
    started: Started,
) -> Result<()> {
    let note = started.log_note();
    let _pid_file = started.pid_file;
    let bound = start(&a, &settings, fill, bandwidth, tls).await;
    let (server, listeners, table, ctx) = match bound {
        Ok(b) => b,
        Err(e) => {
            started.readiness.failed(&format!("{e:#}"));
            return Err(e);
        }
    };
    let addrs: Vec<String> = listeners.iter().map(|l| l.describe()).collect();
    started.readiness.ready(&format!("listening on {}{note}", addrs.join(", ")));
    let stop = stop_signal(a.devices.clone(), settings.file.clone(), ctx, table.clone());
    server.run(listeners, stop).await?;
    for e in table.all() {
        e.device.cancel_fills();
    }
    tracing::info!("all devices flushed; exiting");
    Ok(())
}

type Bound = (Server, Vec<Listener>, Arc<ExportTable>, Arc<Ctx>);

async fn start(
    a: &ServeArgs,
    settings: &Settings,
    fill: FillMode,
    bandwidth: Option<u64>,
    tls: Option<Tls>,
) -> Result<Bound> {
    let engine = shared_engine(a.devices.engine).context("open the I/O engine")?;
    let mut opener = Opener::new(&settings.cache_dir, settings.stores.clone(), engine.clone());
    opener.set_fetch_depth(
        a.fetch_depth.or(settings.file.fetch_depth).unwrap_or(DEFAULT_FETCH_DEPTH),
    );
    if let Some(secs) = a.outage_wait.or(settings.file.outage_wait) {
        opener.outage_wait = Duration::from_secs(secs);
    }
    let ctx = Arc::new(Ctx { opener, fill, bandwidth });
    let mut exports = Vec::new();
    for spec in &settings.specs {
        exports.push(ctx.open(spec).await?);
    }
    let listeners = listeners(a, settings, tls.as_ref()).await?;
    let table = Arc::new(ExportTable::new(exports));
    let server = Server::with_tls(table.clone(), server_config(a, settings), tls);
    for l in &listeners {
        tracing::info!("listening on {} (I/O engine {})", l.describe(), engine.name());
    }
    Ok((server, listeners, table, ctx))
}
