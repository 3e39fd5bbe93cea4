//! `fsmount umount MOUNTPOINT`: ask the serving process to unmount, or —
//! when it is gone (kill -9) — undo its mount from the record. The mount
//! is found whatever state directory and cache it was made with.
//!
//! When that was the process's last mount, wait (bounded) until the
//! process is gone: it holds the node cache and the local chunk stores
//! until then, and the next mount of the same rw layer would race it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::{Ctx, MountFlags};
use crate::lifecycle::teardown;
use crate::records::fsmount_alive;
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
    #[command(flatten)]
    pub flags: MountFlags,
}

/// How long umount waits for a serving process to exit after its last
/// mount (it exits on its own well within its exit grace period).
const EXIT_WAIT: Duration = Duration::from_secs(30);

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

pub fn run(a: UmountArgs, ctx: &Ctx) -> Result<ExitCode> {
    let (state, rec) = ctx.node.find_mount(ctx.hint_state().as_ref(), &a.mountpoint)?;
    if rec.alive() {
        let req = Request::Umount { mountpoint: rec.mountpoint.clone(), lazy: a.lazy };
        match client::call(&rec.control, &req, Duration::from_secs(120)) {
            Ok(Answer::Ok(_)) => {
                println!("fsmount: unmounted {}", rec.mountpoint.display());
                wait_if_last(&state, rec.pid)?;
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
        teardown(&state, &r, a.lazy)?;
    }
    println!("fsmount: unmounted {} (serving process was gone)", rec.mountpoint.display());
    Ok(ExitCode::SUCCESS)
}

/// The serving process exits after its last mount: wait for that, so
/// what it holds is free when we return.
fn wait_if_last(state: &StateDir, pid: u32) -> Result<()> {
    if state.records()?.iter().any(|r| r.pid == pid) {
        return Ok(());
    }
    let deadline = Instant::now() + EXIT_WAIT;
    while fsmount_alive(pid) {
        if Instant::now() > deadline {
            eprintln!(
                "fsmount: pid {pid} served its last mount but is still running after {EXIT_WAIT:?}; `fsmount list` says why"
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
