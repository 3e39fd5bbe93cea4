//! `fsmount`: mount an flist lazily with a persistent read-write layer.

use std::process::ExitCode;

use clap::Parser;
use zosfs_fsmount::cli::{Cli, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // /proc/PID/cmdline is world-readable: no passwords there from now on.
    zosfs_store::process::argv::hide_secrets(&[]);
    zosfs_store::malloc::tune_for_mounts();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fsmount: {e:#}");
            ExitCode::FAILURE
        }
    }
}
