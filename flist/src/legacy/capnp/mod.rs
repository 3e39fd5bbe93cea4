//! Cap'n Proto messages: the wire format only, no schema and no code
//! generation. 0-fs flists keep one capnp message per directory; the
//! schema-specific field layout lives in [`crate::legacy::zerofs::schema`].
//!
//! What this module knows (from the public encoding spec):
//!
//! * stream framing: `u32` segment count − 1, one `u32` size in words per
//!   segment, padding to a word, then the segments;
//! * pointers (one little-endian word): kind in bits 0–1 (struct, list,
//!   far, other); a signed 30-bit word offset from the end of the pointer;
//!   struct pointers carry data-section words (16 bits) and pointer count
//!   (16 bits); list pointers an element size code (3 bits) and a 29-bit
//!   count (words, for composite lists, whose first word is a struct-shaped
//!   tag giving the element count and layout); far pointers a landing-pad
//!   offset, a double-far flag and a segment id;
//! * text = byte list ending in NUL; data = byte list; null pointer = all
//!   zero, read as the default (empty / absent).
//!
//! The reader trusts nothing: every pointer is bounds-checked against its
//! segment, far pointers may not chain, the nesting depth is capped, and a
//! traversal budget proportional to the message size is charged for every
//! object visited, so a small hostile message can neither read out of
//! bounds, allocate much, nor make the reader loop for long.

mod read;
mod write;

pub use read::{Limits, Message, StructList, StructReader};
pub use write::{Builder, StructAt};

/// Bytes per word.
pub const WORD: usize = 8;
