//! Arguments of the server and its start-up / shutdown sequence.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Parser;
use zosfs_nbdserver::device::spec::ExportSpec;
use zosfs_nbdserver::server::{Export, ExportTable, Listener, Server, ServerConfig};
use zosfs_store::engine::{EngineChoice, shared_engine};

/// Serve thin block devices over the NBD protocol.
///
/// Each --export names a device; clients pick it by name (the first export
/// is also the default, empty name). A device's state lives in
/// CACHE_DIR/NAME/ and survives restarts: whatever was written before the
/// last acknowledged FLUSH (or FUA write) is there after a crash.
///
/// SPEC forms:
///   blank:SIZE   a thin empty disk, SIZE with K/M/G/T suffix (blank:20G)
///
/// Clients:
///   nbdinfo nbd://127.0.0.1:10809/NAME
///   qemu-img info nbd://127.0.0.1:10809/NAME
///   qemu-system-x86_64 -drive file=nbd://127.0.0.1:10809/NAME,format=raw
///   nbd-client -N NAME 127.0.0.1 10809 /dev/nbd0
///
/// The server speaks fixed-newstyle NBD with structured replies, block
/// status (contexts base:allocation and zosfs:cached), multi-conn, FUA,
/// TRIM, WRITE_ZEROES (fast zero), CACHE. SIGTERM or SIGINT: stop accepting,
/// answer in-flight requests, flush every device, exit 0.
#[derive(Parser, Debug)]
#[command(name = "nbdserver", version, verbatim_doc_comment)]
pub struct Cli {
    /// TCP address to listen on (repeatable). Default 127.0.0.1:10809,
    /// unless only --unix is given.
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<String>,
    /// Unix socket to listen on (nbd+unix:///NAME?socket=PATH).
    #[arg(long, value_name = "PATH")]
    pub unix: Option<PathBuf>,
    /// Directory holding device state (one subdirectory per export).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: PathBuf,
    /// A read-write export, NAME=SPEC (repeatable).
    #[arg(long = "export", value_name = "NAME=SPEC")]
    pub exports: Vec<String>,
    /// A read-only export, NAME=SPEC (repeatable).
    #[arg(long = "export-ro", value_name = "NAME=SPEC")]
    pub exports_ro: Vec<String>,
    /// Disk I/O engine: auto (io_uring if usable), uring, sync.
    #[arg(long, default_value = "auto")]
    pub engine: EngineChoice,
}

fn specs(cli: &Cli) -> Result<Vec<ExportSpec>> {
    let mut out = Vec::new();
    let mut names = BTreeSet::new();
    let all =
        cli.exports.iter().map(|s| (s, false)).chain(cli.exports_ro.iter().map(|s| (s, true)));
    for (s, ro) in all {
        let spec = ExportSpec::parse(s, ro)?;
        if !names.insert(spec.name.clone()) {
            bail!("export {:?} is given twice", spec.name);
        }
        out.push(spec);
    }
    if out.is_empty() {
        bail!("no exports: give at least one --export NAME=SPEC (e.g. --export disk=blank:10G)");
    }
    Ok(out)
}

async fn listeners(cli: &Cli) -> Result<Vec<Listener>> {
    let mut out = Vec::new();
    let mut tcp = cli.listen.clone();
    if tcp.is_empty() && cli.unix.is_none() {
        tcp.push("127.0.0.1:10809".into());
    }
    for addr in &tcp {
        out.push(Listener::tcp(addr).await?);
    }
    if let Some(p) = &cli.unix {
        out.push(Listener::unix(p)?);
    }
    Ok(out)
}

async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}

pub fn run(cli: Cli) -> Result<()> {
    let specs = specs(&cli)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        std::fs::create_dir_all(&cli.cache_dir)
            .with_context(|| format!("create cache dir {}", cli.cache_dir.display()))?;
        let engine = shared_engine(cli.engine).context("open the I/O engine")?;
        let mut exports = Vec::new();
        for spec in &specs {
            let e = Export::open(spec, &cli.cache_dir, engine.clone())
                .with_context(|| format!("export {}", spec.name))?;
            tracing::info!("export {}: {}", e.name, e.description());
            exports.push(Arc::new(e));
        }
        let server = Server::new(Arc::new(ExportTable::new(exports)), ServerConfig::default());
        let listeners = listeners(&cli).await?;
        for l in &listeners {
            tracing::info!("listening on {} (I/O engine {})", l.describe(), engine.name());
        }
        server.run(listeners, stop_signal()).await?;
        tracing::info!("all devices flushed; exiting");
        Ok(())
    })
}
