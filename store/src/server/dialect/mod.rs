//! The 0-db dialect: the command table with its prefix matching, the
//! per-connection session (namespace, admin, nonce), argument checks in
//! 0-db's order and the exact reply strings of 0-db v2.0.7 (see
//! `tests/fixtures/zdb/README.md` for the recorded behaviour).

mod data;
mod namespace;
mod system;
pub mod throttle;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;

use super::ns::{Mode, Namespace, Namespaces, Password};
use super::wire::{Drain, ReplyBuf};
use throttle::{AuthThrottle, MAX_FAILURES_PER_CONN};

/// How namespaces pick their mode (`--mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ServerMode {
    /// Each namespace is user or sequential; NSSET mode switches empty ones.
    #[default]
    Mixed,
    User,
    Sequential,
}

impl ServerMode {
    /// The mode a single-mode server forces on every namespace.
    pub fn forced(self) -> Option<Mode> {
        match self {
            ServerMode::Mixed => None,
            ServerMode::User => Some(Mode::User),
            ServerMode::Sequential => Some(Mode::Sequential),
        }
    }

    /// Mode of new namespaces.
    pub fn new_namespace_mode(self) -> Mode {
        self.forced().unwrap_or(Mode::User)
    }
}

/// Dialect settings.
#[derive(Clone, Debug, Default)]
pub struct DialectConfig {
    pub mode: ServerMode,
    /// Admin password (`--admin`); None: every connection is admin.
    pub admin: Option<Password>,
    /// `--protect`: the admin password also protects `default` (public,
    /// so connections start on it read-only).
    pub protect: bool,
    /// Data directory (NSINFO free space).
    pub data_dir: PathBuf,
}

/// Server-wide counters (INFO, and `--metrics`).
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections served since start.
    pub clients: AtomicU64,
    /// Connections being served now.
    pub connections_open: AtomicU64,
    /// Connections closed at once for being over --max-connections.
    pub connections_refused: AtomicU64,
    pub commands_valid: AtomicU64,
    pub commands_failed: AtomicU64,
    pub admin_failed: AtomicU64,
    /// Wrong passwords (AUTH or SELECT).
    pub auth_failed: AtomicU64,
    /// Error replies to known commands.
    pub error_replies: AtomicU64,
    pub by_command: CommandCounts,
    pub network_rx: AtomicU64,
    pub network_tx: AtomicU64,
}

/// Requests per command, indexed by `Cmd`.
#[derive(Debug)]
pub struct CommandCounts(Box<[AtomicU64]>);

impl Default for CommandCounts {
    fn default() -> Self {
        CommandCounts((0..=Cmd::LAST as usize).map(|_| AtomicU64::new(0)).collect())
    }
}

impl CommandCounts {
    fn bump(&self, cmd: Cmd) {
        bump(&self.0[cmd as usize]);
    }

    /// (command name, requests) of every command, in 0-db's table order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let mut seen = Vec::new();
        for &(name, cmd) in TABLE {
            // Aliases (SETX, SCANX) count under their command's first name.
            if !seen.iter().any(|&(_, c)| c == cmd) {
                seen.push((name, cmd));
            }
        }
        seen.into_iter().map(|(n, c)| (n, self.0[c as usize].load(Ordering::Relaxed))).collect()
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Everything the connections of one server share.
#[derive(Debug)]
pub struct Shared {
    pub cfg: DialectConfig,
    pub namespaces: Namespaces,
    pub stats: Stats,
    pub boot: SystemTime,
    pub instance_id: u32,
    pub auth_throttle: AuthThrottle,
}

impl Shared {
    pub fn new(cfg: DialectConfig, namespaces: Namespaces) -> Shared {
        Shared {
            cfg,
            namespaces,
            stats: Stats::default(),
            boot: SystemTime::now(),
            instance_id: rand::random(),
            auth_throttle: AuthThrottle::default(),
        }
    }

    /// The password a namespace is protected by: `--protect` gives
    /// `default` the admin password.
    fn password_of(&self, ns: &Namespace) -> Option<Password> {
        if self.cfg.protect && ns.name() == super::ns::table::DEFAULT {
            return self.cfg.admin.clone();
        }
        ns.settings().password
    }

    /// A fresh session on `default` for a client at `peer` (None: unix
    /// socket). Without `--admin` every client is admin, as in 0-db.
    pub fn session(&self, peer: Option<IpAddr>) -> Session {
        bump(&self.stats.clients);
        Session {
            ns: self.namespaces.default_ns(),
            writable: !self.cfg.protect,
            admin: self.cfg.admin.is_none(),
            nonce: None,
            peer,
            auth_failures: 0,
        }
    }
}

/// Per-connection state.
#[derive(Debug)]
pub struct Session {
    pub ns: Arc<Namespace>,
    /// SELECT without the password of a public namespace is read-only.
    pub writable: bool,
    pub admin: bool,
    /// Nonce of the last `AUTH SECURE CHALLENGE`.
    pub nonce: Option<String>,
    /// The client's address, for the AUTH throttle.
    pub peer: Option<IpAddr>,
    /// Wrong passwords sent on this connection (AUTH or SELECT).
    pub auth_failures: u32,
}

/// What the connection does after a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    Continue,
    Close,
}

/// A request: `args[0]` is the command name.
pub struct Request<'a> {
    pub args: &'a [Bytes],
}

impl Request<'_> {
    /// Number of elements, command name included (0-db's argc).
    pub fn argc(&self) -> usize {
        self.args.len()
    }
    pub fn arg(&self, i: usize) -> &Bytes {
        &self.args[i]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Asterisk,
    Wait,
    Mirror,
    Master,
    Ping,
    Time,
    Auth,
    Hooks,
    Index,
    Data,
    Set,
    Get,
    MGet,
    Del,
    Exists,
    Check,
    Scan,
    RScan,
    KScan,
    History,
    KeyCur,
    Length,
    KeyTime,
    Info,
    Stop,
    DbSize,
    NsNew,
    NsDel,
    NsList,
    NsSet,
    NsInfo,
    NsJump,
    Select,
    Reload,
    Flush,
}

impl Cmd {
    /// The last variant: counters are indexed by `Cmd as usize`.
    const LAST: Cmd = Cmd::Flush;
}

/// 0-db's table, in its order: a name matches the first entry it is a
/// case-insensitive prefix of.
const TABLE: &[(&str, Cmd)] = &[
    ("*", Cmd::Asterisk),
    ("WAIT", Cmd::Wait),
    ("MIRROR", Cmd::Mirror),
    ("MASTER", Cmd::Master),
    ("PING", Cmd::Ping),
    ("TIME", Cmd::Time),
    ("AUTH", Cmd::Auth),
    ("HOOKS", Cmd::Hooks),
    ("INDEX", Cmd::Index),
    ("DATA", Cmd::Data),
    ("SET", Cmd::Set),
    ("SETX", Cmd::Set),
    ("GET", Cmd::Get),
    ("MGET", Cmd::MGet),
    ("DEL", Cmd::Del),
    ("EXISTS", Cmd::Exists),
    ("CHECK", Cmd::Check),
    ("SCAN", Cmd::Scan),
    ("SCANX", Cmd::Scan),
    ("RSCAN", Cmd::RScan),
    ("KSCAN", Cmd::KScan),
    ("HISTORY", Cmd::History),
    ("KEYCUR", Cmd::KeyCur),
    ("LENGTH", Cmd::Length),
    ("KEYTIME", Cmd::KeyTime),
    ("INFO", Cmd::Info),
    ("STOP", Cmd::Stop),
    ("DBSIZE", Cmd::DbSize),
    ("NSNEW", Cmd::NsNew),
    ("NSDEL", Cmd::NsDel),
    ("NSLIST", Cmd::NsList),
    ("NSSET", Cmd::NsSet),
    ("NSINFO", Cmd::NsInfo),
    ("NSJUMP", Cmd::NsJump),
    ("SELECT", Cmd::Select),
    ("RELOAD", Cmd::Reload),
    ("FLUSH", Cmd::Flush),
];

/// Whether `word` abbreviates `full`: 0-db compares with
/// `strncasecmp(word, full, len(word))`, which stops at a NUL byte.
pub(crate) fn abbreviates(word: &[u8], full: &str) -> bool {
    let word = match word.iter().position(|&b| b == 0) {
        Some(nul) => &word[..nul],
        None => word,
    };
    word.len() <= full.len() && full.as_bytes()[..word.len()].eq_ignore_ascii_case(word)
}

fn lookup(name: &[u8]) -> Option<Cmd> {
    TABLE.iter().find(|(full, _)| abbreviates(name, full)).map(|&(_, c)| c)
}

/// Exact 0-db error lines shared by several commands.
pub(crate) mod msg {
    pub const UNEXPECTED_ARGS: &str = "Unexpected arguments";
    pub const INVALID_ARG: &str = "Invalid argument";
    pub const MISSING_ARGS: &str = "Missing arguments";
    pub const PERMISSION: &str = "Permission denied";
    pub const FROZEN: &str = "Namespace is temporarily frozen (read-write disabled)";
    pub const LOCKED: &str = "Namespace is temporarily locked (read-only)";
    pub const READ_ONLY: &str = "Namespace is in read-only mode";
    pub const INVALID_KEY: &str = "Invalid key";
    pub const NS_TOO_LONG: &str = "Namespace too long";
    pub const NS_NOT_FOUND: &str = "Namespace not found";
    pub const ACCESS_DENIED: &str = "Access denied";
    pub const NO_CHALLENGE: &str = "No CHALLENGE requested, secure authentication not available";
    pub const HASH_LENGTH: &str = "Invalid hash length";
    pub const ARG_TOO_LONG: &str = "Argument too long";
    pub const NOT_SUPPORTED: &str = "Command not supported";
    pub const NS_GONE: &str = "Your active namespace is not available anymore (probably removed).";
}

/// 0-db's `command_args_validate`: exactly `n` elements, none empty.
fn validate(req: &Request, out: &mut ReplyBuf, n: usize) -> bool {
    if req.argc() != n {
        out.error(msg::UNEXPECTED_ARGS);
        return false;
    }
    if req.args.iter().any(|a| a.is_empty()) {
        out.error(msg::INVALID_ARG);
        return false;
    }
    true
}

/// 0-db's `command_args_validate_min`: at least `n` elements, none empty.
fn validate_min(req: &Request, out: &mut ReplyBuf, n: usize) -> bool {
    if req.argc() < n {
        out.error(msg::MISSING_ARGS);
        return false;
    }
    if req.args.iter().any(|a| a.is_empty()) {
        out.error(msg::INVALID_ARG);
        return false;
    }
    true
}

fn admin_only(sh: &Shared, se: &Session, out: &mut ReplyBuf) -> bool {
    if !se.admin {
        bump(&sh.stats.admin_failed);
        out.error(msg::PERMISSION);
    }
    se.admin
}

/// C `atoll`: optional blanks and sign, then digits up to the first
/// non-digit; 0 when there are none. Saturates instead of overflowing.
pub(crate) fn atoll(b: &[u8]) -> i64 {
    let b = match b.iter().position(|c| !c.is_ascii_whitespace()) {
        Some(i) => &b[i..],
        None => return 0,
    };
    let (neg, digits) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    let mut v: i64 = 0;
    for &c in digits.iter().take_while(|c| c.is_ascii_digit()) {
        v = v.saturating_mul(10).saturating_add((c - b'0') as i64);
    }
    if neg { -v } else { v }
}

/// Whether a request checks a password (throttled after failures).
fn checks_password(cmd: Cmd, req: &Request) -> bool {
    match cmd {
        Cmd::Auth => !(req.argc() == 3 && abbreviates(req.arg(2), "CHALLENGE")),
        Cmd::Select => req.argc() >= 3,
        _ => false,
    }
}

/// Run one request and queue its reply; replies too long to hold whole
/// are handed to `drain` as they are produced.
pub async fn execute(
    sh: &Shared,
    se: &mut Session,
    args: &[Bytes],
    out: &mut ReplyBuf,
    drain: &mut dyn Drain,
) -> After {
    // A connection whose namespace NSDEL removed is told so and dropped,
    // whatever it asked.
    if se.ns.is_removed() {
        out.error(msg::NS_GONE);
        return After::Close;
    }
    let req = Request { args };
    let Some(cmd) = lookup(req.arg(0)) else {
        bump(&sh.stats.commands_failed);
        out.error(msg::NOT_SUPPORTED);
        return After::Continue;
    };
    bump(&sh.stats.commands_valid);
    sh.stats.by_command.bump(cmd);
    let failures = se.auth_failures;
    let errors = out.errors();
    if checks_password(cmd, &req) {
        sh.auth_throttle.admit(se.peer).await;
    }
    match cmd {
        Cmd::Asterisk => out.error("This is not a valid command"),
        Cmd::Wait => system::wait(&req, out),
        Cmd::Mirror | Cmd::Master => {
            if admin_only(sh, se, out) {
                out.error(msg::NOT_SUPPORTED);
            }
        }
        Cmd::Ping => out.status("PONG"),
        Cmd::Time => system::time(out),
        Cmd::Auth => namespace::auth(sh, se, &req, out),
        Cmd::Hooks => {
            if admin_only(sh, se, out) {
                out.array(0);
            }
        }
        Cmd::Index => system::index(sh, se, &req, out),
        Cmd::Data => system::data(sh, se, &req, out),
        Cmd::Set => data::set(sh, se, &req, out).await,
        Cmd::Get => data::get(se, &req, out).await,
        Cmd::MGet => {
            let after = data::mget(se, &req, out, drain).await;
            sh.stats.error_replies.fetch_add(out.errors() - errors, Ordering::Relaxed);
            return after;
        }
        Cmd::Del => data::del(sh, se, &req, out).await,
        Cmd::Exists => data::exists(se, &req, out),
        Cmd::Check => data::check(se, &req, out).await,
        Cmd::Scan => data::scan(se, &req, out, false),
        Cmd::RScan => data::scan(se, &req, out, true),
        Cmd::KScan => out.error("Command disabled in release code, not yet available"),
        Cmd::History => out.error(msg::NOT_SUPPORTED),
        Cmd::KeyCur => data::keycur(se, &req, out),
        Cmd::Length => data::length(se, &req, out),
        Cmd::KeyTime => data::keytime(se, &req, out),
        Cmd::Info => system::info(sh, out),
        // A release build of 0-db cannot be stopped by a client.
        Cmd::Stop => out.error("Unauthorized"),
        Cmd::DbSize => out.int(se.ns.len() as i64),
        Cmd::NsNew => namespace::nsnew(sh, se, &req, out).await,
        Cmd::NsDel => namespace::nsdel(sh, se, &req, out).await,
        Cmd::NsList => namespace::nslist(sh, out),
        Cmd::NsSet => namespace::nsset(sh, se, &req, out).await,
        Cmd::NsInfo => namespace::nsinfo(sh, se, &req, out),
        Cmd::NsJump => {
            if admin_only(sh, se, out) {
                out.status("OK");
            }
        }
        Cmd::Select => namespace::select(sh, se, &req, out),
        Cmd::Reload => namespace::reload(sh, se, &req, out),
        Cmd::Flush => namespace::flush(sh, se, out),
    }
    sh.stats.error_replies.fetch_add(out.errors() - errors, Ordering::Relaxed);
    if se.auth_failures > failures {
        bump(&sh.stats.auth_failed);
        sh.auth_throttle.failed(se.peer);
        if se.auth_failures >= MAX_FAILURES_PER_CONN {
            tracing::info!("closing a connection after {} wrong passwords", se.auth_failures);
            return After::Close;
        }
    }
    After::Continue
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matching_follows_table_order() {
        for (name, want) in [
            (&b"GE"[..], Some(Cmd::Get)),
            (b"get", Some(Cmd::Get)),
            (b"ex", Some(Cmd::Exists)),
            (b"P", Some(Cmd::Ping)),
            (b"DB", Some(Cmd::DbSize)),
            (b"NSL", Some(Cmd::NsList)),
            (b"S", Some(Cmd::Set)),
            (b"D", Some(Cmd::Data)),
            (b"SETX", Some(Cmd::Set)),
            (b"SCANX", Some(Cmd::Scan)),
            (b"*", Some(Cmd::Asterisk)),
            (b"", Some(Cmd::Asterisk)),
            (b"GETX", None),
            (b"FOOBAR", None),
            (b"NS", Some(Cmd::NsNew)),
            (b"R", Some(Cmd::RScan)),
            (b"GET\0junk", Some(Cmd::Get)),
        ] {
            assert_eq!(lookup(name), want, "{:?}", String::from_utf8_lossy(name));
        }
    }

    #[test]
    fn atoll_is_c_like() {
        assert_eq!(atoll(b"1600000000"), 1_600_000_000);
        assert_eq!(atoll(b"  -12abc"), -12);
        assert_eq!(atoll(b"abc"), 0);
        assert_eq!(atoll(b""), 0);
        assert_eq!(atoll(b"99999999999999999999999"), i64::MAX);
    }
}
