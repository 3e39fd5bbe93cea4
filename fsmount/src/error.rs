//! The fsmount crate's kinds of [`Failure`] (the error shape every zosfs
//! crate shares, see `zosfs_store::error`): mapped to an errno at the FUSE
//! edge and to an exit message at the CLI edge; contexts name what we were
//! doing and on which path.

use std::fmt;

use zosfs_store::error::{Failure, FromStoreKind, Kind, os_errno};

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
}

impl Kind for ErrorKind {
    /// The errno this kind becomes at the FUSE edge when no OS error is known.
    fn errno(self) -> i32 {
        match self {
            ErrorKind::NotFound => libc::ENOENT,
            ErrorKind::InvalidInput => libc::EINVAL,
            ErrorKind::Busy => libc::EBUSY,
            ErrorKind::Exists => libc::EEXIST,
            ErrorKind::Unsupported => libc::EOPNOTSUPP,
            ErrorKind::Fetch | ErrorKind::Command | ErrorKind::Io => libc::EIO,
        }
    }

    /// A failed system call or file operation; keeps its errno.
    fn from_io(err: &std::io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc::ENOENT) => ErrorKind::NotFound,
            Some(libc::EBUSY) => ErrorKind::Busy,
            Some(libc::EEXIST) => ErrorKind::Exists,
            Some(libc::EINVAL) => ErrorKind::InvalidInput,
            _ => ErrorKind::Io,
        }
    }

    /// A fetch is EIO whatever its cause. Otherwise an I/O source keeps its
    /// own errno, a store error the store's mapping (a missing chunk is
    /// EIO) and an flist error the flist's (a missing entry is ENOENT, a
    /// wrong type ENOTDIR / EINVAL, a damaged flist EIO).
    fn source_errno(self, source: &(dyn std::error::Error + 'static)) -> Option<i32> {
        if self == ErrorKind::Fetch {
            return Some(libc::EIO);
        }
        if let Some(e) = source.downcast_ref::<zosfs_flist::Error>() {
            return Some(e.kind().errno());
        }
        os_errno(source).or_else(|| source.downcast_ref::<zosfs_store::Error>().map(|e| e.errno()))
    }
}

impl FromStoreKind for ErrorKind {
    fn from_store_kind(kind: zosfs_store::ErrorKind) -> Self {
        use zosfs_store::ErrorKind as K;
        match kind {
            K::InvalidInput => ErrorKind::InvalidInput,
            K::NotFound | K::Corrupt | K::Unavailable | K::Protocol | K::Quorum => ErrorKind::Fetch,
            K::PermissionDenied | K::NoSpace | K::Io => ErrorKind::Io,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error of every fsmount operation.
pub type Error = Failure<ErrorKind>;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An flist error under fsmount's kinds, adding no text (the flist error
/// names its path); its errno stays the flist's.
pub(crate) fn flist_err(e: zosfs_flist::Error) -> Error {
    use zosfs_flist::ErrorKind as K;
    let kind = match e.kind() {
        K::NotFound => ErrorKind::NotFound,
        K::InvalidInput => ErrorKind::InvalidInput,
        K::Store => ErrorKind::Fetch,
        _ => ErrorKind::Io,
    };
    Error::wrap(kind, e)
}

/// Shorthand for bad input.
pub(crate) fn invalid(context: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidInput, context)
}
