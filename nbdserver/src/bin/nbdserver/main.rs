//! `nbdserver`: serve thin block devices over NBD.

mod serve;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn main() -> ExitCode {
    init_logging();
    let cli = serve::Cli::parse();
    match serve::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nbdserver: {e:#}");
            ExitCode::FAILURE
        }
    }
}
