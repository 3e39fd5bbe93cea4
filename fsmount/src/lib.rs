//! zosfs-fsmount: an flist as a usable root filesystem.
//!
//! Layers, top to bottom (each a module):
//!
//! * [`cli`] — the `fsmount` command line (one module per subcommand);
//! * [`server`] — the process serving every mount of one node cache:
//!   requests over a unix socket, signals, lost sessions;
//! * [`registry`] — every mount and rw layer on the node, whatever its
//!   state directory and cache, and what each serving process is doing;
//! * [`lifecycle`] — one mount's life: set up and tear down (also after a
//!   crash, from the [`state`] directory's records);
//! * [`state`] — a state directory: mount records, volume mountpoints,
//!   default pid and log files;
//! * [`overlay`] — kernel overlayfs: FUSE lower + rw layer upper;
//! * [`volume`] — the btrfs volume (image + loop, device, or directory),
//!   one subvolume per rw layer, quotas and snapshots;
//! * [`fuse`] — the read-only FUSE layer (fuser) over a [`tree::Tree`];
//! * [`tree`] — what is shown: flists, local directories, layered unions;
//! * [`cache`] — the node cache: one LazyFile per file content, a byte
//!   budget, the I/O runtime;
//! * [`stats`] — counters, control socket, Prometheus endpoint;
//! * [`node`] — the node's registry and run directories (paths only);
//!   [`records`] — TOML records written atomically, private directories;
//! * [`daemon`], [`sys`] — process plumbing and system-call wrappers.

pub mod cache;
pub mod cli;
pub mod daemon;
pub mod error;
pub mod fuse;
pub mod lifecycle;
pub mod naming;
pub mod node;
pub mod overlay;
pub mod records;
pub mod registry;
pub mod server;
pub mod size;
pub mod state;
pub mod stats;
pub mod sys;
pub mod tree;
pub mod volume;

pub use error::{Error, ErrorKind, Result};
