//! zosfs nbdserver: thin NBD block devices.
//!
//! Layers, each a module:
//!
//! * [`proto`] — the NBD wire protocol as plain data: parsing and
//!   validation of handshake options and requests, reply encoding. Pure
//!   functions on bytes (fuzzed by `fuzz/fuzz_targets/nbd_request.rs`).
//! * [`server`] — listeners, the handshake, the transmission loop
//!   (concurrent requests, out-of-order replies, one writer per
//!   connection), STARTTLS (rustls), clean shutdown.
//! * [`device`] — the [`device::BlockDevice`] trait and the devices behind
//!   exports: LazyFiles filled from nothing (`blank:SIZE`) or from a file
//!   of an flist (`IMAGE.flist:/path`).
//! * [`commit`] — a device's content as a new image flist.
//! * [`config`] — the TOML configuration file.
//! * [`error`] — the crate's one error type, mapped to NBD error values at
//!   one edge ([`error::ErrorKind::nbd_code`]).

pub mod commit;
pub mod config;
pub mod device;
pub mod error;
pub mod proto;
pub mod server;

pub use error::{Error, ErrorKind, Result};
