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

/// Where a command writes chunks, and how many stores must take each write:
/// the same flags for `flist pack` and `chunkstore`'s store commands.
#[derive(clap::Args, Debug, Clone)]
pub struct WriteStores {
    /// Store URL (repeatable: writes go to every matching store; `00-7f=URL`
    /// routes a range of ids to a store).
    #[arg(
        short,
        long = "store",
        env = "ZOSFS_STORE",
        hide_env_values = true,
        value_delimiter = ',',
        required = true
    )]
    pub stores: Vec<String>,
    /// Stores that must take each write now, or the command fails. Default:
    /// one (the node store), the rest queued durably when unreachable
    /// (said on the terminal; `chunkstore repair` pushes them); without a
    /// replication queue every matching store.
    #[arg(long)]
    pub quorum: Option<usize>,
}

/// Store URLs without their passwords, for messages.
pub fn redacted(urls: &[String]) -> Vec<String> {
    urls.iter()
        .map(|s| match s.parse::<zosfs_store::StoreUrl>() {
            Ok(u) => u.redacted(),
            Err(_) => "<bad URL>".to_string(),
        })
        .collect()
}

/// Say on the terminal that writes were acknowledged with some replicas'
/// copies queued (a store was down): the command succeeded, the replicas
/// are behind until the queue drains. `urls` are named without passwords.
pub fn say_queued(router: &zosfs_store::Router, urls: &[String]) {
    let n = router.writes_queued();
    if n > 0 {
        let stores = redacted(urls).join(",");
        eprintln!(
            "queued: {n} chunks are not on every store yet (one was unreachable); they wait in \
             the replication queue: `chunkstore repair --store {stores}` pushes them now, and \
             `chunkstore stat` counts them (use --quorum N to fail instead)"
        );
    }
}
