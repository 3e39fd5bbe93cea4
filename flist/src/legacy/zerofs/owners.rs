//! Owners of 0-fs entries. ACI records name the user and group; newer
//! 0-flist writers also record the numeric ids (−1 when unknown). A name
//! is turned into an id as 0-fs did: by the numeric id when recorded, else
//! a numeric name, else `root`, else the local user/group database
//! (`/etc/passwd`, `/etc/group`), else 1000 (0-fs's fallback).

use std::collections::HashMap;
use std::path::Path;

/// Id of unknown names (what 0-fs falls back to).
const FALLBACK: u32 = 1000;

/// Name → id tables.
#[derive(Debug, Default)]
pub struct Owners {
    users: HashMap<Vec<u8>, u32>,
    groups: HashMap<Vec<u8>, u32>,
}

/// `name:x:id:...` lines of a passwd or group file.
fn parse_db(text: &[u8]) -> HashMap<Vec<u8>, u32> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let mut f = line.split(|&b| b == b':');
            let name = f.next()?;
            let id = std::str::from_utf8(f.nth(1)?).ok()?.parse().ok()?;
            (!name.is_empty()).then(|| (name.to_vec(), id))
        })
        .collect()
}

impl Owners {
    /// Tables of this machine (empty when the files cannot be read).
    pub fn system() -> Owners {
        Owners::from_files(Path::new("/etc/passwd"), Path::new("/etc/group"))
    }

    pub fn from_files(passwd: &Path, group: &Path) -> Owners {
        let read = |p: &Path| std::fs::read(p).map(|t| parse_db(&t)).unwrap_or_default();
        Owners { users: read(passwd), groups: read(group) }
    }

    fn resolve(table: &HashMap<Vec<u8>, u32>, id: i64, name: &[u8]) -> u32 {
        if let Ok(id) = u32::try_from(id) {
            return id;
        }
        if let Some(n) = std::str::from_utf8(name).ok().and_then(|s| s.parse::<u32>().ok()) {
            return n;
        }
        if name == b"root" {
            return 0;
        }
        table.get(name).copied().unwrap_or(FALLBACK)
    }

    pub fn uid(&self, id: i64, name: &[u8]) -> u32 {
        Owners::resolve(&self.users, id, name)
    }

    pub fn gid(&self, id: i64, name: &[u8]) -> u32 {
        Owners::resolve(&self.groups, id, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_names_and_fallbacks() {
        let o = Owners {
            users: parse_db(b"root:x:0:0::/root:/bin/sh\nalice:x:1234:1234::/:/bin/sh\nbroken\n"),
            groups: parse_db(b"wheel:x:10:\n"),
        };
        assert_eq!(o.uid(77, b"alice"), 77, "a recorded id wins");
        assert_eq!(o.uid(-1, b"alice"), 1234);
        assert_eq!(o.uid(-1, b"4321"), 4321);
        assert_eq!(o.uid(-1, b"root"), 0);
        assert_eq!(o.uid(-1, b"nobody-here"), FALLBACK);
        assert_eq!(o.gid(-1, b"wheel"), 10);
        assert_eq!(o.gid(i64::MAX, b"wheel"), 10, "an impossible id is ignored");
    }
}
