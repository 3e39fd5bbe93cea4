//! The flist crate's kinds of [`Failure`] (the error shape every zosfs
//! crate shares, see `zosfs_store::error`): mapped to an errno at the FUSE
//! / CLI edge.

use std::fmt;

use zosfs_store::error::{Failure, FromStoreKind, Kind, os_errno};

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
}

impl Kind for ErrorKind {
    /// errno at a POSIX edge (FUSE).
    fn errno(self) -> i32 {
        match self {
            ErrorKind::NotFound => libc::ENOENT,
            ErrorKind::NotADirectory => libc::ENOTDIR,
            ErrorKind::WrongType | ErrorKind::InvalidInput => libc::EINVAL,
            ErrorKind::Escape => libc::EPERM,
            ErrorKind::Exists => libc::EEXIST,
            ErrorKind::Corrupt | ErrorKind::Version | ErrorKind::Store | ErrorKind::Io => libc::EIO,
        }
    }

    /// EEXIST becomes [`ErrorKind::Exists`], ELOOP (a symlink where a
    /// directory was expected) [`ErrorKind::Escape`].
    fn from_io(err: &std::io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc::EEXIST) => ErrorKind::Exists,
            Some(libc::ELOOP) => ErrorKind::Escape,
            Some(libc::ENOTDIR) => ErrorKind::NotADirectory,
            Some(libc::ENOENT) => ErrorKind::NotFound,
            _ => ErrorKind::Io,
        }
    }

    /// An I/O source's errno, or a store failure's.
    fn source_errno(self, source: &(dyn std::error::Error + 'static)) -> Option<i32> {
        os_errno(source).or_else(|| source.downcast_ref::<zosfs_store::Error>().map(|e| e.errno()))
    }
}

impl FromStoreKind for ErrorKind {
    fn from_store_kind(kind: zosfs_store::ErrorKind) -> Self {
        match kind {
            zosfs_store::ErrorKind::InvalidInput => ErrorKind::InvalidInput,
            zosfs_store::ErrorKind::Io => ErrorKind::Io,
            _ => ErrorKind::Store,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error of every flist operation.
pub type Error = Failure<ErrorKind>;

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
