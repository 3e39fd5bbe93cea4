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

/// The last component of a path as a file-name-safe string of at most
/// `max` characters.
fn tail(p: &Path, max: usize) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".into())
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .take(max)
        .collect()
}

/// A file-name-safe id for an absolute path: a readable tail plus a hash of
/// the whole path (`data-3f2a…`).
pub fn path_id(p: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    format!("{}-{:016x}", tail(p, 32), fnv1a(p.as_os_str().as_bytes()))
}

/// The id of a serving process: one per (state directory, cache). Short
/// (at most 33 characters) so socket paths stay within sun_path's 108 bytes.
pub fn server_id(state: &Path, cache: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut both = state.as_os_str().as_bytes().to_vec();
    both.push(0);
    both.extend_from_slice(cache.as_os_str().as_bytes());
    format!("{}-{:016x}", tail(cache, 16), fnv1a(&both))
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
    fn server_ids_tell_state_and_cache_apart() {
        let (s1, s2) = (Path::new("/var/lib/zosfs"), Path::new("/tmp/state"));
        let (c1, c2) = (Path::new("/var/cache/zosfs"), Path::new("/var/cache/other"));
        let a = server_id(s1, c1);
        assert_eq!(a, server_id(s1, c1));
        assert!(a.starts_with("zosfs-"));
        assert_ne!(a, server_id(s2, c1));
        assert_ne!(a, server_id(s1, c2));
        // The separator keeps ("/ab", "/c") and ("/a", "b/c") apart.
        assert_ne!(
            server_id(Path::new("/ab"), Path::new("/c")),
            server_id(Path::new("/a"), Path::new("b/c"))
        );
        assert!(server_id(s1, Path::new(&format!("/{}", "x".repeat(200)))).len() <= 33);
    }

    #[test]
    fn rw_names() {
        assert!(check_rw_name("web-1.data_x").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", "..", &"x".repeat(201)] {
            assert!(check_rw_name(bad).is_err(), "{bad:?}");
        }
    }
}
