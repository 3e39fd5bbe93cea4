//! 0-fs / 0-flist `.flist` files (the Zero-OS format before rfs).
//!
//! ```text
//! package   tar (gzip-compressed) holding ./flistdb.sqlite3
//! entries(key VARCHAR(64) PRIMARY KEY, value BLOB)
//!           key = hex(BLAKE2b-128(path)), path relative without leading or
//!                 trailing `/` ("" is the root)       → a capnp `Dir`
//!           key = an ACI key named by `aclkey` fields  → a capnp `ACI`
//! metadata(key VARCHAR(64) PRIMARY KEY, value TEXT)   (newer writers)
//!           backend = {"host", "port", "namespace", "password"}, entrypoint, ...
//! ```
//!
//! A `Dir` lists its entries (`Inode`: name, size, times, aclkey and a
//! union of subdirectory key / file blocks / symlink target / special
//! file); owners and modes live in shared `ACI` records; times are whole
//! seconds. There are no hardlinks and no xattrs. Blocks: see
//! [`crate::codec::zerofs`].
//!
//! Layers: [`archive`] (package), [`schema`] (capnp field layout over
//! [`super::capnp`]), [`reader`]
//! (the [`crate::Tree`]), [`writer`] (fixtures), [`owners`] (names → ids).

pub mod archive;
mod owners;
pub mod reader;
pub mod schema;
pub mod writer;

pub use crate::codec::zerofs::{Block, Hash};
pub use reader::ZeroFsFlist;
pub use writer::{WriteOptions, write_flist};

/// Lower-case hex of the `n`-byte BLAKE2b of `data`.
pub fn hex_blake2b(data: &[u8], n: usize) -> String {
    use blake2::Blake2bVar;
    use blake2::digest::{Update, VariableOutput};
    let mut h = Blake2bVar::new(n).expect("a valid BLAKE2b length");
    h.update(data);
    let mut out = vec![0u8; n];
    h.finalize_variable(&mut out).expect("buffer of the requested length");
    hex::encode(out)
}

/// Database key of the directory at `path` (relative, `b""` for the root).
pub fn path_key(path: &[u8]) -> String {
    hex_blake2b(path, 16)
}

#[cfg(test)]
mod tests;
