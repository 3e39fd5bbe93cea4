//! `chunkstore`: operate chunk stores and serve a 0-db-compatible server.

use std::process::ExitCode;

use clap::Parser;
use zosfs_tools::chunkstore::{Cli, run};

fn main() -> ExitCode {
    zosfs_tools::init_logging();
    let cli = Cli::parse();
    // /proc/PID/cmdline is world-readable: no passwords there from now on.
    zosfs_store::process::argv::hide_secrets(&["--admin"]);
    match run(cli) {
        Ok(code) => code,
        // The reader of our output went away (`chunkstore ... | head`).
        Err(e) if zosfs_tools::out::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chunkstore: {e:#}");
            ExitCode::FAILURE
        }
    }
}
