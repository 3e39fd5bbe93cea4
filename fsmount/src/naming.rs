//! Names fsmount derives or accepts: stable ids for mountpoints and volumes
//! (file names in the state directory) and validation of rw layer names.

use std::path::Path;

use crate::error::{Result, invalid};

/// FNV-1a 64: a fixed, dependency-free hash so ids stay the same across
/// builds and Rust versions (std's hasher makes no such promise).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A file-name-safe id for an absolute path: a readable tail plus a hash of
/// the whole path (`data-3f2a…`).
pub fn path_id(p: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let tail: String = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".into())
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .take(32)
        .collect();
    format!("{tail}-{:016x}", fnv1a(p.as_os_str().as_bytes()))
}

/// An rw layer name becomes a btrfs subvolume name: `[A-Za-z0-9._-]`, not
/// starting with a dot, at most 200 bytes.
pub fn check_rw_name(name: &str) -> Result<()> {
    let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > 200 || !ok_chars || name.starts_with('.') {
        return Err(invalid(format!(
            "rw name {name:?}: use 1-200 characters from A-Z a-z 0-9 . _ - (not starting with a dot)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = path_id(Path::new("/mnt/a b"));
        assert_eq!(a, path_id(Path::new("/mnt/a b")));
        assert!(a.starts_with("a_b-"));
        assert_ne!(a, path_id(Path::new("/mnt2/a b")));
        assert!(path_id(Path::new("/")).starts_with("root-"));
    }

    #[test]
    fn rw_names() {
        assert!(check_rw_name("web-1.data_x").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", "..", &"x".repeat(201)] {
            assert!(check_rw_name(bad).is_err(), "{bad:?}");
        }
    }
}
