//! Names and paths: what a directory entry may be called, and how a path
//! splits into names. Names are raw bytes (Linux allows any byte but `/` and
//! NUL), so non-UTF-8 names survive a round trip.

use crate::error::{Error, ErrorKind, Result};

/// Check one directory entry name: non-empty, not `.` or `..`, no `/`, no NUL.
pub fn check_name(name: &[u8]) -> Result<()> {
    let why = if name.is_empty() {
        "empty name"
    } else if name == b"." || name == b".." {
        "name is . or .."
    } else if name.contains(&b'/') {
        "name contains /"
    } else if name.contains(&0) {
        "name contains NUL"
    } else if name.len() > 255 {
        "name longer than 255 bytes"
    } else {
        return Ok(());
    };
    Err(Error::new(ErrorKind::InvalidInput, format!("bad entry name {}: {why}", show(name))))
}

/// Split a path inside an flist into names. Leading `/`, empty components
/// and `.` are ignored; `..` is kept for the resolver to handle.
pub fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    path.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".")
}

/// Join a parent path and a name (`b""` is the root).
pub fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
    p.extend_from_slice(parent);
    if !parent.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// A name or path for messages: lossy UTF-8, with control bytes escaped so
/// a hostile name cannot forge output lines.
pub fn show(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    format!("{:?}", s.as_ref())
}

/// Raw bytes as an OS path (Unix: lossless).
pub fn as_path(bytes: &[u8]) -> &std::path::Path {
    use std::os::unix::ffi::OsStrExt;
    std::path::Path::new(std::ffi::OsStr::from_bytes(bytes))
}

/// An OS path as raw bytes (Unix: lossless).
pub fn path_bytes(p: &std::path::Path) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [&b"a"[..], b"with space", b"new\nline", b"\xff\xfe", b"..."] {
            check_name(ok).unwrap();
        }
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0"] {
            assert_eq!(check_name(bad).unwrap_err().kind(), ErrorKind::InvalidInput);
        }
        assert_eq!(components(b"/a//./b/").collect::<Vec<_>>(), vec![&b"a"[..], b"b"]);
        assert_eq!(join(b"", b"x"), b"x");
        assert_eq!(join(b"a", b"x"), b"a/x");
        assert_eq!(show(b"a\nb"), "\"a\\nb\"");
    }
}
