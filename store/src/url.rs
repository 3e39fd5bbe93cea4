//! Store URLs (see docs/ARCHITECTURE.md, "Stores and URLs").
//!
//! ```text
//! local:///var/lib/zosfs/chunks            node store (io_uring engine)
//! dir:///path                              ab/cd/<hex id> fan-out, rfs-compatible
//! zdb://[:password@]host:port/namespace    0-db, user-mode namespace
//! zdb+unix://[:password@]/path.sock?ns=x   0-db over a unix socket
//!   ?plaintext-auth=1 (either zdb form): if the server offers no AUTH SECURE
//!   challenge, send the password in clear (SELECT ns password); without it
//!   such a server is refused
//! redis://[:password@]host:port/db         plain Redis
//! 00-7f=URL                                route: ids whose first byte is in range
//! ```
//!
//! Passwords live in [`Secret`], whose Display and Debug never show them;
//! the Display of a [`StoreUrl`] is therefore safe to log.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::{Error, Result, invalid};

/// A password that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The only way to read the password: call sites are easy to audit.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where a network store listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetAddr {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

impl fmt::Display for NetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetAddr::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            NetAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
            NetAddr::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// One backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    Local {
        path: PathBuf,
    },
    Dir {
        path: PathBuf,
    },
    Zdb {
        addr: NetAddr,
        namespace: String,
        password: Option<Secret>,
        /// `?plaintext-auth=1`: the password may be sent in clear when the
        /// server has no challenge (a 0-db without --admin).
        plaintext_auth: bool,
    },
    Redis {
        addr: NetAddr,
        db: u32,
        password: Option<Secret>,
    },
}

/// Inclusive range of first id bytes a store takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub lo: u8,
    pub hi: u8,
}

impl Route {
    pub const ALL: Route = Route { lo: 0, hi: 0xff };
    pub fn contains(&self, prefix: u8) -> bool {
        self.lo <= prefix && prefix <= self.hi
    }
}

/// A parsed store URL with its route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreUrl {
    pub route: Route,
    pub backend: Backend,
}

impl StoreUrl {
    pub fn parse(s: &str) -> Result<StoreUrl> {
        s.parse()
    }

    /// The password of a 0-db or Redis URL.
    pub fn password(&self) -> Option<&Secret> {
        match &self.backend {
            Backend::Zdb { password, .. } | Backend::Redis { password, .. } => password.as_ref(),
            _ => None,
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self.backend, Backend::Local { .. })
    }

    /// The URL without any password: what flists record and logs show.
    pub fn redacted(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.route != Route::ALL {
            write!(f, "{:02x}-{:02x}=", self.route.lo, self.route.hi)?;
        }
        match &self.backend {
            Backend::Local { path } => write!(f, "local://{}", path.display()),
            Backend::Dir { path } => write!(f, "dir://{}", path.display()),
            Backend::Zdb { addr: NetAddr::Unix(p), namespace, plaintext_auth, .. } => {
                write!(f, "zdb+unix://{}?ns={namespace}", p.display())?;
                if *plaintext_auth {
                    write!(f, "&{PLAINTEXT_AUTH}=1")?;
                }
                Ok(())
            }
            Backend::Zdb { addr, namespace, plaintext_auth, .. } => {
                write!(f, "zdb://{addr}/{namespace}")?;
                if *plaintext_auth {
                    write!(f, "?{PLAINTEXT_AUTH}=1")?;
                }
                Ok(())
            }
            Backend::Redis { addr: NetAddr::Unix(p), db, .. } => {
                write!(f, "redis+unix://{}?db={db}", p.display())
            }
            Backend::Redis { addr, db, .. } => write!(f, "redis://{addr}/{db}"),
        }
    }
}

fn bad(url: &str, why: impl fmt::Display) -> Error {
    // Never echo the raw URL: it may hold a password.
    invalid(format!("bad store URL {:?}: {why}", redact_raw(url)))
}

/// Blank out `[user][:]password@` in a raw URL for error messages: all
/// that [`split_password`] would take as a password, with or without `:`.
fn redact_raw(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        if let Some((_, after)) = rest.split_once('@') {
            return format!("{}://***@{after}", &url[..scheme_end]);
        }
    }
    url.to_string()
}

/// Query parameter of zdb URLs allowing the plaintext password fallback.
pub const PLAINTEXT_AUTH: &str = "plaintext-auth";

/// `plaintext-auth=1|0` (absent: 0).
fn plaintext_auth(query: Option<&str>, whole: &str) -> Result<bool> {
    match query_param(query, PLAINTEXT_AUTH) {
        None | Some("0") => Ok(false),
        Some("1") => Ok(true),
        Some(v) => Err(bad(whole, format!("{PLAINTEXT_AUTH}={v:?}: want 1 or 0"))),
    }
}

/// Split `rest?query`.
fn split_query(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    }
}

fn parse_route(s: &str, whole: &str) -> Result<Route> {
    let (lo, hi) = s.split_once('-').ok_or_else(|| bad(whole, "route must be xx-yy"))?;
    let byte = |h: &str| {
        if h.len() != 2 {
            return Err(bad(whole, format!("route bound {h:?} must be two hex digits")));
        }
        u8::from_str_radix(h, 16).map_err(|_| bad(whole, format!("route bound {h:?} is not hex")))
    };
    let (lo, hi) = (byte(lo)?, byte(hi)?);
    if lo > hi {
        return Err(bad(whole, format!("route {lo:02x}-{hi:02x} is empty (low > high)")));
    }
    Ok(Route { lo, hi })
}

/// Split `[:password@]rest`.
fn split_password(rest: &str) -> (Option<Secret>, &str) {
    match rest.split_once('@') {
        Some((user, after)) if !after.is_empty() => {
            let pw = user.split_once(':').map(|(_, p)| p).unwrap_or(user);
            (if pw.is_empty() { None } else { Some(Secret::new(pw)) }, after)
        }
        _ => (None, rest),
    }
}

fn parse_host_port(hp: &str, whole: &str) -> Result<NetAddr> {
    let (host, port) = if let Some(v6) = hp.strip_prefix('[') {
        let (h, p) = v6.split_once("]:").ok_or_else(|| bad(whole, "want [v6addr]:port"))?;
        (h, p)
    } else {
        hp.rsplit_once(':').ok_or_else(|| bad(whole, "want host:port"))?
    };
    if host.is_empty() {
        return Err(bad(whole, "empty host"));
    }
    let port: u16 = port.parse().map_err(|_| bad(whole, format!("bad port {port:?}")))?;
    if port == 0 {
        return Err(bad(whole, "port 0"));
    }
    Ok(NetAddr::Tcp { host: host.to_string(), port })
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

fn local_path(rest: &str, whole: &str) -> Result<PathBuf> {
    if !rest.starts_with('/') {
        return Err(bad(whole, "path must be absolute (scheme:///abs/path)"));
    }
    Ok(PathBuf::from(rest))
}

impl FromStr for StoreUrl {
    type Err = Error;

    fn from_str(s: &str) -> Result<StoreUrl> {
        let (route, url) = match s.split_once('=') {
            Some((r, u)) if !r.contains("://") => (parse_route(r, s)?, u),
            _ => (Route::ALL, s),
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad(s, "missing scheme://"))?;
        let backend = match scheme {
            "local" => Backend::Local { path: local_path(rest, s)? },
            "dir" => Backend::Dir { path: local_path(rest, s)? },
            "zdb" => {
                let (password, rest) = split_password(rest);
                let (rest, query) = split_query(rest);
                let (hp, ns) = rest.split_once('/').unwrap_or((rest, ""));
                let namespace = if ns.is_empty() { "default".to_string() } else { ns.to_string() };
                let addr = parse_host_port(hp, s)?;
                let plaintext_auth = plaintext_auth(query, s)?;
                Backend::Zdb { addr, namespace, password, plaintext_auth }
            }
            "zdb+unix" => {
                let (password, rest) = split_password(rest);
                let (path, query) = split_query(rest);
                let namespace = query_param(query, "ns").unwrap_or("default").to_string();
                let addr = NetAddr::Unix(local_path(path, s)?);
                let plaintext_auth = plaintext_auth(query, s)?;
                Backend::Zdb { addr, namespace, password, plaintext_auth }
            }
            "redis" => {
                let (password, rest) = split_password(rest);
                let (hp, db) = rest.split_once('/').unwrap_or((rest, "0"));
                let db = if db.is_empty() { "0" } else { db };
                let db: u32 = db.parse().map_err(|_| bad(s, format!("bad redis db {db:?}")))?;
                Backend::Redis { addr: parse_host_port(hp, s)?, db, password }
            }
            "redis+unix" => {
                let (password, rest) = split_password(rest);
                let (path, query) = split_query(rest);
                let db = query_param(query, "db").unwrap_or("0");
                let db: u32 = db.parse().map_err(|_| bad(s, format!("bad redis db {db:?}")))?;
                Backend::Redis { addr: NetAddr::Unix(local_path(path, s)?), db, password }
            }
            other => {
                return Err(bad(
                    s,
                    format!(
                        "unknown scheme {other:?} (want local, dir, zdb, zdb+unix, redis, redis+unix)"
                    ),
                ));
            }
        };
        Ok(StoreUrl { route, backend })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let u: StoreUrl = "zdb://:s3cret@hub.example:9900/images".parse().unwrap();
        assert_eq!(u.route, Route::ALL);
        match &u.backend {
            Backend::Zdb { addr, namespace, password, plaintext_auth } => {
                assert!(!plaintext_auth);
                assert_eq!(addr, &NetAddr::Tcp { host: "hub.example".into(), port: 9900 });
                assert_eq!(namespace, "images");
                assert_eq!(password.as_ref().unwrap().expose(), "s3cret");
            }
            b => panic!("{b:?}"),
        }
        assert_eq!(u.to_string(), "zdb://hub.example:9900/images");
        assert!(!format!("{u:?}").contains("s3cret"));

        let u: StoreUrl = "00-7f=zdb+unix:///run/zdb.sock?ns=img".parse().unwrap();
        assert_eq!(u.route, Route { lo: 0, hi: 0x7f });
        assert_eq!(u.to_string(), "00-7f=zdb+unix:///run/zdb.sock?ns=img");

        let u: StoreUrl = "redis://127.0.0.1:6379/3".parse().unwrap();
        assert!(matches!(u.backend, Backend::Redis { db: 3, .. }));
        let u: StoreUrl = "local:///var/lib/zosfs/chunks".parse().unwrap();
        assert!(u.is_local());
        let u: StoreUrl = "80-ff=dir:///srv/chunks".parse().unwrap();
        assert_eq!(u.to_string(), "80-ff=dir:///srv/chunks");
        let u: StoreUrl = "zdb://[::1]:9900/x".parse().unwrap();
        assert_eq!(u.to_string(), "zdb://[::1]:9900/x");

        // The plaintext fallback is opt-in and survives a round trip.
        for url in
            ["zdb://h:1/imgs?plaintext-auth=1", "zdb+unix:///s.sock?ns=imgs&plaintext-auth=1"]
        {
            let u: StoreUrl = url.parse().unwrap();
            assert!(matches!(u.backend, Backend::Zdb { plaintext_auth: true, .. }), "{url}");
            assert_eq!(u.to_string(), url);
            assert_eq!(u.to_string().parse::<StoreUrl>().unwrap(), u);
        }
        let u: StoreUrl = "zdb://:pw@h:1/imgs?plaintext-auth=0".parse().unwrap();
        assert!(
            matches!(&u.backend, Backend::Zdb { plaintext_auth: false, namespace, .. } if namespace == "imgs")
        );
    }

    #[test]
    fn redacts_every_password_form() {
        for (raw, shown) in [
            ("zdb://:pw@host:1/ns", "zdb://***@host:1/ns"),
            ("zdb://secret@host:1/ns", "zdb://***@host:1/ns"),
            ("zdb://user:secret@host:1/ns", "zdb://***@host:1/ns"),
            ("redis://secret@h:1/0", "redis://***@h:1/0"),
            ("zdb+unix://secret@/run/z.sock?ns=a", "zdb+unix://***@/run/z.sock?ns=a"),
            ("zdb://host:1/ns", "zdb://host:1/ns"),
        ] {
            assert_eq!(redact_raw(raw), shown, "{raw}");
        }
        // In a parse error too (bad port, password without a colon).
        let e = "zdb://secret@host:notaport/ns".parse::<StoreUrl>().unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        let e = "zdb://h:1/ns?plaintext-auth=yes".parse::<StoreUrl>().unwrap_err();
        assert!(e.to_string().contains("plaintext-auth"), "{e}");
    }

    #[test]
    fn rejects_bad_urls_without_leaking_passwords() {
        for bad in [
            "ftp://x/y",
            "nothing",
            "zdb://:pw@host/ns",
            "zdb://host:notaport/ns",
            "zz-ff=dir:///x",
            "80-10=dir:///x",
            "0-ff=dir:///x",
            "dir://relative/path",
            "redis://h:1/notanumber",
        ] {
            let e = bad.parse::<StoreUrl>().unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{bad}");
            assert!(!e.to_string().contains(":pw@"), "{e}");
            assert!(e.to_string().contains("bad store URL"), "{e}");
        }
    }
}
