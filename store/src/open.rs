//! The backend behind a store URL. It sits above every backend module
//! ([`backend`](crate::backend), [`node`](crate::node),
//! [`remote`](crate::remote)), which depend on `backend` only.

use std::sync::Arc;

use crate::backend::{DynStore, OpenOptions, dir};
use crate::error::Result;
use crate::url::{Backend, StoreUrl};

/// Open one backend (no routing, no replication).
pub async fn open_backend(url: &StoreUrl, opts: &OpenOptions) -> Result<DynStore> {
    let name = url.redacted();
    let store: DynStore = match &url.backend {
        Backend::Dir { path } => Arc::new(dir::DirStore::open(path, name)?),
        // Shared with every other process on the node (crate::node).
        Backend::Local { path } => Arc::new(crate::node::NodeStore::open(path, opts)?),
        Backend::Zdb { .. } | Backend::Redis { .. } => crate::remote::open(url, opts).await?,
    };
    Ok(store)
}
