//! zosfs-flist: the metadata of an image.
//!
//! Layers (each a module):
//!
//! * [`model`] — inodes, directory entries, header: plain data shared by
//!   every format;
//! * [`tree`] — the reader API ([`Tree`]): getattr, lookup, readdir,
//!   readlink, xattrs, chunks, path resolution, walk;
//! * [`native`] — the RocksDB format: [`Flist`] (reader), [`Writer`], the
//!   `.flist` archive and its cache;
//! * [`legacy`] — readers for rfs `.fl` and 0-fs `.flist` files;
//! * [`codec`] — chunks of any format ([`DataChunk`]) and their codecs
//!   (native, rfs, 0-fs): blob → plaintext, checked;
//! * [`content`] — chunks of any format, fetched and decoded from a store;
//!   [`stores`] — the stores of an flist, opened one way for every reader;
//!   [`source`] — a file of an flist as the chunk source of a LazyFile
//!   (fsmount's file contents, nbdserver's image devices);
//! * [`pack`] — directory or tar stream → chunks in a store + an flist;
//! * [`unpack`] — flist + store → a directory tree, never outside it.
//!
//! No FUSE and no NBD code lives here: fsmount and nbdserver build on it.

pub mod codec;
pub mod content;
pub mod error;
pub mod legacy;
pub mod model;
pub mod names;
pub mod native;
pub mod pack;
pub mod source;
pub mod stores;
mod sys;
pub mod tree;
pub mod unpack;

#[cfg(test)]
mod fuzz_seeds;

pub use codec::DataChunk;
pub use error::{Error, ErrorKind, Result};
pub use model::{Chunking, Codec, DirEntry, Header, Ino, Inode, Kind, ROOT_INO, Xattr};
pub use native::{FORMAT_VERSION, Flist, OpenOptions, Writer, write_single_file};
pub use tree::{Step, Tree, walk};
