//! `nbdserver`: serve thin block devices over NBD; commit a device as a
//! new image flist; show a running server's counters.

mod commit;
mod serve;
mod settings;
mod stats;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Serve thin, lazily filled block devices over the NBD protocol.
///
/// Each export names a device; clients pick it by name (the first export
/// is also the default, empty name). A device's state lives in
/// CACHE_DIR/NAME/ and survives restarts: whatever was written before the
/// last acknowledged FLUSH (or FUA write) is there after a crash.
///
/// SPEC forms:
///   blank:SIZE             a thin empty disk, SIZE with K/M/G/T suffix
///   IMAGE.flist:/path      a file inside an flist (a VM disk image), its
///                          chunks fetched from --store on first read
///
/// Clients:
///   nbdinfo nbd://127.0.0.1:10809/NAME
///   qemu-system-x86_64 -drive file=nbd://127.0.0.1:10809/NAME,format=raw
///   nbd-client -N NAME 127.0.0.1 10809 /dev/nbd0
///
/// Protocol: fixed-newstyle NBD, structured replies, block status
/// (base:allocation, zosfs:cached), multi-conn, FUA, TRIM, WRITE_ZEROES
/// (fast zero), CACHE, STARTTLS (--tls-cert/--tls-key; clients use
/// nbds:// URIs). SIGTERM/SIGINT: stop accepting, answer in-flight
/// requests, flush every device, exit 0. SIGHUP: re-read --config and add
/// or remove exports.
#[derive(Parser, Debug)]
#[command(
    name = "nbdserver",
    version,
    verbatim_doc_comment,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    serve: serve::ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Write an export's current content as a new image flist (uploads
    /// only the chunks that changed): with --live, by the server serving
    /// it; without, from its cache dir while no server uses it.
    Commit(commit::CommitArgs),
    /// Print the counters of a running server (via its control socket).
    Stats(stats::StatsArgs),
}

fn init_logging() {
    // rustls warns on every libnbd client that connects by IP address (it
    // sends the address as SNI, which rustls ignores): not worth a line.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rustls=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn main() -> ExitCode {
    zosfs_store::malloc::tune_for_servers();
    init_logging();
    let cli = Cli::parse();
    // /proc/PID/cmdline is world-readable: no passwords there from now on.
    zosfs_store::process::argv::hide_secrets(&[]);
    let res = match cli.cmd {
        None => serve::run(cli.serve),
        Some(Cmd::Commit(a)) => commit::run(a),
        Some(Cmd::Stats(a)) => stats::run(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nbdserver: {e:#}");
            ExitCode::FAILURE
        }
    }
}
