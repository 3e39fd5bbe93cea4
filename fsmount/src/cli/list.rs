//! `fsmount list`: every mount on the node — whatever its state directory
//! and cache — with its flists, rw layer, bytes fetched and cache hit
//! ratio (asked from the serving process); then every serving process and
//! why it is alive.

use std::process::ExitCode;

use anyhow::Result;

use super::{Ctx, MountFlags};
use crate::records::now_secs;
use crate::registry::Phase;
use crate::server::client;
use crate::size::format_size;

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub flags: MountFlags,
}

pub fn run(_a: ListArgs, ctx: &Ctx) -> Result<ExitCode> {
    let mounts = ctx.node.all_mounts(ctx.hint_state().as_ref())?;
    println!(
        "{:<32} {:<12} {:<16} {:>12} {:>8}  {:<24} SOURCES",
        "MOUNTPOINT", "PROCESS", "RW", "FETCHED", "HIT%", "CACHE"
    );
    for (_, r) in &mounts {
        let (st, fetched, hit) = if r.alive() {
            match client::fetch_stats(&r.control, &r.mountpoint) {
                Ok(s) => (
                    format!("pid {}", r.pid),
                    format_size(s.bytes_fetched),
                    s.hit_ratio().map(|h| format!("{:.1}", h * 100.0)).unwrap_or("-".into()),
                ),
                Err(_) => (format!("pid {}?", r.pid), "-".into(), "-".into()),
            }
        } else {
            ("dead".to_string(), "-".into(), "-".into())
        };
        let rw = match (&r.rw, r.read_only) {
            (Some(n), true) => format!("{n} (ro)"),
            (Some(n), false) => n.clone(),
            (None, _) => "-".into(),
        };
        let cache = r.cache.as_ref().map(|c| c.display().to_string()).unwrap_or("-".into());
        println!(
            "{:<32} {:<12} {:<16} {:>12} {:>8}  {:<24} {}",
            r.mountpoint.display(),
            st,
            rw,
            fetched,
            hit,
            cache,
            r.sources.join(" ")
        );
    }
    if mounts.iter().any(|(_, r)| !r.alive()) {
        eprintln!(
            "fsmount: dead mounts lost their process; `fsmount umount MOUNTPOINT` cleans them"
        );
    }

    let servers = ctx.node.servers()?;
    if !servers.is_empty() {
        println!();
        println!(
            "{:<12} {:<9} {:>6}  {:<24} {:<24} WHY ALIVE",
            "SERVER", "PHASE", "MOUNTS", "CACHE", "STATE"
        );
    }
    for s in servers {
        let phase = match s.phase {
            Phase::Starting => "starting",
            Phase::Serving => "serving",
            Phase::Stopping => "stopping",
            Phase::Exiting => "exiting",
        };
        let mut why = s.why.clone();
        if s.phase != Phase::Serving {
            why.push_str(&format!(" (for {} s)", now_secs().saturating_sub(s.since)));
        }
        println!(
            "{:<12} {:<9} {:>6}  {:<24} {:<24} {}",
            format!("pid {}", s.pid),
            phase,
            s.mounts.len(),
            s.cache.display(),
            s.state.display(),
            why
        );
    }
    Ok(ExitCode::SUCCESS)
}
