//! Namespace and authentication commands: AUTH, SELECT, NSNEW, NSDEL,
//! NSLIST, NSSET, NSINFO, RELOAD, FLUSH.

use std::fmt::Write as _;

use sha1::{Digest, Sha1};

use super::{Request, ServerMode, Session, Shared, abbreviates, admin_only, atoll, msg, validate};
use crate::server::ns::journal::Setting;
use crate::server::ns::{CreateError, Lock, MAX_NAME, Mode, Namespace, table::DEFAULT};
use crate::server::wire::ReplyBuf;

/// Length of the lower-case hex SHA-1 a secure login sends.
const SHA1_HEX_LEN: usize = 40;

/// `sha1("<nonce>:<password>")` in lower-case hex.
pub fn secure_hash(nonce: &str, password: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(nonce.as_bytes());
    h.update(b":");
    h.update(password);
    hex::encode(h.finalize())
}

/// 16 lower-case hex characters.
fn new_nonce() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

/// Constant-time equality, so a password check does not leak its prefix.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A wrong password: counted for the throttle (see `super::throttle`).
fn denied(se: &mut Session, out: &mut ReplyBuf) {
    se.auth_failures += 1;
    out.error(msg::ACCESS_DENIED);
}

fn ns_name_too_long(req: &Request, out: &mut ReplyBuf) -> bool {
    if req.arg(1).len() > MAX_NAME {
        out.error(msg::NS_TOO_LONG);
        return true;
    }
    false
}

/// AUTH <password> | AUTH SECURE CHALLENGE | AUTH SECURE <sha1hex>
pub fn auth(sh: &Shared, se: &mut Session, req: &Request, out: &mut ReplyBuf) {
    match req.argc() {
        2 => auth_plain(sh, se, req, out),
        3 => auth_secure(sh, se, req, out),
        _ => out.error(msg::UNEXPECTED_ARGS),
    }
}

fn auth_plain(sh: &Shared, se: &mut Session, req: &Request, out: &mut ReplyBuf) {
    let Some(admin) = &sh.cfg.admin else {
        return out.error("Authentication disabled");
    };
    if !validate(req, out, 2) {
        return;
    }
    if req.arg(1).len() > 128 {
        return out.error("Password too long");
    }
    if same(req.arg(1), admin.expose()) {
        se.admin = true;
        out.status("OK");
    } else {
        denied(se, out);
    }
}

fn auth_secure(sh: &Shared, se: &mut Session, req: &Request, out: &mut ReplyBuf) {
    if !validate(req, out, 3) {
        return;
    }
    if !abbreviates(req.arg(1), "SECURE") {
        return out.error("Only SECURE extra method supported");
    }
    if abbreviates(req.arg(2), "CHALLENGE") {
        // Available without --admin too: SELECT ... SECURE needs it.
        let nonce = new_nonce();
        out.status(&nonce);
        se.nonce = Some(nonce);
        return;
    }
    let Some(admin) = &sh.cfg.admin else {
        return out.error("Authentication disabled");
    };
    let Some(nonce) = &se.nonce else {
        return out.error(msg::NO_CHALLENGE);
    };
    if req.arg(2).len() != SHA1_HEX_LEN {
        // Does not use up the nonce.
        return out.error(msg::HASH_LENGTH);
    }
    // Case-sensitive: upper-case hex is refused.
    if same(req.arg(2), secure_hash(nonce, admin.expose()).as_bytes()) {
        se.admin = true;
        out.status("OK");
    } else {
        denied(se, out);
    }
    // Any attempt with a full-length hash uses the nonce up.
    se.nonce = None;
}

/// SELECT <ns> [password] | SELECT <ns> SECURE <sha1hex>
pub fn select(sh: &Shared, se: &mut Session, req: &Request, out: &mut ReplyBuf) {
    if req.argc() < 2 {
        return out.error(msg::INVALID_ARG);
    }
    if ns_name_too_long(req, out) {
        return;
    }
    let Some(ns) = sh.namespaces.get(req.arg(1)) else {
        return out.error(msg::NS_NOT_FOUND);
    };
    let mut writable = true;
    if let Some(password) = sh.password_of(&ns) {
        if req.argc() < 3 {
            if !ns.settings().public {
                return out.error("Namespace protected and private");
            }
            writable = false;
        } else if req.argc() > 4 {
            return out.error("Too many arguments");
        } else if req.argc() == 3 {
            if req.arg(2).len() > 255 {
                return out.error("Password too long");
            }
            if !same(req.arg(2), password.expose()) {
                return denied(se, out);
            }
        } else {
            if !abbreviates(req.arg(2), "SECURE") {
                return out.error("Only SECURE extra method supported");
            }
            let Some(nonce) = &se.nonce else {
                return out.error(msg::NO_CHALLENGE);
            };
            if req.arg(3).len() != SHA1_HEX_LEN {
                return out.error(msg::HASH_LENGTH);
            }
            // SELECT never uses the nonce up.
            if !same(req.arg(3), secure_hash(nonce, password.expose()).as_bytes()) {
                return denied(se, out);
            }
        }
    }
    se.ns = ns;
    se.writable = writable;
    out.status("OK");
}

/// 0-db's name rule: not `.`, `..`, `default`, nothing with `/`.
/// A NUL byte would cut the name short in 0-db; it is refused here.
fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name != b"."
        && name != b".."
        && name != DEFAULT
        && !name.contains(&b'/')
        && !name.contains(&0)
}

pub async fn nsnew(sh: &Shared, se: &Session, req: &Request<'_>, out: &mut ReplyBuf) {
    if !admin_only(sh, se, out) || !validate(req, out, 2) || ns_name_too_long(req, out) {
        return;
    }
    if !valid_name(req.arg(1)) {
        return out.error("This name is not allowed");
    }
    match sh.namespaces.create(req.arg(1), sh.cfg.mode.new_namespace_mode()).await {
        Ok(_) => out.status("OK"),
        Err(CreateError::Exists) => out.error("This namespace is not available"),
        Err(CreateError::Io(e)) => {
            tracing::error!("NSNEW: {}", e.chain());
            out.error("Could not create namespace");
        }
    }
}

pub async fn nsdel(sh: &Shared, se: &Session, req: &Request<'_>, out: &mut ReplyBuf) {
    if !admin_only(sh, se, out) || !validate(req, out, 2) || ns_name_too_long(req, out) {
        return;
    }
    if req.arg(1) == DEFAULT {
        return out.error("Cannot remove default namespace");
    }
    let Some(ns) = sh.namespaces.get(req.arg(1)) else {
        return out.error("This namespace doesn't exists");
    };
    if std::sync::Arc::ptr_eq(&ns, &se.ns) {
        return out.error("Cannot remove namespace you're currently using.");
    }
    match sh.namespaces.remove(&ns).await {
        Ok(()) => out.status("OK"),
        Err(e) => {
            tracing::error!("NSDEL: {}", e.chain());
            out.error("Could not delete this namespace");
        }
    }
}

pub fn nslist(sh: &Shared, out: &mut ReplyBuf) {
    let names = sh.namespaces.names();
    out.array(names.len());
    for n in names {
        out.bulk(n);
    }
}

/// What NSSET changes.
enum Change {
    Persistent(Setting),
    Lock(Lock),
}

/// C-string view of an argument (0-db formats arguments with `%.*s`).
fn c_str(b: &[u8]) -> &[u8] {
    b.iter().position(|&c| c == 0).map_or(b, |n| &b[..n])
}

fn flag(value: &[u8]) -> bool {
    value.first() == Some(&b'1')
}

pub async fn nsset(sh: &Shared, se: &Session, req: &Request<'_>, out: &mut ReplyBuf) {
    if !admin_only(sh, se, out) || !validate(req, out, 4) || ns_name_too_long(req, out) {
        return;
    }
    if req.arg(2).len() > 256 || req.arg(3).len() > 63 {
        return out.error(msg::ARG_TOO_LONG);
    }
    let Some(ns) = sh.namespaces.get(req.arg(1)) else {
        return out.error(msg::NS_NOT_FOUND);
    };
    let (prop, value) = (c_str(req.arg(2)), c_str(req.arg(3)));
    let change = match prop {
        b"mode" => match mode_change(sh, &ns, value) {
            Ok(m) => Change::Persistent(Setting::Sequential(m == Mode::Sequential)),
            Err(e) => return out.error(e),
        },
        b"lock" => Change::Lock(if flag(value) { Lock::ReadOnly } else { Lock::Open }),
        b"freeze" => Change::Lock(if flag(value) { Lock::Frozen } else { Lock::Open }),
        _ if ns.name() == DEFAULT => return out.error("Cannot update default namespace"),
        b"maxsize" => Change::Persistent(Setting::MaxSize(atoll(value).max(0) as u64)),
        // `*` clears the password (stored as empty).
        b"password" if value == b"*" => Change::Persistent(Setting::Password(Vec::new())),
        b"password" => Change::Persistent(Setting::Password(value.to_vec())),
        b"public" => Change::Persistent(Setting::Public(flag(value))),
        b"worm" => Change::Persistent(Setting::Worm(flag(value))),
        _ => return out.error("Invalid property"),
    };
    match change {
        Change::Lock(l) => ns.set_lock(l),
        Change::Persistent(s) => {
            if let Err(e) = ns.set_setting(s).await {
                tracing::error!("NSSET: {}", e.chain());
                return out.error("Cannot write index right now");
            }
        }
    }
    out.status("OK");
}

fn mode_change(sh: &Shared, ns: &Namespace, value: &[u8]) -> Result<Mode, &'static str> {
    if sh.cfg.mode != ServerMode::Mixed {
        return Err("This server instance is configured to use a single runtime mode");
    }
    if !ns.is_fresh() {
        return Err("Cannot change mode of used namespace");
    }
    match value {
        b"user" => Ok(Mode::User),
        b"seq" => Ok(Mode::Sequential),
        _ => Err("Invalid property value (expected: user, seq)"),
    }
}

fn mb(n: u64) -> f64 {
    n as f64 / (1024.0 * 1024.0)
}

/// Free bytes for unprivileged users on the filesystem holding `path`.
fn free_space(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain old data that the call fills in; zeroed is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bsize as u64 * st.f_bavail as u64)
}

pub fn nsinfo(sh: &Shared, se: &Session, req: &Request, out: &mut ReplyBuf) {
    if !validate(req, out, 2) || ns_name_too_long(req, out) {
        return;
    }
    let Some(ns) = sh.namespaces.get(req.arg(1)) else {
        return out.error(msg::NS_NOT_FOUND);
    };
    out.bulk(info_text(sh, se, &ns).into());
}

/// NSINFO's `key: value` lines, in 0-db's order.
fn info_text(sh: &Shared, se: &Session, ns: &Namespace) -> Vec<u8> {
    let i = ns.info();
    let yes = |b: bool| if b { "yes" } else { "no" };
    let mut t = String::new();
    let _ = write!(t, "# namespace\nname: ");
    let mut bytes = t.into_bytes();
    bytes.extend_from_slice(ns.name());
    let mut t = String::new();
    let _ = writeln!(t);
    let _ = writeln!(t, "entries: {}", i.entries);
    let _ = writeln!(t, "public: {}", yes(i.settings.public));
    let _ = writeln!(t, "worm: {}", yes(i.settings.worm));
    let _ = writeln!(t, "locked: {}", yes(i.locked));
    let _ = writeln!(t, "password: {}", yes(sh.password_of(ns).is_some()));
    let _ = writeln!(t, "data_size_bytes: {}", i.data_size);
    let _ = writeln!(t, "data_size_mb: {:.2}", mb(i.data_size));
    let _ = writeln!(t, "data_limits_bytes: {}", i.settings.maxsize);
    let _ = writeln!(t, "index_size_bytes: {}", i.index_size);
    let _ = writeln!(t, "index_size_kb: {:.2}", i.index_size as f64 / 1024.0);
    // 0-db prints the id byte-swapped.
    let _ = writeln!(t, "next_internal_id: 0x{:08x}", i.next_id.swap_bytes());
    let _ = writeln!(t, "mode: {}", i.settings.mode.info_name());
    for k in ["index_io_errors", "index_io_error_last", "index_faults"] {
        let _ = writeln!(t, "stats_{k}: 0");
    }
    for k in ["data_io_errors", "data_io_error_last", "data_faults"] {
        let _ = writeln!(t, "stats_{k}: 0");
    }
    if i.settings.maxsize > 0 {
        let _ = writeln!(t, "space_available: {}", i.settings.maxsize.wrapping_sub(i.data_size));
    }
    if let Some(free) = free_space(ns.dir()) {
        let _ = writeln!(t, "index_disk_freespace_bytes: {free}");
        let _ = writeln!(t, "index_disk_freespace_mb: {:.2}", mb(free));
    }
    if let Some(free) = free_space(&sh.cfg.data_dir) {
        let _ = writeln!(t, "data_disk_freespace_bytes: {free}");
        let _ = writeln!(t, "data_disk_freespace_mb: {:.2}", mb(free));
    }
    if se.admin {
        let _ = writeln!(t, "data_path: {}", ns.values().url());
        let _ = writeln!(t, "data_active: {}", ns.values().url());
        let _ = writeln!(t, "index_path: {}", ns.dir().display());
        let _ = writeln!(t, "index_active: {}", ns.journal_path().display());
        let _ = writeln!(t, "data_current_id: 0");
        let _ = writeln!(t, "data_current_offset: {}", i.data_size);
    }
    bytes.extend_from_slice(t.as_bytes());
    bytes
}

pub fn reload(sh: &Shared, se: &Session, req: &Request, out: &mut ReplyBuf) {
    if !admin_only(sh, se, out) || !validate(req, out, 2) || ns_name_too_long(req, out) {
        return;
    }
    // The in-memory index is always current: nothing to reload.
    match sh.namespaces.get(req.arg(1)) {
        Some(_) => out.status("OK"),
        None => out.error(msg::NS_NOT_FOUND),
    }
}

/// FLUSH: 0-db v2.0.7 refuses public or password-less namespaces and
/// answers `+OK` on private password ones while keeping the data (recorded
/// in the fixture, steps 185-187). Clients see the same here.
pub fn flush(sh: &Shared, se: &Session, out: &mut ReplyBuf) {
    if se.ns.settings().public || sh.password_of(&se.ns).is_none() {
        return out.error("Flushing public namespace denied");
    }
    out.status("OK");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_hash_is_lowercase_sha1_hex() {
        // The nonce of fixture step 272; python3: hashlib.sha1(b'27c672a2115a7b38:ADMINPW').hexdigest()
        let h = secure_hash("27c672a2115a7b38", b"ADMINPW");
        assert_eq!(h, "961487e13397f61fd8b98e7e0295372642b149c9"); // fixture step 274
        assert_eq!(secure_hash("n", b"pw"), secure_hash("n", b"pw"));
        assert_ne!(secure_hash("n", b"pw"), secure_hash("m", b"pw"));
    }

    #[test]
    fn names() {
        for bad in [&b""[..], b".", b"..", b"default", b"a/b", b"a\0b"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(valid_name(b"imgs"));
        assert!(valid_name(b"..."));
    }

    #[test]
    fn nonce_is_16_lower_hex() {
        let n = new_nonce();
        assert_eq!(n.len(), 16);
        assert!(n.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')));
    }
}
