//! The one error type of the fsmount crate: a kind (mapped to an errno at
//! the FUSE edge and to an exit message at the CLI edge), a context naming
//! what we were doing and on which path, and an optional source.

use std::fmt;

/// What went wrong, coarse enough to pick an errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No such entry (a path in the tree, a mount record, an rw name).
    NotFound,
    /// The caller gave something malformed or contradictory.
    InvalidInput,
    /// Something is in use (a mountpoint, an rw name mounted elsewhere).
    Busy,
    /// It exists already (an rw name, a snapshot).
    Exists,
    /// The kernel or a tool does not offer what we need.
    Unsupported,
    /// A chunk could not be fetched or verified: the entry exists, its data
    /// does not arrive. Always EIO, never ENOENT.
    Fetch,
    /// An external tool (mkfs.btrfs, btrfs) failed.
    Command,
    /// Local I/O or a system call failed.
    Io,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Busy => "busy",
            ErrorKind::Exists => "already exists",
            ErrorKind::Unsupported => "not supported",
            ErrorKind::Fetch => "fetch failed",
            ErrorKind::Command => "command failed",
            ErrorKind::Io => "I/O error",
        }
    }

    /// The errno this kind becomes at the FUSE edge when no OS error is known.
    pub fn errno(self) -> i32 {
        match self {
            ErrorKind::NotFound => libc::ENOENT,
            ErrorKind::InvalidInput => libc::EINVAL,
            ErrorKind::Busy => libc::EBUSY,
            ErrorKind::Exists => libc::EEXIST,
            ErrorKind::Unsupported => libc::EOPNOTSUPP,
            ErrorKind::Fetch | ErrorKind::Command | ErrorKind::Io => libc::EIO,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Error of every fsmount operation.
#[derive(Debug, thiserror::Error)]
#[error("{context}")]
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

    /// A failed system call or file operation; keeps its errno.
    pub fn io(context: impl Into<String>, err: std::io::Error) -> Self {
        let kind = match err.raw_os_error() {
            Some(libc::ENOENT) => ErrorKind::NotFound,
            Some(libc::EBUSY) => ErrorKind::Busy,
            Some(libc::EEXIST) => ErrorKind::Exists,
            Some(libc::EINVAL) => ErrorKind::InvalidInput,
            _ => ErrorKind::Io,
        };
        Error::with_source(kind, context, err)
    }

    /// The last OS error of a system call.
    pub fn last_os(context: impl Into<String>) -> Self {
        Error::io(context, std::io::Error::last_os_error())
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// errno for the FUSE edge. A store error keeps the store's mapping
    /// (a missing chunk is EIO); an I/O source keeps its own errno.
    pub fn errno(&self) -> i32 {
        if self.kind == ErrorKind::Fetch {
            return libc::EIO;
        }
        if let Some(src) = &self.source {
            if let Some(io) = src.downcast_ref::<std::io::Error>() {
                if let Some(code) = io.raw_os_error() {
                    return code;
                }
            }
            if let Some(st) = src.downcast_ref::<zosfs_store::Error>() {
                return st.errno();
            }
        }
        self.kind.errno()
    }

    /// Prefix more context, keeping kind and source.
    pub fn context_prefix(mut self, what: impl fmt::Display) -> Self {
        self.context = format!("{what}: {}", self.context);
        self
    }
}

impl From<zosfs_store::Error> for Error {
    fn from(e: zosfs_store::Error) -> Self {
        let kind = match e.kind() {
            zosfs_store::ErrorKind::InvalidInput => ErrorKind::InvalidInput,
            zosfs_store::ErrorKind::NotFound
            | zosfs_store::ErrorKind::Corrupt
            | zosfs_store::ErrorKind::Unavailable
            | zosfs_store::ErrorKind::Protocol
            | zosfs_store::ErrorKind::Quorum => ErrorKind::Fetch,
            _ => ErrorKind::Io,
        };
        let context = e.to_string();
        Error::with_source(kind, context, e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its sources on one line ("context: cause: cause").
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(x) = cur {
        let t = x.to_string();
        // Store errors repeat their context in Display: skip exact repeats.
        if !s.ends_with(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = x.source();
    }
    s
}

/// Shorthand for bad input.
pub(crate) fn invalid(context: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidInput, context)
}
