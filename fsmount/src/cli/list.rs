//! `fsmount list`: every recorded mount with its flists, rw layer, bytes
//! fetched and cache hit ratio (asked from the serving process).

use std::process::ExitCode;

use anyhow::Result;

use crate::server::client;
use crate::size::format_size;
use crate::state::StateDir;

#[derive(clap::Args, Debug)]
pub struct ListArgs {}

pub fn run(_a: ListArgs, state: &StateDir) -> Result<ExitCode> {
    let recs = state.records()?;
    println!(
        "{:<32} {:<12} {:<16} {:>12} {:>8}  SOURCES",
        "MOUNTPOINT", "STATE", "RW", "FETCHED", "HIT%"
    );
    for r in recs {
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
        println!(
            "{:<32} {:<12} {:<16} {:>12} {:>8}  {}",
            r.mountpoint.display(),
            st,
            rw,
            fetched,
            hit,
            r.sources.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
