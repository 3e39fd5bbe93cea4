//! The router: several stores behind one `ChunkStore`.
//!
//! Writes go to every store whose route matches the id (replication) and
//! succeed when `quorum` of them took it. Reads ask matching stores in order
//! and verify `BLAKE3(blob) == id`; a wrong or failing replica is skipped.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::backend::{ChunkStore, DynStore, OpenOptions, StoreStats, open_backend};
use crate::chunk::{ChunkId, MAX_BLOB, verify_blob};
use crate::error::{Error, ErrorKind, Result, invalid};
use crate::url::{Route, StoreUrl};

/// Router settings.
#[derive(Clone, Debug, Default)]
pub struct RouterConfig {
    pub open: OpenOptions,
    /// Stores that must take a write (None: all matching stores).
    pub quorum: Option<usize>,
}

struct Member {
    route: Route,
    store: DynStore,
}

pub struct Router {
    members: Vec<Member>,
    name: String,
    quorum: Option<usize>,
}

impl Router {
    pub async fn open(urls: &[StoreUrl], cfg: &RouterConfig) -> Result<Arc<Router>> {
        if urls.is_empty() {
            return Err(invalid("no store URL given"));
        }
        let mut members = Vec::new();
        for u in urls {
            members.push(Member { route: u.route, store: open_backend(u, &cfg.open).await? });
        }
        Ok(Arc::new(Router::from_stores(
            members.into_iter().map(|m| (m.route, m.store)).collect(),
            cfg.quorum,
        )))
    }

    /// Build from already-open stores (tests, servers).
    pub fn from_stores(stores: Vec<(Route, DynStore)>, quorum: Option<usize>) -> Router {
        let name = stores.iter().map(|(_, s)| s.url().to_string()).collect::<Vec<_>>().join(",");
        Router {
            members: stores.into_iter().map(|(route, store)| Member { route, store }).collect(),
            name,
            quorum,
        }
    }

    fn matching(&self, id: &ChunkId) -> impl Iterator<Item = &Member> {
        let p = id.prefix();
        self.members.iter().filter(move |m| m.route.contains(p))
    }
}

#[async_trait]
impl ChunkStore for Router {
    fn url(&self) -> &str {
        &self.name
    }

    async fn get(&self, id: &ChunkId) -> Result<Option<Bytes>> {
        let mut last_err = None;
        for m in self.matching(id) {
            match m.store.get(id).await {
                Ok(Some(blob)) => match verify_blob(id, &blob) {
                    Ok(()) => return Ok(Some(blob)),
                    Err(e) => last_err = Some(e.context_prefix(m.store.url())),
                },
                Ok(None) => {}
                Err(e) => last_err = Some(e),
            }
        }
        match last_err {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    async fn put(&self, id: &ChunkId, blob: Bytes) -> Result<()> {
        if blob.len() > MAX_BLOB {
            return Err(invalid(format!("chunk {id}: blob of {} bytes over 8 MiB", blob.len())));
        }
        let targets: Vec<&Member> = self.matching(id).collect();
        if targets.is_empty() {
            return Err(invalid(format!("no store route covers chunk {id}")));
        }
        let results =
            futures::future::join_all(targets.iter().map(|m| m.store.put(id, blob.clone()))).await;
        let need = self.quorum.unwrap_or(targets.len()).min(targets.len());
        let ok = results.iter().filter(|r| r.is_ok()).count();
        if ok >= need {
            return Ok(());
        }
        let why =
            results.into_iter().filter_map(|r| r.err()).map(|e| e.chain()).collect::<Vec<_>>();
        Err(Error::new(
            ErrorKind::Quorum,
            format!("chunk {id}: {ok} of {need} stores took the write ({})", why.join("; ")),
        ))
    }

    async fn has(&self, id: &ChunkId) -> Result<bool> {
        for m in self.matching(id) {
            if m.store.has(id).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn delete(&self, id: &ChunkId) -> Result<bool> {
        let mut any = false;
        for m in self.matching(id) {
            any |= m.store.delete(id).await?;
        }
        Ok(any)
    }

    async fn stats(&self) -> Result<StoreStats> {
        match self.members.first() {
            Some(m) if self.members.len() == 1 => m.store.stats().await,
            _ => Ok(StoreStats::default()),
        }
    }

    async fn sync(&self) -> Result<()> {
        for m in &self.members {
            m.store.sync().await?;
        }
        Ok(())
    }
}

/// Open a router from URL strings.
pub async fn open_urls(urls: &[String], cfg: &RouterConfig) -> Result<Arc<Router>> {
    let parsed = urls.iter().map(|u| u.parse()).collect::<Result<Vec<StoreUrl>>>()?;
    Router::open(&parsed, cfg).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::mem::MemStore;
    use crate::chunk::encode;

    #[tokio::test]
    async fn replicates_and_skips_corrupt_replica() {
        let a: DynStore = Arc::new(MemStore::new());
        let b: DynStore = Arc::new(MemStore::new());
        let r = Router::from_stores(vec![(Route::ALL, a.clone()), (Route::ALL, b.clone())], None);
        let c = encode(b"replicated").unwrap();
        r.put(&c.chunk.id, c.blob.clone()).await.unwrap();
        assert!(a.has(&c.chunk.id).await.unwrap() && b.has(&c.chunk.id).await.unwrap());
        // Corrupt replica a: the router must serve b's good copy.
        a.delete(&c.chunk.id).await.unwrap();
        a.put(&c.chunk.id, Bytes::from_static(b"garbage")).await.unwrap();
        assert_eq!(r.get(&c.chunk.id).await.unwrap().unwrap(), c.blob);
    }

    #[tokio::test]
    async fn routes_by_prefix() {
        let lo: DynStore = Arc::new(MemStore::new());
        let hi: DynStore = Arc::new(MemStore::new());
        let r = Router::from_stores(
            vec![
                (Route { lo: 0, hi: 0x7f }, lo.clone()),
                (Route { lo: 0x80, hi: 0xff }, hi.clone()),
            ],
            None,
        );
        for i in 0..32u8 {
            let c = encode(&[i; 10]).unwrap();
            r.put(&c.chunk.id, c.blob).await.unwrap();
            let on_lo = lo.has(&c.chunk.id).await.unwrap();
            assert_eq!(on_lo, c.chunk.id.prefix() < 0x80);
            assert_eq!(hi.has(&c.chunk.id).await.unwrap(), !on_lo);
        }
    }
}
