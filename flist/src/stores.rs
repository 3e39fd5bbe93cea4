//! The chunk stores of an flist, opened one way for every reader (fsmount,
//! nbdserver, the `flist` command): the URLs given (`--store`), else the
//! routes the flist records; the router for native flists, and for legacy
//! flists (ids are not BLAKE3) plain backends whose blobs the chunk decoder
//! checks against the legacy ids ([`RawStores`]).

use std::collections::HashMap;
use std::sync::Arc;

use zosfs_store::RouterConfig;

use crate::content::{RawStores, Store};
use crate::error::{Result, invalid};
use crate::model::{Codec, Header};

/// Opens stores, each URL list and kind once (later opens share it).
pub struct StoreOpener {
    given: Vec<String>,
    config: RouterConfig,
    opened: tokio::sync::Mutex<HashMap<(Vec<String>, bool), Store>>,
}

impl StoreOpener {
    /// `given`: the `--store` URLs (empty: each flist's routes); `config`
    /// tunes routers and the backends of raw stores.
    pub fn new(given: Vec<String>, config: RouterConfig) -> StoreOpener {
        StoreOpener { given, config, opened: tokio::sync::Mutex::new(HashMap::new()) }
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
        let urls = if self.given.is_empty() { &header.routes } else { &self.given };
        if urls.is_empty() {
            return Err(invalid("the flist records no store route; give --store URL"));
        }
        Ok(urls.clone())
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
