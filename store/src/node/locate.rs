//! Where a store's owner listens, and the `OWNER` file that says so.
//!
//! The socket lives under the node's runtime directory,
//! `$ZOSFS_RUN_DIR/stores/` (default `/run/zosfs/stores/`, mode 0700),
//! named by the first 16 hex digits of BLAKE3 of the store's canonical
//! path. A process that cannot create that directory (not root) puts it in
//! the store directory instead. Clients do not guess: they read the owner's
//! `OWNER` file in the store directory (written atomically after the socket
//! is bound), so both places work whoever made the socket.
//!
//! ```text
//! zosfs node store owner
//! version 1
//! pid 1234
//! socket /run/zosfs/stores/0123456789abcdef.sock
//! ```

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, invalid};

pub const OWNER_FILE: &str = "OWNER";
const HEADER: &str = "zosfs node store owner";
/// The `OWNER` file's own format version.
const OWNER_VERSION: u32 = 1;
/// `sun_path` holds 108 bytes with the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// The node's runtime directory (`$ZOSFS_RUN_DIR`, default `/run/zosfs`).
pub fn run_dir() -> PathBuf {
    std::env::var_os("ZOSFS_RUN_DIR").map_or_else(|| PathBuf::from("/run/zosfs"), PathBuf::from)
}

/// Create `dir` (and missing parents) 0700; tighten it to 0700 if it
/// exists with wider permissions and belongs to us.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let md = std::fs::metadata(dir)?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if md.permissions().mode() & 0o077 != 0 && std::os::unix::fs::MetadataExt::uid(&md) == me {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Where the owner of the store in `store_dir` listens.
pub fn socket_path(store_dir: &Path) -> Result<PathBuf> {
    let canon = std::fs::canonicalize(store_dir)
        .map_err(|e| Error::io(format!("resolve {}", store_dir.display()), e))?;
    let h = blake3::hash(canon.as_os_str().as_encoded_bytes()).to_hex();
    let name = format!("{}.sock", &h.as_str()[..16]);
    let runtime = run_dir().join("stores");
    let path = match private_dir(&runtime) {
        Ok(()) => runtime.join(name),
        Err(e) => {
            tracing::debug!("{}: {e}; the socket goes in the store directory", runtime.display());
            canon.join("owner.sock")
        }
    };
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(invalid(format!(
            "socket path {} is longer than {MAX_SOCKET_PATH} bytes: set ZOSFS_RUN_DIR to a shorter directory",
            path.display()
        )));
    }
    Ok(path)
}

/// What an `OWNER` file says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerRecord {
    pub pid: u32,
    pub socket: PathBuf,
}

impl OwnerRecord {
    pub fn encode(&self) -> String {
        format!(
            "{HEADER}\nversion {OWNER_VERSION}\npid {}\nsocket {}\n",
            self.pid,
            self.socket.display()
        )
    }

    pub fn decode(text: &str) -> std::result::Result<OwnerRecord, String> {
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err("not a zosfs OWNER file".into());
        }
        let (mut version, mut pid, mut socket) = (None, None, None);
        for line in lines {
            let (k, v) = line.split_once(' ').ok_or_else(|| format!("bad line {line:?}"))?;
            match k {
                "version" => version = v.parse::<u32>().ok(),
                "pid" => pid = v.parse::<u32>().ok(),
                "socket" => socket = Some(PathBuf::from(v)),
                _ => {} // later versions may add fields
            }
        }
        match (version, pid, socket) {
            (Some(OWNER_VERSION), Some(pid), Some(socket)) => Ok(OwnerRecord { pid, socket }),
            (Some(v), _, _) if v != OWNER_VERSION => {
                Err(format!("OWNER file version {v}, this zosfs reads version {OWNER_VERSION}"))
            }
            _ => Err("OWNER file lacks version, pid or socket".into()),
        }
    }

    /// Write atomically (temporary file, fsync, rename).
    pub fn write(&self, store_dir: &Path) -> std::io::Result<()> {
        let tmp = store_dir.join(format!(".{OWNER_FILE}.{}.tmp", std::process::id()));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(self.encode().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, store_dir.join(OWNER_FILE))
    }

    /// The record in `store_dir`, if one is readable.
    pub fn read(store_dir: &Path) -> Option<std::result::Result<OwnerRecord, String>> {
        let text = std::fs::read_to_string(store_dir.join(OWNER_FILE)).ok()?;
        Some(OwnerRecord::decode(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_record_round_trip_and_refusals() {
        let r = OwnerRecord { pid: 42, socket: "/run/zosfs/stores/ab.sock".into() };
        assert_eq!(OwnerRecord::decode(&r.encode()), Ok(r));
        assert!(OwnerRecord::decode("hello\n").is_err());
        let v2 = format!("{HEADER}\nversion 2\npid 1\nsocket /x\n");
        assert!(OwnerRecord::decode(&v2).unwrap_err().contains("version 2"));
        assert!(OwnerRecord::decode(&format!("{HEADER}\nversion 1\npid 1\n")).is_err());
    }
}
