//! The one public error type of nbdserver: a kind (mapped to an NBD error
//! value at exactly one edge, [`Error::nbd_code`]), a context naming what
//! was being done, and an optional source.

use std::fmt;

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
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
#[error("{context}: {kind}")]
pub struct Error {
    kind: ErrorKind,
    context: String,
    #[source]
    source: Option<Source>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

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

    pub fn invalid(context: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput, context)
    }

    /// A local I/O error, classified by errno (ENOSPC/EDQUOT/EFBIG stay
    /// "no space", EOPNOTSUPP becomes "unsupported").
    pub fn io(context: impl Into<String>, err: std::io::Error) -> Self {
        let kind = match err.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG) => ErrorKind::NoSpace,
            Some(libc::EOPNOTSUPP) => ErrorKind::Unsupported,
            Some(libc::EROFS) | Some(libc::EPERM) => ErrorKind::ReadOnly,
            _ => ErrorKind::Io,
        };
        Error::with_source(kind, context, err)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The NBD error value sent to the client for this error.
    pub fn nbd_code(&self) -> ErrorCode {
        match self.kind {
            ErrorKind::InvalidInput | ErrorKind::Protocol => ErrorCode::Invalid,
            ErrorKind::ReadOnly => ErrorCode::Perm,
            ErrorKind::NoSpace => ErrorCode::NoSpace,
            ErrorKind::Unsupported => ErrorCode::NotSup,
            ErrorKind::Io => ErrorCode::Io,
            ErrorKind::Shutdown => ErrorCode::Shutdown,
        }
    }

    /// Prefix more context, keeping kind and source.
    pub fn context_prefix(mut self, what: impl fmt::Display) -> Self {
        self.context = format!("{what}: {}", self.context);
        self
    }

    /// The whole chain on one line, for logs and error messages.
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

impl From<zosfs_store::Error> for Error {
    fn from(e: zosfs_store::Error) -> Self {
        use zosfs_store::ErrorKind as K;
        let kind = match e.kind() {
            K::InvalidInput => ErrorKind::InvalidInput,
            K::PermissionDenied => ErrorKind::ReadOnly,
            K::NoSpace => ErrorKind::NoSpace,
            // Missing, corrupt or unreachable data is EIO to the client:
            // the block exists, its content could not be produced.
            K::NotFound | K::Corrupt | K::Unavailable | K::Protocol | K::Quorum | K::Io => {
                ErrorKind::Io
            }
        };
        Error::with_source(kind, "chunk store", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nbd_codes() {
        let e = Error::io("write", std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.nbd_code(), ErrorCode::NoSpace);
        let e = Error::io("read", std::io::Error::from_raw_os_error(libc::EBADF));
        assert_eq!(e.nbd_code(), ErrorCode::Io);
        assert!(e.chain().contains("read: I/O error: "));
        let s = zosfs_store::Error::new(zosfs_store::ErrorKind::Unavailable, "zdb://h:1/ns");
        assert_eq!(Error::from(s).nbd_code(), ErrorCode::Io);
    }
}
