//! zosfs-store: everything between a chunk id and the bytes on a disk or a
//! replica.
//!
//! Layers, top to bottom (each a module):
//!
//! * [`lazy`] — `LazyFile`, a sparse local file filled from a store on read
//!   (used by fsmount per file content and by nbdserver per device);
//! * [`router`] — several stores as one: routes, replication, quorum,
//!   verified and hedged reads, repair, durable replication queue;
//! * [`open`] — the backend behind a store URL ([`open_backend`]);
//! * [`backend`] — the [`ChunkStore`] trait and the `dir://` store;
//!   [`local`] — the node's io_uring store, shared through [`node`];
//!   [`remote`] — 0-db and Redis;
//! * [`engine`] — disk I/O: io_uring or pread/pwrite, chosen by a probe;
//! * [`chunk`] — ids and the convergent codec; [`url`] — store URLs;
//! * [`server`] — a 0-db-compatible RESP server over the local engine;
//! * [`process`] — daemon mode, pid / log files, `--metrics` HTTP.

pub mod backend;
pub mod chunk;
mod cursor;
pub mod engine;
pub mod error;
pub mod lazy;
pub mod local;
pub mod malloc;
pub mod node;
pub mod open;
pub mod process;
pub mod remote;
pub mod router;
pub mod server;
pub mod url;

pub use backend::{ChunkStore, DynStore, OpenOptions, StoreStats, SyncPolicy};
pub use chunk::{ChunkId, ChunkKey, ChunkRef};
pub use error::{Error, ErrorKind, Result};
pub use open::open_backend;
pub use router::{Router, RouterConfig};
pub use url::StoreUrl;
