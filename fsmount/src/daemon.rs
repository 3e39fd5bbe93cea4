//! Process plumbing (`-d/--daemon`, pid files, termination signals): the
//! shared implementation in `zosfs_store::process::daemon`, under
//! fsmount's name.

use std::path::Path;

pub use zosfs_store::process::daemon::{
    PidFile, Readiness, block_signals, redirect_stderr, wait_signal,
};

use crate::error::Result;

/// Fork; the parent waits for the child's readiness and exits with it.
/// See `zosfs_store::process::daemon::daemonize`.
pub fn daemonize(log: &Path) -> Result<Readiness> {
    Ok(zosfs_store::process::daemon::daemonize("fsmount", log)?)
}
