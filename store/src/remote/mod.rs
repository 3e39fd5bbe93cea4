//! Network stores: 0-db (`zdb://`, `zdb+unix://`) and plain Redis.
//!
//! Placeholder until the clients land.

use crate::backend::{DynStore, OpenOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::url::StoreUrl;

pub async fn open(url: &StoreUrl, _opts: &OpenOptions) -> Result<DynStore> {
    Err(Error::new(ErrorKind::Unavailable, format!("{url}: network stores are not built yet")))
}
