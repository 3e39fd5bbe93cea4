//! `fsmount umount MOUNTPOINT`: ask the serving process to unmount, or —
//! when it is gone (kill -9) — undo its mount from the record.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::error::ErrorKind;
use crate::lifecycle::teardown;
use crate::state::StateDir;
use crate::stats::control;
use crate::sys;

#[derive(clap::Args, Debug)]
pub struct UmountArgs {
    pub mountpoint: PathBuf,
    /// Detach busy mounts (MNT_DETACH) instead of failing.
    #[arg(long)]
    pub lazy: bool,
    /// Kill a serving process that does not answer (SIGKILL), then clean up.
    #[arg(long)]
    pub force: bool,
}

/// Wait until `pid` is gone (bounded).
fn wait_exit(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while sys::pid_alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

pub fn run(a: UmountArgs, state: &StateDir) -> Result<ExitCode> {
    let rec = state.find(&a.mountpoint)?;
    if rec.alive() {
        let req = if a.lazy { "shutdown lazy" } else { "shutdown" };
        match control::request(&rec.control, req, Duration::from_secs(60)) {
            Ok(_) => {
                if !wait_exit(rec.pid, Duration::from_secs(30)) {
                    bail!("unmounted, but fsmount pid {} did not exit", rec.pid);
                }
                println!("fsmount: unmounted {}", rec.mountpoint.display());
                return Ok(ExitCode::SUCCESS);
            }
            // The serving process refused (busy): nothing was undone.
            Err(e) if e.kind() == ErrorKind::Busy => return Err(e.into()),
            // A process being killed closes its socket before it is gone.
            Err(_) if wait_exit(rec.pid, Duration::from_secs(3)) => {}
            Err(e) if !a.force => {
                bail!("fsmount pid {} does not answer ({e}); retry with --force", rec.pid)
            }
            Err(e) => {
                tracing::warn!("pid {} does not answer ({e}); killing it", rec.pid);
                sys::signal(rec.pid, libc::SIGKILL)?;
                if !wait_exit(rec.pid, Duration::from_secs(10)) {
                    bail!("fsmount pid {} survived SIGKILL", rec.pid);
                }
            }
        }
    }
    // The serving process is gone: undo its mount ourselves.
    let _lock = state.lock()?;
    // None: it finished its own teardown meanwhile.
    if let Some(r) = state.record(&rec.mountpoint)? {
        teardown(state, &r, a.lazy)?;
    }
    println!("fsmount: unmounted {} (serving process was gone)", rec.mountpoint.display());
    Ok(ExitCode::SUCCESS)
}
