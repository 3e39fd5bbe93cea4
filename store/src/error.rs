//! The one public error type of the store crate: a kind (what went wrong,
//! used for errno / NBD mapping at the edges), a context (what we were doing,
//! naming the store URL without its password) and an optional source.

use std::fmt;

/// What went wrong, coarse enough to map to an errno at one edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The chunk / key / namespace does not exist.
    NotFound,
    /// Data failed a hash or CRC check.
    Corrupt,
    /// The caller gave something malformed (URL, size, range, argument).
    InvalidInput,
    /// A remote store could not be reached or timed out.
    Unavailable,
    /// Wrong or missing password, or a read-only namespace.
    PermissionDenied,
    /// The disk or namespace is full.
    NoSpace,
    /// The peer answered something the protocol does not allow.
    Protocol,
    /// Fewer replicas than the write quorum took the write.
    Quorum,
    /// Local I/O failed.
    Io,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::Corrupt => "corrupt data",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::NoSpace => "no space left",
            ErrorKind::Protocol => "protocol error",
            ErrorKind::Quorum => "write quorum not met",
            ErrorKind::Io => "I/O error",
        }
    }

    /// The errno this kind becomes at a POSIX edge (FUSE, NBD).
    ///
    /// A chunk that no replica has is EIO, never ENOENT: the file exists, its
    /// data could not be fetched.
    pub fn errno(self) -> i32 {
        match self {
            ErrorKind::NotFound | ErrorKind::Corrupt | ErrorKind::Unavailable => libc::EIO,
            ErrorKind::Protocol | ErrorKind::Quorum | ErrorKind::Io => libc::EIO,
            ErrorKind::InvalidInput => libc::EINVAL,
            ErrorKind::PermissionDenied => libc::EPERM,
            ErrorKind::NoSpace => libc::ENOSPC,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Error of every store operation.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {kind}")]
pub struct Error {
    kind: ErrorKind,
    context: String,
    #[source]
    source: Option<Source>,
}

impl Error {
    pub fn new(kind: ErrorKind, context: impl Into<String>) -> Self {
        Error { kind, context: context.into(), source: None }
    }

    pub fn with_source(
        kind: ErrorKind,
        context: impl Into<String>,
        source: impl Into<Source>,
    ) -> Self {
        Error { kind, context: context.into(), source: Some(source.into()) }
    }

    /// An I/O error, classified by its errno (ENOSPC stays NoSpace).
    pub fn io(context: impl Into<String>, err: std::io::Error) -> Self {
        let kind = match err.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => ErrorKind::NoSpace,
            _ if err.kind() == std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            _ if err.kind() == std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            _ => ErrorKind::Io,
        };
        Error::with_source(kind, context, err)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn context(&self) -> &str {
        &self.context
    }

    /// errno for POSIX edges; keeps the original errno of an I/O source.
    pub fn errno(&self) -> i32 {
        if let Some(src) = &self.source {
            if let Some(io) = src.downcast_ref::<std::io::Error>() {
                if let Some(code) = io.raw_os_error() {
                    return code;
                }
            }
        }
        self.kind.errno()
    }

    /// Prefix more context, keeping kind and source.
    pub fn context_prefix(mut self, what: impl fmt::Display) -> Self {
        self.context = format!("{what}: {}", self.context);
        self
    }

    /// The whole chain as one line ("context: kind: source: ...").
    pub fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(self);
        while let Some(e) = cur {
            s.push_str(": ");
            s.push_str(&e.to_string());
            cur = e.source();
        }
        s
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthands used across the crate.
pub(crate) fn invalid(context: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidInput, context)
}

pub(crate) fn corrupt(context: impl Into<String>) -> Error {
    Error::new(ErrorKind::Corrupt, context)
}
