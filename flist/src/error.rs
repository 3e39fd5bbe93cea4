//! The one public error type of the flist crate: a kind (mapped to an errno
//! at the FUSE / CLI edge), a context naming what was being done, and an
//! optional source.

use std::fmt;

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No such inode, name or path in the flist.
    NotFound,
    /// A path component or a readdir target is not a directory.
    NotADirectory,
    /// readlink on something that is not a symlink, chunks of a non-file.
    WrongType,
    /// The flist file or database is damaged or is not an flist at all.
    Corrupt,
    /// The flist was written in a format version this build does not read.
    Version,
    /// Malformed input from the caller (bad tar member, bad option, bad name).
    InvalidInput,
    /// The operation would write outside the destination (unpack) or a
    /// source tries to escape its root (`..`, absolute names, symlinked parents).
    Escape,
    /// Something already exists where unpack must create an entry.
    Exists,
    /// A chunk store failed (missing chunk, bad chunk, unreachable store).
    Store,
    /// Local I/O failed.
    Io,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::NotADirectory => "not a directory",
            ErrorKind::WrongType => "wrong file type",
            ErrorKind::Corrupt => "corrupt flist",
            ErrorKind::Version => "unsupported flist version",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Escape => "refused: escapes the root",
            ErrorKind::Exists => "already exists",
            ErrorKind::Store => "chunk store error",
            ErrorKind::Io => "I/O error",
        }
    }

    /// errno at a POSIX edge (FUSE).
    pub fn errno(self) -> i32 {
        match self {
            ErrorKind::NotFound => libc::ENOENT,
            ErrorKind::NotADirectory => libc::ENOTDIR,
            ErrorKind::WrongType | ErrorKind::InvalidInput => libc::EINVAL,
            ErrorKind::Escape => libc::EPERM,
            ErrorKind::Exists => libc::EEXIST,
            ErrorKind::Corrupt | ErrorKind::Version | ErrorKind::Store | ErrorKind::Io => libc::EIO,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Error of every flist operation.
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

    /// A local I/O error; EEXIST becomes [`ErrorKind::Exists`], ELOOP (a
    /// symlink where a directory was expected) becomes [`ErrorKind::Escape`].
    pub fn io(context: impl Into<String>, err: std::io::Error) -> Self {
        let kind = match err.raw_os_error() {
            Some(libc::EEXIST) => ErrorKind::Exists,
            Some(libc::ELOOP) => ErrorKind::Escape,
            Some(libc::ENOTDIR) => ErrorKind::NotADirectory,
            Some(libc::ENOENT) => ErrorKind::NotFound,
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
            zosfs_store::ErrorKind::Io => ErrorKind::Io,
            _ => ErrorKind::Store,
        };
        Error::with_source(kind, "chunk store", e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn corrupt(context: impl Into<String>) -> Error {
    Error::new(ErrorKind::Corrupt, context)
}

pub(crate) fn invalid(context: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidInput, context)
}

pub(crate) fn not_found(context: impl Into<String>) -> Error {
    Error::new(ErrorKind::NotFound, context)
}
