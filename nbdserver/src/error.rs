//! nbdserver's kinds of [`Failure`] (the error shape every zosfs crate
//! shares, see `zosfs_store::error`): mapped to an NBD error value at
//! exactly one edge, [`ErrorKind::nbd_code`].

use std::fmt;

use zosfs_store::error::{Failure, FromStoreKind, Kind};

use crate::proto::ErrorCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Bad argument, configuration or request.
    InvalidInput,
    /// Writing to something read-only.
    ReadOnly,
    /// The disk under the cache dir is full.
    NoSpace,
    /// The operation cannot be done the way asked (e.g. a fast zero).
    Unsupported,
    /// Local I/O failed, or the chunk store could not deliver data.
    Io,
    /// The peer broke the protocol.
    Protocol,
    /// The server is shutting down.
    Shutdown,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::ReadOnly => "read-only",
            ErrorKind::NoSpace => "no space left",
            ErrorKind::Unsupported => "not supported",
            ErrorKind::Io => "I/O error",
            ErrorKind::Protocol => "protocol error",
            ErrorKind::Shutdown => "shutting down",
        }
    }

    /// The NBD error value sent to the client for this kind.
    pub fn nbd_code(self) -> ErrorCode {
        match self {
            ErrorKind::InvalidInput | ErrorKind::Protocol => ErrorCode::Invalid,
            ErrorKind::ReadOnly => ErrorCode::Perm,
            ErrorKind::NoSpace => ErrorCode::NoSpace,
            ErrorKind::Unsupported => ErrorCode::NotSup,
            ErrorKind::Io => ErrorCode::Io,
            ErrorKind::Shutdown => ErrorCode::Shutdown,
        }
    }
}

impl Kind for ErrorKind {
    /// The errno of the NBD error value (NBD's values are errnos).
    fn errno(self) -> i32 {
        match self {
            ErrorKind::InvalidInput | ErrorKind::Protocol => libc::EINVAL,
            ErrorKind::ReadOnly => libc::EPERM,
            ErrorKind::NoSpace => libc::ENOSPC,
            ErrorKind::Unsupported => libc::EOPNOTSUPP,
            ErrorKind::Io => libc::EIO,
            ErrorKind::Shutdown => libc::ESHUTDOWN,
        }
    }

    /// ENOSPC/EDQUOT/EFBIG stay "no space", EOPNOTSUPP becomes
    /// "unsupported", EROFS/EPERM "read-only".
    fn from_io(err: &std::io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG) => ErrorKind::NoSpace,
            Some(libc::EOPNOTSUPP) => ErrorKind::Unsupported,
            Some(libc::EROFS) | Some(libc::EPERM) => ErrorKind::ReadOnly,
            _ => ErrorKind::Io,
        }
    }
}

impl FromStoreKind for ErrorKind {
    fn from_store_kind(kind: zosfs_store::ErrorKind) -> Self {
        use zosfs_store::ErrorKind as K;
        match kind {
            K::InvalidInput => ErrorKind::InvalidInput,
            K::PermissionDenied => ErrorKind::ReadOnly,
            K::NoSpace => ErrorKind::NoSpace,
            // Missing, corrupt or unreachable data is EIO to the client:
            // the block exists, its content could not be produced.
            K::NotFound | K::Corrupt | K::Unavailable | K::Protocol | K::Quorum | K::Io => {
                ErrorKind::Io
            }
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub type Error = Failure<ErrorKind>;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An flist error (opening an image, its stores) as a bad export spec,
/// adding no text.
pub fn flist_err(e: zosfs_flist::Error) -> Error {
    Error::wrap(ErrorKind::InvalidInput, e)
}

/// Shorthand for a bad argument, configuration or request.
pub fn invalid(context: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidInput, context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nbd_codes() {
        let e = Error::io("write", std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.kind().nbd_code(), ErrorCode::NoSpace);
        let e = Error::io("read", std::io::Error::from_raw_os_error(libc::EBADF));
        assert_eq!(e.kind().nbd_code(), ErrorCode::Io);
        assert!(e.chain().contains("read: I/O error: "));
        let s = zosfs_store::Error::new(zosfs_store::ErrorKind::Unavailable, "zdb://h:1/ns");
        let e = Error::from(s);
        assert_eq!(e.kind().nbd_code(), ErrorCode::Io);
        // The conversion adds no text of its own.
        assert_eq!(e.chain(), "zdb://h:1/ns: unavailable");
    }
}
