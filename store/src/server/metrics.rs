//! `chunkstore serve --metrics`: the server's counters in the Prometheus
//! text exposition format 0.0.4, served by `crate::process::http`.
//!
//! Every family is `zosfs_serve_*`. Counters only grow while the process
//! lives; gauges (open connections, per-namespace keys and bytes, journal
//! sizes, uptime) are read at scrape time.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::dialect::Shared;
use crate::process::http::escape_label;

/// Text of one scrape.
pub fn render(sh: &Shared) -> String {
    let mut out = String::new();
    counters(sh, &mut out);
    commands(sh, &mut out);
    namespaces(sh, &mut out);
    let uptime = sh.boot.elapsed().unwrap_or_default().as_secs_f64();
    family(&mut out, "uptime_seconds", "gauge", "Seconds since the server started");
    let _ = writeln!(out, "zosfs_serve_uptime_seconds {uptime:.3}");
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP zosfs_serve_{name} {help}.\n# TYPE zosfs_serve_{name} {kind}");
}

fn counters(sh: &Shared, out: &mut String) {
    let s = &sh.stats;
    let get = |c: &AtomicU64| c.load(Relaxed);
    let open = get(&s.connections_open);
    family(out, "connections_open", "gauge", "Client connections being served");
    let _ = writeln!(out, "zosfs_serve_connections_open {open}");
    let list: [(&str, &str, u64); 8] = [
        ("connections_total", "Client connections accepted and served", get(&s.clients)),
        (
            "connections_refused_total",
            "Connections closed at once for being over --max-connections",
            get(&s.connections_refused),
        ),
        ("requests_unknown_total", "Requests naming no known command", get(&s.commands_failed)),
        ("errors_total", "Error replies to known commands", get(&s.error_replies)),
        ("auth_failures_total", "Wrong passwords sent with AUTH or SELECT", get(&s.auth_failed)),
        ("unauthorized_total", "Admin commands refused to non-admin clients", get(&s.admin_failed)),
        ("received_bytes_total", "Bytes received from clients", get(&s.network_rx)),
        ("sent_bytes_total", "Bytes sent to clients", get(&s.network_tx)),
    ];
    for (name, help, v) in list {
        family(out, name, "counter", help);
        let _ = writeln!(out, "zosfs_serve_{name} {v}");
    }
}

fn commands(sh: &Shared, out: &mut String) {
    family(out, "requests_total", "counter", "Requests by command");
    for (cmd, n) in sh.stats.by_command.snapshot() {
        let _ =
            writeln!(out, "zosfs_serve_requests_total{{command=\"{}\"}} {n}", escape_label(cmd));
    }
}

fn namespaces(sh: &Shared, out: &mut String) {
    let rows: Vec<(String, u64, u64, u64)> = sh
        .namespaces
        .all()
        .iter()
        .map(|ns| {
            let i = ns.info();
            let journal = std::fs::metadata(ns.journal_path()).map_or(0, |m| m.len());
            let name = escape_label(&String::from_utf8_lossy(ns.name()));
            (name, i.entries, i.data_size, journal)
        })
        .collect();
    type Col = fn(&(String, u64, u64, u64)) -> u64;
    let cols: [(&str, &str, Col); 3] = [
        ("namespace_keys", "Keys in the namespace", |r| r.1),
        ("namespace_data_bytes", "Bytes of values in the namespace", |r| r.2),
        ("namespace_journal_bytes", "Size of the namespace's metadata journal", |r| r.3),
    ];
    for (name, help, col) in cols {
        family(out, name, "gauge", help);
        for r in &rows {
            let _ = writeln!(out, "zosfs_serve_{name}{{namespace=\"{}\"}} {}", r.0, col(r));
        }
    }
    let total: u64 = rows.iter().map(|r| r.3).sum();
    family(out, "journal_bytes", "gauge", "Size of every metadata journal together");
    let _ = writeln!(out, "zosfs_serve_journal_bytes {total}");
}
