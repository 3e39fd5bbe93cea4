//! The one error shape of every zosfs crate, and the store's kinds.
//!
//! A [`Failure`] is a kind (what went wrong, coarse enough to map to an
//! errno or an NBD error at exactly one edge), a context (what was being
//! done, naming paths and store URLs without passwords) and an optional
//! source. Each crate keeps its own kinds (an enum implementing [`Kind`])
//! and calls `Failure<ItsKind>` its `Error`; the store's are [`ErrorKind`]
//! and [`Error`].
//!
//! A failure displays as `context: kind`, and [`Failure::chain`] adds its
//! sources. Each layer adds context once, naming only what the layer below
//! did not know. A failure converted from a lower crate ([`Failure::wrap`],
//! every `From<zosfs_store::Error>`) takes the message of the failure it
//! wraps as its own: a conversion adds no text, and context prefixed to it
//! reads `context: wrapped message`.

use std::fmt;
use std::io;

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The kinds of one crate's failures.
pub trait Kind: Copy + Eq + fmt::Debug + fmt::Display + Send + Sync + 'static {
    /// The errno this kind becomes at a POSIX edge when no source says better.
    fn errno(self) -> i32;

    /// The kind of a failed system call or file operation.
    fn from_io(err: &io::Error) -> Self;

    /// An errno carried by the source of a failure of this kind that wins
    /// over [`Kind::errno`]; by default an OS error's own number.
    fn source_errno(self, source: &(dyn std::error::Error + 'static)) -> Option<i32> {
        os_errno(source)
    }
}

/// The kinds of a crate above the store: what a store failure is among them.
/// Gives `From<zosfs_store::Error>` for that crate's failures.
pub trait FromStoreKind: Kind {
    fn from_store_kind(kind: ErrorKind) -> Self;
}

/// The number of an OS error.
pub fn os_errno(source: &(dyn std::error::Error + 'static)) -> Option<i32> {
    source.downcast_ref::<io::Error>().and_then(io::Error::raw_os_error)
}

/// A failure of one crate: its kind, what was being done, and the cause.
#[derive(Debug)]
pub struct Failure<K> {
    kind: K,
    context: String,
    source: Option<Source>,
    /// Made by [`Failure::wrap`]: the source's message is this one's.
    wrapped: bool,
}

impl<K: Kind> Failure<K> {
    pub fn new(kind: K, context: impl Into<String>) -> Self {
        Failure { kind, context: context.into(), source: None, wrapped: false }
    }

    pub fn with_source(kind: K, context: impl Into<String>, source: impl Into<Source>) -> Self {
        Failure { kind, context: context.into(), source: Some(source.into()), wrapped: false }
    }

    /// Another failure under this crate's kind `kind`, adding no text: it
    /// displays as `source`, whose own sources follow.
    pub fn wrap(kind: K, source: impl Into<Source>) -> Self {
        Failure { kind, context: String::new(), source: Some(source.into()), wrapped: true }
    }

    /// A failed system call or file operation, classified by its errno
    /// (which [`Failure::errno`] keeps).
    pub fn io(context: impl Into<String>, err: io::Error) -> Self {
        Failure::with_source(K::from_io(&err), context, err)
    }

    /// The last OS error of a system call.
    pub fn last_os(context: impl Into<String>) -> Self {
        Failure::io(context, io::Error::last_os_error())
    }

    pub fn kind(&self) -> K {
        self.kind
    }

    /// What was being done (for a [`Failure::wrap`], only the context
    /// prefixed to it).
    pub fn context(&self) -> &str {
        &self.context
    }

    /// errno for POSIX edges: what the source carries (an I/O source keeps
    /// its own errno), else the kind's.
    pub fn errno(&self) -> i32 {
        let from_source = self.source.as_deref().and_then(|s| self.kind.source_errno(s));
        from_source.unwrap_or_else(|| self.kind.errno())
    }

    /// Prefix more context, keeping kind and source.
    pub fn context_prefix(mut self, what: impl fmt::Display) -> Self {
        self.context = if self.context.is_empty() {
            what.to_string()
        } else {
            format!("{what}: {}", self.context)
        };
        self
    }

    /// The whole chain on one line ("context: kind: source: ..."), for logs
    /// and error messages.
    pub fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut cur = std::error::Error::source(self);
        while let Some(e) = cur {
            s.push_str(": ");
            s.push_str(&e.to_string());
            cur = e.source();
        }
        s
    }

    /// An equal copy for another receiver (a failure is not `Clone`: its
    /// source may not be): the same kind and message, the sources as text.
    pub fn duplicate(&self) -> Self {
        Failure::wrap(self.kind, self.chain())
    }

    /// The failure a wrap stands for.
    fn wrapped(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.source {
            Some(s) if self.wrapped => Some(&**s),
            _ => None,
        }
    }
}

impl<K: Kind> fmt::Display for Failure<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.wrapped() {
            Some(inner) if self.context.is_empty() => write!(f, "{inner}"),
            Some(inner) => write!(f, "{}: {inner}", self.context),
            None => write!(f, "{}: {}", self.context, self.kind),
        }
    }
}

impl<K: Kind> std::error::Error for Failure<K> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self.wrapped() {
            Some(inner) => inner.source(),
            None => self.source.as_deref().map(|s| s as &(dyn std::error::Error + 'static)),
        }
    }
}

impl<K: FromStoreKind> From<Error> for Failure<K> {
    fn from(e: Error) -> Self {
        Failure::wrap(K::from_store_kind(e.kind()), e)
    }
}

/// What went wrong in a store, coarse enough to map to an errno at one edge.
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
}

impl Kind for ErrorKind {
    /// A chunk that no replica has is EIO, never ENOENT: the file exists,
    /// its data could not be fetched.
    fn errno(self) -> i32 {
        match self {
            ErrorKind::NotFound | ErrorKind::Corrupt | ErrorKind::Unavailable => libc::EIO,
            ErrorKind::Protocol | ErrorKind::Quorum | ErrorKind::Io => libc::EIO,
            ErrorKind::InvalidInput => libc::EINVAL,
            ErrorKind::PermissionDenied => libc::EPERM,
            ErrorKind::NoSpace => libc::ENOSPC,
        }
    }

    /// ENOSPC and EDQUOT stay NoSpace.
    fn from_io(err: &io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => ErrorKind::NoSpace,
            _ if err.kind() == io::ErrorKind::NotFound => ErrorKind::NotFound,
            _ if err.kind() == io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            _ => ErrorKind::Io,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error of every store operation.
pub type Error = Failure<ErrorKind>;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthands used across the crate.
pub(crate) fn invalid(context: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidInput, context)
}

pub(crate) fn corrupt(context: impl Into<String>) -> Error {
    Error::new(ErrorKind::Corrupt, context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_chain() {
        let e = Error::io("open /x", io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(e.to_string(), "open /x: not found");
        assert!(e.chain().starts_with("open /x: not found: "), "{}", e.chain());
        assert_eq!(e.errno(), libc::ENOENT);
        let e = e.context_prefix("mount /m");
        assert!(e.to_string().starts_with("mount /m: open /x: not found"), "{e}");
    }

    #[test]
    fn wrap_adds_no_text() {
        let inner = Error::io("open /x", io::Error::from_raw_os_error(libc::ENOSPC));
        let want = inner.chain();
        let e = Error::wrap(ErrorKind::Io, inner);
        assert_eq!(e.chain(), want);
        assert_eq!(e.kind(), ErrorKind::Io);
        assert_eq!(e.context(), "");
        // Context prefixed to a wrap prefixes the wrapped message.
        let e = e.context_prefix("put");
        assert_eq!(e.chain(), format!("put: {want}"));
        assert_eq!(e.kind(), ErrorKind::Io);
        let copy = e.duplicate();
        assert_eq!((copy.kind(), copy.chain()), (e.kind(), e.chain()));
    }
}
