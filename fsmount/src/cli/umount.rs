//! `fsmount umount MOUNTPOINT`: ask the serving process to unmount, or —
//! when it is gone (kill -9) — undo its mount from the record.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::lifecycle::teardown;
use crate::server::client;
use crate::server::protocol::{Answer, Request};
use crate::state::StateDir;
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
        let req = Request::Umount { mountpoint: rec.mountpoint.clone(), lazy: a.lazy };
        match client::call(&rec.control, &req, Duration::from_secs(120)) {
            Ok(Answer::Ok(_)) => {
                println!("fsmount: unmounted {}", rec.mountpoint.display());
                return Ok(ExitCode::SUCCESS);
            }
            // The server refused (busy): nothing was undone.
            Ok(Answer::Error(msg)) if !msg.contains("is not served here") => bail!("{msg}"),
            // A server that does not know this mount: its record is stale.
            Ok(Answer::Error(_)) => {}
            // Exiting, or being killed (its socket closes before it is gone).
            Ok(Answer::Retry) | Err(_) if wait_exit(rec.pid, Duration::from_secs(3)) => {}
            Ok(Answer::Retry) | Err(_) if !a.force => {
                bail!("fsmount pid {} does not answer; retry with --force", rec.pid)
            }
            Ok(Answer::Retry) | Err(_) => {
                tracing::warn!("pid {} does not answer; killing it", rec.pid);
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
