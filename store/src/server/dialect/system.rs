//! System commands: TIME, INFO, WAIT, INDEX, DATA.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Request, Session, Shared, admin_only, msg, validate_min};
use crate::server::wire::ReplyBuf;

/// `*2` of unix seconds and microseconds, both as bulk strings.
pub fn time(out: &mut ReplyBuf) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    out.array(2);
    out.bulk_slice(now.as_secs().to_string().as_bytes());
    out.bulk_slice(now.subsec_micros().to_string().as_bytes());
}

fn mb(n: u64) -> f64 {
    n as f64 / (1024.0 * 1024.0)
}

/// INFO: 0-db's sections and field names; the server lines claim the
/// 0-db release this server reproduces, so clients that look at them work.
pub fn info(sh: &Shared, out: &mut ReplyBuf) {
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let boot = sh.boot.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let uptime = sh.boot.elapsed().unwrap_or_default().as_secs();
    let s = &sh.stats;
    let io = &sh.namespaces.context().stats;
    let mut t = String::new();
    let _ = writeln!(t, "# server");
    let _ = writeln!(t, "server_name: 0-db (zdb)");
    let _ = writeln!(t, "server_revision: v2.0.7");
    let _ = writeln!(t, "engine_revision: v2.0.7");
    let _ = writeln!(t, "instance_id: {}", sh.instance_id);
    let _ = writeln!(t, "boot_time: {boot}");
    let _ = writeln!(t, "uptime: {uptime}");
    let _ = writeln!(t, "\n# clients");
    let _ = writeln!(t, "clients_lifetime: {}", get(&s.clients));
    let _ = writeln!(t, "\n# internals");
    let _ = writeln!(t, "sequential_key_size: 8");
    let _ = writeln!(t, "data_version: 3");
    let _ = writeln!(t, "index_version: 4");
    let _ = writeln!(t, "\n# stats");
    let _ = writeln!(t, "commands_executed: {}", get(&s.commands_valid));
    let _ = writeln!(t, "commands_failed: {}", get(&s.commands_failed));
    let _ = writeln!(t, "commands_unauthorized: {}", get(&s.admin_failed));
    let _ = writeln!(t, "index_disk_read_failed: 0");
    let _ = writeln!(t, "index_disk_write_failed: {}", get(&io.index_write_failed));
    let _ = writeln!(t, "data_disk_read_failed: {}", get(&io.data_read_failed));
    let _ = writeln!(t, "data_disk_write_failed: {}", get(&io.data_write_failed));
    for (name, n) in [
        ("index_disk_read", get(&io.index_read_bytes)),
        ("index_disk_write", get(&io.index_write_bytes)),
        ("data_disk_read", get(&io.data_read_bytes)),
        ("data_disk_write", get(&io.data_write_bytes)),
        ("network_rx", get(&s.network_rx)),
        ("network_tx", get(&s.network_tx)),
    ] {
        let _ = writeln!(t, "{name}_bytes: {n}");
        let _ = writeln!(t, "{name}_mb: {:.2}", mb(n));
    }
    out.bulk(t.into_bytes().into());
}

/// WAIT <command> [timeout]: event waiting is not implemented; the
/// argument check is 0-db's.
pub fn wait(req: &Request, out: &mut ReplyBuf) {
    if req.argc() != 2 && req.argc() != 3 {
        return out.error("Invalid arguments");
    }
    out.error(msg::NOT_SUPPORTED);
}

/// INDEX DIRTY [RESET]: this server's index is a journal, never dirty.
pub fn index(sh: &Shared, se: &Session, req: &Request, out: &mut ReplyBuf) {
    if !admin_only(sh, se, out) || !validate_min(req, out, 2) {
        return;
    }
    if req.arg(1).len() > 256 {
        return out.error(msg::ARG_TOO_LONG);
    }
    if !req.arg(1).eq_ignore_ascii_case(b"DIRTY") {
        return out.error("Unknown INDEX subcommand");
    }
    if req.argc() == 3 {
        if req.arg(2).eq_ignore_ascii_case(b"RESET") {
            return out.status("OK");
        }
        return out.error("Unknown INDEX DIRTY subcommand");
    }
    out.array(0);
}

/// DATA RAW <fileid> <offset>: there are no 0-db data files to read here.
pub fn data(sh: &Shared, se: &Session, req: &Request, out: &mut ReplyBuf) {
    if !admin_only(sh, se, out) || !validate_min(req, out, 2) {
        return;
    }
    if req.arg(1).len() > 256 {
        return out.error(msg::ARG_TOO_LONG);
    }
    if !req.arg(1).eq_ignore_ascii_case(b"RAW") {
        return out.error("Unknown DATA subcommand");
    }
    if validate_min(req, out, 4) {
        out.error(msg::NOT_SUPPORTED);
    }
}
