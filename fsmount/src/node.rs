//! Where this node keeps its registry (persistent) and its runtime files
//! (sockets, server status): the two directories [`crate::registry`]
//! works in. Only the paths live here, so a state directory can carry its
//! node without depending on the registry; the registry's operations on
//! a [`Node`] are in [`crate::registry`].

use std::path::{Path, PathBuf};

/// Default registry directory (persistent).
pub const DEFAULT_REGISTRY_DIR: &str = "/var/lib/zosfs/registry";
/// Default run directory (runtime: sockets, server status).
pub const DEFAULT_RUN_DIR: &str = "/run/zosfs";

/// Where this node keeps its registry and its runtime files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    registry: PathBuf,
    run: PathBuf,
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_path_buf())
}

impl Node {
    pub fn new(registry: &Path, run: &Path) -> Node {
        Node { registry: absolute(registry), run: absolute(run) }
    }

    pub fn registry_dir(&self) -> &Path {
        &self.registry
    }

    pub fn run_dir(&self) -> &Path {
        &self.run
    }

    /// Sockets and status files of serving processes.
    pub fn servers_dir(&self) -> PathBuf {
        self.run.join("servers")
    }
}
