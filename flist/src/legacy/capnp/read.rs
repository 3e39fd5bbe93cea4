//! Reading capnp messages (see the module doc for the wire format).

use std::cell::Cell;

use super::WORD;
use crate::error::{Result, corrupt};

/// Bounds on what one message may make the reader do.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Segments in the framing table.
    pub max_segments: usize,
    /// Pointers followed from the root to any object.
    pub max_depth: u32,
    /// Words visited (objects are charged their size, at least one word
    /// each) as a multiple of the message size.
    pub traversal_factor: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_segments: 512, max_depth: 64, traversal_factor: 8 }
    }
}

/// A parsed message: the framing checked, segments borrowed from the input.
pub struct Message<'a> {
    segments: Vec<&'a [u8]>,
    budget: Cell<u64>,
    max_depth: u32,
}

impl std::fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message").field("segments", &self.segments.len()).finish()
    }
}

fn bad(why: impl std::fmt::Display) -> crate::error::Error {
    corrupt(format!("capnp message: {why}"))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// Where a pointer led: segment, first word of the object, and the word
/// describing its shape (the pointer itself, or a far pointer's tag).
#[derive(Clone, Copy)]
struct Target {
    seg: usize,
    at: usize,
    shape: u64,
}

const KIND_STRUCT: u64 = 0;
const KIND_LIST: u64 = 1;
const KIND_FAR: u64 = 2;

/// List element size codes.
const ELEM_VOID: u64 = 0;
const ELEM_BIT: u64 = 1;
const ELEM_BYTE: u64 = 2;
const ELEM_POINTER: u64 = 6;
const ELEM_COMPOSITE: u64 = 7;

/// Signed 30-bit word offset of a struct or list pointer.
fn offset_of(raw: u64) -> i64 {
    i64::from((raw as u32 as i32) >> 2)
}

impl<'a> Message<'a> {
    /// Check the stream framing of `bytes` (trailing bytes after the last
    /// segment are ignored, as stream readers do).
    pub fn parse(bytes: &'a [u8], limits: Limits) -> Result<Message<'a>> {
        let count = u32_at(bytes, 0).ok_or_else(|| bad("shorter than its segment table"))?;
        let count = u64::from(count) + 1;
        if count > limits.max_segments as u64 {
            return Err(bad(format!("{count} segments (at most {})", limits.max_segments)));
        }
        let count = count as usize;
        let table = (4 + 4 * count).next_multiple_of(WORD);
        if bytes.len() < table {
            return Err(bad("shorter than its segment table"));
        }
        let mut segments = Vec::with_capacity(count);
        let mut at = table;
        for i in 0..count {
            let words = u32_at(bytes, 4 + 4 * i).expect("inside the checked table") as usize;
            let len = words
                .checked_mul(WORD)
                .filter(|l| at.checked_add(*l).is_some_and(|end| end <= bytes.len()))
                .ok_or_else(|| {
                    bad(format!(
                        "segment {i} claims {words} words, past the end of {} bytes",
                        bytes.len()
                    ))
                })?;
            segments.push(&bytes[at..at + len]);
            at += len;
        }
        let total_words = ((at - table) / WORD) as u64;
        let budget = total_words.saturating_mul(limits.traversal_factor).saturating_add(64);
        Ok(Message { segments, budget: Cell::new(budget), max_depth: limits.max_depth })
    }

    /// The root struct (the pointer in the first word of segment 0).
    pub fn root(&self) -> Result<StructReader<'_, 'a>> {
        if self.seg_words(0) == 0 {
            return Err(bad("empty first segment (no root pointer)"));
        }
        let origin = StructReader::origin(self);
        origin.struct_field(0)?.ok_or_else(|| bad("null root pointer"))
    }

    fn seg_words(&self, seg: usize) -> usize {
        self.segments.get(seg).map_or(0, |s| s.len() / WORD)
    }

    fn word(&self, seg: usize, at: usize) -> Result<u64> {
        let s = self.segments.get(seg).ok_or_else(|| bad(format!("no segment {seg}")))?;
        let b = s
            .get(at * WORD..at * WORD + WORD)
            .ok_or_else(|| bad(format!("word {at} is outside segment {seg}")))?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn charge(&self, words: u64) -> Result<()> {
        let left = self.budget.get();
        if words > left {
            return Err(bad("traversal limit exceeded (too many or too large objects)"));
        }
        self.budget.set(left - words);
        Ok(())
    }

    /// Check that `[at, at + words)` lies inside segment `seg`.
    fn check_range(&self, seg: usize, at: usize, words: u64, what: &str) -> Result<()> {
        let end = (at as u64).checked_add(words);
        if end.is_none_or(|e| e > self.seg_words(seg) as u64) {
            return Err(bad(format!("{what} of {words} words at {at} overruns segment {seg}")));
        }
        Ok(())
    }

    /// Follow the pointer word `raw` found at word `at` of segment `seg`.
    /// Returns None for a null pointer.
    fn follow(&self, seg: usize, at: usize, raw: u64) -> Result<Option<Target>> {
        if raw == 0 {
            return Ok(None);
        }
        match raw & 3 {
            KIND_STRUCT | KIND_LIST => {
                let target = at as i64 + 1 + offset_of(raw);
                if target < 0 || target > self.seg_words(seg) as i64 {
                    return Err(bad(format!("pointer at word {at} points outside segment {seg}")));
                }
                Ok(Some(Target { seg, at: target as usize, shape: raw }))
            }
            KIND_FAR => self.follow_far(raw).map(Some),
            _ => Err(bad("capability pointers are not supported")),
        }
    }

    fn follow_far(&self, raw: u64) -> Result<Target> {
        let double = (raw >> 2) & 1 == 1;
        let pad = (raw as u32 >> 3) as usize;
        let seg = (raw >> 32) as usize;
        if seg >= self.segments.len() {
            return Err(bad(format!("far pointer to missing segment {seg}")));
        }
        self.charge(1)?;
        let first = self.word(seg, pad)?;
        if !double {
            if first & 3 != KIND_STRUCT && first & 3 != KIND_LIST {
                return Err(bad("far pointer landing pad is not a struct or list pointer"));
            }
            let target = pad as i64 + 1 + offset_of(first);
            if target < 0 || target > self.seg_words(seg) as i64 {
                return Err(bad("far pointer landing pad points outside its segment"));
            }
            return Ok(Target { seg, at: target as usize, shape: first });
        }
        // Double far: the pad is a far pointer to the content's first word
        // (not itself double) followed by a tag describing the object.
        let tag = self.word(seg, pad + 1)?;
        if first & 3 != KIND_FAR || (first >> 2) & 1 == 1 {
            return Err(bad("double-far landing pad does not start with a single far pointer"));
        }
        if tag & 3 != KIND_STRUCT && tag & 3 != KIND_LIST {
            return Err(bad("double-far tag is not a struct or list pointer"));
        }
        let content_seg = (first >> 32) as usize;
        let content_at = (first as u32 >> 3) as usize;
        if content_at > self.seg_words(content_seg) || content_seg >= self.segments.len() {
            return Err(bad("double-far content is outside its segment"));
        }
        Ok(Target { seg: content_seg, at: content_at, shape: tag })
    }
}

/// One struct inside a message. Fields past the end of its data or pointer
/// section read as their defaults (zero, null), as the spec requires for
/// readers of newer or older writers.
#[derive(Clone, Copy)]
pub struct StructReader<'m, 'a> {
    msg: &'m Message<'a>,
    seg: usize,
    /// Byte offset of the data section in its segment.
    data: usize,
    /// Bytes in the data section (a struct read from a primitive list has
    /// fewer than a word).
    data_len: usize,
    /// Word offset of the pointer section.
    ptrs: usize,
    ptr_count: usize,
    depth: u32,
}

impl std::fmt::Debug for StructReader<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StructReader")
            .field("seg", &self.seg)
            .field("data_len", &self.data_len)
            .field("ptr_count", &self.ptr_count)
            .finish()
    }
}

impl<'m, 'a> StructReader<'m, 'a> {
    /// A pseudo-struct whose one pointer is the root pointer.
    fn origin(msg: &'m Message<'a>) -> Self {
        StructReader { msg, seg: 0, data: 0, data_len: 0, ptrs: 0, ptr_count: 1, depth: 0 }
    }

    fn bytes(&self, off: usize, n: usize) -> Option<&'a [u8]> {
        if off.checked_add(n)? > self.data_len {
            return None;
        }
        let s: &'a [u8] = self.msg.segments[self.seg];
        s.get(self.data + off..self.data + off + n)
    }

    pub fn u16(&self, byte: usize) -> u16 {
        self.bytes(byte, 2).map_or(0, |b| u16::from_le_bytes(b.try_into().expect("2")))
    }

    pub fn u32(&self, byte: usize) -> u32 {
        self.bytes(byte, 4).map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4")))
    }

    pub fn u64(&self, byte: usize) -> u64 {
        self.bytes(byte, 8).map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8")))
    }

    /// Whether pointer `i` is set (non-null).
    pub fn has(&self, i: usize) -> bool {
        self.pointer(i).is_ok_and(|p| p.is_some_and(|(_, raw)| raw != 0))
    }

    /// Pointer `i` as (word index, raw word), None past the pointer section.
    fn pointer(&self, i: usize) -> Result<Option<(usize, u64)>> {
        if i >= self.ptr_count {
            return Ok(None);
        }
        let at = self.ptrs + i;
        Ok(Some((at, self.msg.word(self.seg, at)?)))
    }

    fn deeper(&self) -> Result<u32> {
        let d = self.depth + 1;
        if d > self.msg.max_depth {
            return Err(bad(format!("nesting deeper than {} pointers", self.msg.max_depth)));
        }
        Ok(d)
    }

    fn target(&self, i: usize) -> Result<Option<Target>> {
        match self.pointer(i)? {
            None => Ok(None),
            Some((at, raw)) => self.msg.follow(self.seg, at, raw),
        }
    }

    /// The struct pointer `i` points to; None when null.
    pub fn struct_field(&self, i: usize) -> Result<Option<StructReader<'m, 'a>>> {
        let depth = self.deeper()?;
        let Some(t) = self.target(i)? else { return Ok(None) };
        if t.shape & 3 != KIND_STRUCT {
            return Err(bad(format!("pointer {i} should point to a struct")));
        }
        let data_words = ((t.shape >> 32) & 0xffff) as usize;
        let ptr_count = (t.shape >> 48) as usize;
        let size = (data_words + ptr_count) as u64;
        self.msg.check_range(t.seg, t.at, size, "struct")?;
        self.msg.charge(size.max(1))?;
        Ok(Some(StructReader {
            msg: self.msg,
            seg: t.seg,
            data: t.at * WORD,
            data_len: data_words * WORD,
            ptrs: t.at + data_words,
            ptr_count,
            depth,
        }))
    }

    /// Shape of the list pointer `i` points to: (target, element code, count).
    fn list_target(&self, i: usize) -> Result<Option<(Target, u64, u64)>> {
        let Some(t) = self.target(i)? else { return Ok(None) };
        if t.shape & 3 != KIND_LIST {
            return Err(bad(format!("pointer {i} should point to a list")));
        }
        Ok(Some((t, (t.shape >> 32) & 7, t.shape >> 35)))
    }

    /// Bytes of a byte list (`Data`); empty when null.
    pub fn data_field(&self, i: usize) -> Result<&'a [u8]> {
        self.deeper()?;
        let Some((t, elem, count)) = self.list_target(i)? else { return Ok(&[]) };
        if elem != ELEM_BYTE {
            return Err(bad(format!("pointer {i} should point to a byte list")));
        }
        let words = count.div_ceil(WORD as u64);
        self.msg.check_range(t.seg, t.at, words, "byte list")?;
        self.msg.charge(words.max(1))?;
        let s: &'a [u8] = self.msg.segments[t.seg];
        Ok(&s[t.at * WORD..t.at * WORD + count as usize])
    }

    /// Bytes of a `Text` (without its NUL); empty when null. Text is
    /// returned as bytes: names in real flists are not always UTF-8.
    pub fn text_field(&self, i: usize) -> Result<&'a [u8]> {
        let b = self.data_field(i)?;
        if !self.has(i) {
            return Ok(b);
        }
        match b.split_last() {
            Some((0, text)) => Ok(text),
            _ => Err(bad(format!("text pointer {i} is not NUL-terminated"))),
        }
    }

    /// The list of structs pointer `i` points to; empty when null.
    pub fn struct_list(&self, i: usize) -> Result<StructList<'m, 'a>> {
        let depth = self.deeper()?;
        let empty = StructList {
            msg: self.msg,
            seg: self.seg,
            first: 0,
            len: 0,
            stride_bits: 0,
            data_bits: 0,
            ptr_count: 0,
            depth,
        };
        let Some((t, elem, count)) = self.list_target(i)? else { return Ok(empty) };
        if elem == ELEM_COMPOSITE {
            // `count` is the words of all elements; the tag word precedes them.
            self.msg.check_range(t.seg, t.at, count.saturating_add(1), "struct list")?;
            let tag = self.msg.word(t.seg, t.at)?;
            if tag & 3 != KIND_STRUCT {
                return Err(bad("composite list tag is not struct-shaped"));
            }
            let len = offset_of(tag);
            if len < 0 {
                return Err(bad("composite list has a negative element count"));
            }
            let (data_words, ptr_count) = (((tag >> 32) & 0xffff), (tag >> 48));
            let stride = data_words + ptr_count;
            if (len as u64).saturating_mul(stride) > count {
                return Err(bad(format!(
                    "composite list of {len} elements of {stride} words overruns its {count} words"
                )));
            }
            // Zero-sized elements still cost one word each to visit.
            self.msg.charge(count.max(len as u64).max(1))?;
            return Ok(StructList {
                first: (t.at + 1) * WORD * 8,
                len: len as usize,
                stride_bits: stride * 64,
                data_bits: data_words * 64,
                ptr_count: ptr_count as usize,
                seg: t.seg,
                ..empty
            });
        }
        // A list of primitives or pointers read as structs (allowed by the
        // spec's upgrade rules): each element is a struct's data section or
        // its single pointer.
        let (stride_bits, data_bits, ptr_count) = match elem {
            ELEM_VOID => (0, 0, 0),
            ELEM_BIT => return Err(bad("a bit list cannot be read as a struct list")),
            ELEM_POINTER => (64, 0, 1),
            e => {
                let bits = 8u64 << (e - ELEM_BYTE);
                (bits, bits, 0)
            }
        };
        let words = count.saturating_mul(stride_bits).div_ceil(64);
        self.msg.check_range(t.seg, t.at, words, "list")?;
        self.msg.charge(words.max(count).max(1))?;
        Ok(StructList {
            first: t.at * WORD * 8,
            len: count as usize,
            stride_bits,
            data_bits,
            ptr_count,
            seg: t.seg,
            ..empty
        })
    }
}

/// A list of structs (bounds already checked against its segment).
#[derive(Clone, Copy)]
pub struct StructList<'m, 'a> {
    msg: &'m Message<'a>,
    seg: usize,
    /// Bit offset of the first element in its segment.
    first: usize,
    len: usize,
    stride_bits: u64,
    data_bits: u64,
    ptr_count: usize,
    depth: u32,
}

impl<'m, 'a> StructList<'m, 'a> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Element `i` (None past the end).
    pub fn get(&self, i: usize) -> Option<StructReader<'m, 'a>> {
        if i >= self.len {
            return None;
        }
        // Inside the range checked when the list was read: whole bytes, since
        // stride and data sizes are multiples of 8 bits.
        let start = (self.first as u64 + i as u64 * self.stride_bits) / 8;
        let data_len = (self.data_bits / 8) as usize;
        Some(StructReader {
            msg: self.msg,
            seg: self.seg,
            data: start as usize,
            data_len,
            ptrs: (start as usize + data_len) / WORD,
            ptr_count: self.ptr_count,
            depth: self.depth,
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = StructReader<'m, 'a>> + '_ {
        (0..self.len).filter_map(|i| self.get(i))
    }
}
