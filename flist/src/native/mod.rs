//! The native flist format: a RocksDB database (see [`keys`] for the
//! layout, [`records`] for the values), shipped as one zstd-compressed tar
//! file ([`archive`]). Specified in docs/formats/flist-native.md.

pub mod archive;
mod codec;
pub mod keys;
mod reader;
pub mod records;
mod writer;

pub use reader::{Flist, OpenOptions};
pub use records::Version;
pub use writer::{Writer, write_single_file};

/// The major format version this build writes; it reads every major from
/// 1 up to this one. A reader refuses a newer major.
pub const FORMAT_VERSION: u32 = 2;

/// The minor version this build writes: the newest layout of
/// [`FORMAT_VERSION`] it knows. It reads newer minors of the same major,
/// skipping the fields they appended. A u8: every record carries it in
/// its one-byte tag.
pub const FORMAT_MINOR: u8 = 0;

/// `zosfs-flist <version>`: recorded in headers as the creating tool.
pub fn tool_version() -> String {
    format!("zosfs-flist {}", env!("CARGO_PKG_VERSION"))
}

fn rocks_err(context: impl Into<String>, e: rocksdb::Error) -> crate::Error {
    crate::Error::with_source(crate::ErrorKind::Corrupt, context, e)
}

/// Database options shared by writer and reader: no RocksDB compression (the
/// archive is zstd-compressed as a whole, which packs better), few files.
fn db_options() -> rocksdb::Options {
    let mut o = rocksdb::Options::default();
    o.set_compression_type(rocksdb::DBCompressionType::None);
    o.set_paranoid_checks(true);
    o.set_keep_log_file_num(1);
    o.set_log_level(rocksdb::LogLevel::Error);
    o.set_max_open_files(256);
    o
}

#[cfg(test)]
mod tests;
