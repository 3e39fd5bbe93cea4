//! Library side of the `flist` and `chunkstore` binaries: argument
//! definitions and command implementations, so tests can call them too.

pub mod chunkstore;
pub mod flist;
pub mod out;

/// Log to stderr; `RUST_LOG` overrides the default `warn` level.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
