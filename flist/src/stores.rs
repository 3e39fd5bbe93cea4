//! The chunk stores of an flist, opened one way for every reader (fsmount,
//! nbdserver, the `flist` command): the URLs given (`--store`), else, only
//! when the user opted in, the routes the flist records; the router for
//! native flists, and for legacy flists (ids are not BLAKE3) plain backends
//! whose blobs the chunk decoder checks against the legacy ids
//! ([`RawStores`]).
//!
//! An flist is untrusted input: the routes it records are whatever its
//! author wrote. Opening them would let it make root create files and take
//! locks at any local path (`local://`, `dir://`), talk to any local
//! socket (`zdb+unix://`, `redis+unix://`) or connect anywhere. So routes
//! are used only on request (`--use-flist-routes`, or
//! `ZOSFS_USE_FLIST_ROUTES=1`), and then only network schemes (`zdb://`,
//! `redis://`). A signed flist checked against a trusted key could be
//! allowed its routes as they are: see [`RoutePolicy`].

use std::collections::HashMap;
use std::sync::Arc;

use zosfs_store::RouterConfig;

use crate::content::{RawStores, Store};
use crate::error::{Result, invalid};
use crate::model::{Codec, Header};

/// The environment variable that opts in to flist routes (`1`).
pub const ROUTES_ENV: &str = "ZOSFS_USE_FLIST_ROUTES";

/// Whether the store routes an flist records may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoutePolicy {
    /// Never: `--store` is required (the default).
    Refuse,
    /// Network routes (`zdb://`, `redis://`) only: the user opted in.
    Remote,
    // Hook: a `Trusted` policy for flists whose signature was checked
    // against a key given with `--trust` (not implemented yet) would accept
    // every route the flist records.
}

impl RoutePolicy {
    /// `Remote` when `ZOSFS_USE_FLIST_ROUTES` is `1`/`true`/`yes`.
    pub fn from_env() -> RoutePolicy {
        match std::env::var(ROUTES_ENV).as_deref() {
            Ok("1") | Ok("true") | Ok("yes") => RoutePolicy::Remote,
            _ => RoutePolicy::Refuse,
        }
    }
}

/// Whether a route (`URL` or `xx-yy=URL`) is a network store: its URL
/// parses and is `zdb://` or `redis://` over TCP. Every other scheme names
/// something on this host.
fn is_remote_route(route: &str) -> bool {
    use zosfs_store::url::{Backend, NetAddr};
    match route.parse::<zosfs_store::StoreUrl>() {
        Ok(u) => matches!(
            u.backend,
            Backend::Zdb { addr: NetAddr::Tcp { .. }, .. }
                | Backend::Redis { addr: NetAddr::Tcp { .. }, .. }
        ),
        Err(_) => false,
    }
}

/// The routes of `header` that `policy` lets a reader use, or why not.
pub fn allowed_routes(header: &Header, policy: RoutePolicy) -> Result<Vec<String>> {
    if header.routes.is_empty() {
        return Err(invalid("the flist records no store route; give --store URL"));
    }
    let shown = header.routes.join(" ");
    match policy {
        RoutePolicy::Refuse => Err(invalid(format!(
            "no --store given: the flist records the stores {shown}, but the stores an flist \
             names are used only on request; give --store URL, or opt in with \
             --use-flist-routes ({ROUTES_ENV}=1; network zdb:// and redis:// stores only)"
        ))),
        RoutePolicy::Remote => {
            let local: Vec<&str> =
                header.routes.iter().filter(|r| !is_remote_route(r)).map(|r| r.as_str()).collect();
            if !local.is_empty() {
                return Err(invalid(format!(
                    "the flist records the non-network stores {}; routes from an flist may \
                     only be zdb:// or redis:// over TCP: give --store URL",
                    local.join(" ")
                )));
            }
            Ok(header.routes.clone())
        }
    }
}

/// Opens stores, each URL list and kind once (later opens share it).
pub struct StoreOpener {
    given: Vec<String>,
    routes: RoutePolicy,
    config: RouterConfig,
    opened: tokio::sync::Mutex<HashMap<(Vec<String>, bool), Store>>,
}

impl StoreOpener {
    /// `given`: the `--store` URLs (empty: each flist's routes, if the
    /// policy allows them: [`RoutePolicy::from_env`] until
    /// [`StoreOpener::route_policy`] says otherwise); `config` tunes
    /// routers and the backends of raw stores.
    pub fn new(given: Vec<String>, config: RouterConfig) -> StoreOpener {
        StoreOpener {
            given,
            routes: RoutePolicy::from_env(),
            config,
            opened: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Opt in to (or out of) the routes flists record.
    pub fn route_policy(mut self, policy: RoutePolicy) -> StoreOpener {
        self.routes = policy;
        self
    }

    /// Tunables for stores opened later.
    pub fn config_mut(&mut self) -> &mut RouterConfig {
        &mut self.config
    }

    /// The `--store` URLs.
    pub fn given(&self) -> &[String] {
        &self.given
    }

    /// The URLs to read an flist with this header from.
    pub fn urls_for(&self, header: &Header) -> Result<Vec<String>> {
        if self.given.is_empty() {
            return allowed_routes(header, self.routes);
        }
        Ok(self.given.clone())
    }

    /// The stores an flist with this header reads from, and their URLs.
    pub async fn open_for(&self, header: &Header) -> Result<(Vec<String>, Store)> {
        let urls = self.urls_for(header)?;
        let store = self.open(&urls, header.codec).await?;
        Ok((urls, store))
    }

    /// The stores at `urls` for chunks in `codec`.
    pub async fn open(&self, urls: &[String], codec: Codec) -> Result<Store> {
        let raw = codec != Codec::Zck1;
        let key = (urls.to_vec(), raw);
        let mut opened = self.opened.lock().await;
        if let Some(s) = opened.get(&key) {
            return Ok(s.clone());
        }
        let store: Store = if raw {
            let parsed = urls
                .iter()
                .map(|u| u.parse::<zosfs_store::StoreUrl>())
                .collect::<zosfs_store::Result<Vec<_>>>()?;
            Arc::new(RawStores::open(&parsed, &self.config.open).await?)
        } else {
            zosfs_store::router::open_urls(urls, &self.config).await?
        };
        opened.insert(key, store.clone());
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Chunking, Codec, Header};

    fn header(routes: &[&str]) -> Header {
        Header {
            format_version: 1,
            chunking: Chunking::Fixed { size: 1 << 20 },
            codec: Codec::Zck1,
            compression_level: 3,
            tool: "test".into(),
            routes: routes.iter().map(|r| r.to_string()).collect(),
            tags: Default::default(),
        }
    }

    #[test]
    fn routes_need_an_opt_in_and_a_network_scheme() {
        let remote = header(&["zdb://hub:9900/ns", "00-7f=redis://cache:6379/0"]);
        let e = allowed_routes(&remote, RoutePolicy::Refuse).unwrap_err();
        assert!(e.to_string().contains("--use-flist-routes"), "{e}");
        assert_eq!(allowed_routes(&remote, RoutePolicy::Remote).unwrap(), remote.routes);
        for local in [
            "local:///etc/zosfs",
            "dir:///root/x",
            "zdb+unix:///run/zdb.sock?ns=a",
            "redis+unix:///run/r.sock",
            "80-ff=dir:///tmp/y",
            "nonsense",
        ] {
            let h = header(&["zdb://hub:9900/ns", local]);
            let e = allowed_routes(&h, RoutePolicy::Remote).unwrap_err();
            assert!(e.to_string().contains(local), "{local}: {e}");
            assert!(e.to_string().contains("--store"), "{e}");
        }
    }

    #[test]
    fn given_stores_win_over_routes() {
        let opener = StoreOpener::new(vec!["dir:///s".into()], RouterConfig::default())
            .route_policy(RoutePolicy::Refuse);
        assert_eq!(opener.urls_for(&header(&["local:///x"])).unwrap(), vec!["dir:///s"]);
    }
}
