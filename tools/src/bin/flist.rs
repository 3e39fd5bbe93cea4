//! `flist`: make, read and check zosfs flists.

use std::process::ExitCode;

use clap::Parser;
use zosfs_tools::flist::{Cli, run};

fn main() -> ExitCode {
    zosfs_tools::init_logging();
    let cli = Cli::parse();
    // /proc/PID/cmdline is world-readable: no passwords there from now on.
    zosfs_store::process::argv::hide_secrets(&[]);
    match run(cli) {
        Ok(code) => code,
        // The reader of our output went away (`flist ... | head`).
        Err(e) if zosfs_tools::out::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flist: {e:#}");
            ExitCode::FAILURE
        }
    }
}
