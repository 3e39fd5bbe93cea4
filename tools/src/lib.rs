//! Library side of the `flist` and `chunkstore` binaries: argument
//! definitions and command implementations, so tests can call them too.

pub mod chunkstore;
pub mod flist;
pub mod out;

/// Log to stderr; `RUST_LOG` overrides the default `warn` level.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Say on the terminal that writes were acknowledged with some replicas'
/// copies queued (a store was down): the command succeeded, the replicas
/// are behind until the queue drains.
pub fn say_queued(router: &zosfs_store::Router, stores: &str) {
    let n = router.writes_queued();
    if n > 0 {
        eprintln!(
            "queued: {n} chunks are not on every store yet (one was unreachable); they wait in \
             the replication queue: `chunkstore repair --store {stores}` pushes them now, and \
             `chunkstore stat` counts them (use --quorum N to fail instead)"
        );
    }
}
