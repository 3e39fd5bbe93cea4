//! `fsmount`: mount an flist lazily with a persistent read-write layer.

use std::process::ExitCode;

use clap::Parser;
use zosfs_fsmount::cli::{Cli, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fsmount: {e:#}");
            ExitCode::FAILURE
        }
    }
}
