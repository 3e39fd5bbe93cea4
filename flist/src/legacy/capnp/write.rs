//! Building single-segment capnp messages (used to write 0-fs flists and
//! the fixtures of the tests). Objects are laid out in allocation order;
//! pointers always point forward or backward inside the one segment.

use super::WORD;

/// A struct allocated in a [`Builder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StructAt {
    /// Word index of its data section.
    at: usize,
    data_words: u16,
    ptr_count: u16,
}

/// A message under construction. Word 0 is the root pointer.
#[derive(Debug)]
pub struct Builder {
    seg: Vec<u8>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

/// Struct pointer bits for a data/pointer layout.
fn shape(data_words: u16, ptr_count: u16) -> u64 {
    (u64::from(data_words) << 32) | (u64::from(ptr_count) << 48)
}

impl Builder {
    pub fn new() -> Builder {
        Builder { seg: vec![0; WORD] }
    }

    fn words(&self) -> usize {
        self.seg.len() / WORD
    }

    fn alloc(&mut self, words: usize) -> usize {
        let at = self.words();
        self.seg.resize(self.seg.len() + words * WORD, 0);
        at
    }

    fn put_word(&mut self, at: usize, v: u64) {
        self.seg[at * WORD..at * WORD + WORD].copy_from_slice(&v.to_le_bytes());
    }

    /// A pointer word at `from` to an object at `to` (kind bits included in `bits`).
    fn put_pointer(&mut self, from: usize, to: usize, bits: u64) {
        let offset = to as i64 - (from as i64 + 1);
        let off = ((offset as i32) << 2) as u32 as u64;
        self.put_word(from, off | bits);
    }

    /// Allocate a zeroed struct.
    pub fn new_struct(&mut self, data_words: u16, ptr_count: u16) -> StructAt {
        let at = self.alloc(usize::from(data_words) + usize::from(ptr_count));
        StructAt { at, data_words, ptr_count }
    }

    pub fn set_root(&mut self, s: StructAt) {
        self.put_pointer(0, s.at, shape(s.data_words, s.ptr_count));
    }

    fn data_slot(&mut self, s: StructAt, byte: usize, n: usize) -> &mut [u8] {
        assert!(byte + n <= usize::from(s.data_words) * WORD, "field outside the data section");
        let start = s.at * WORD + byte;
        &mut self.seg[start..start + n]
    }

    pub fn set_u16(&mut self, s: StructAt, byte: usize, v: u16) {
        self.data_slot(s, byte, 2).copy_from_slice(&v.to_le_bytes());
    }

    pub fn set_u32(&mut self, s: StructAt, byte: usize, v: u32) {
        self.data_slot(s, byte, 4).copy_from_slice(&v.to_le_bytes());
    }

    pub fn set_u64(&mut self, s: StructAt, byte: usize, v: u64) {
        self.data_slot(s, byte, 8).copy_from_slice(&v.to_le_bytes());
    }

    fn ptr_slot(s: StructAt, i: usize) -> usize {
        assert!(i < usize::from(s.ptr_count), "pointer outside the pointer section");
        s.at + usize::from(s.data_words) + i
    }

    /// Point pointer `i` of `s` at `child`.
    pub fn set_struct(&mut self, s: StructAt, i: usize, child: StructAt) {
        let from = Self::ptr_slot(s, i);
        self.put_pointer(from, child.at, shape(child.data_words, child.ptr_count));
    }

    /// Store a raw pointer word (tests build hostile messages with it).
    pub fn set_raw_pointer(&mut self, s: StructAt, i: usize, raw: u64) {
        let from = Self::ptr_slot(s, i);
        self.put_word(from, raw);
    }

    fn set_bytes(&mut self, s: StructAt, i: usize, bytes: &[u8], nul: bool) {
        let from = Self::ptr_slot(s, i);
        let count = bytes.len() + usize::from(nul);
        let at = self.alloc(count.div_ceil(WORD));
        self.seg[at * WORD..at * WORD + bytes.len()].copy_from_slice(bytes);
        // Element size code 2 (byte) in bits 32–34, count in bits 35–63.
        self.put_pointer(from, at, 1 | (2 << 32) | ((count as u64) << 35));
    }

    /// `Text` field (a NUL is appended); an empty text is still written, as
    /// capnp writers do for set fields.
    pub fn set_text(&mut self, s: StructAt, i: usize, text: &[u8]) {
        self.set_bytes(s, i, text, true);
    }

    /// `Data` field.
    pub fn set_data(&mut self, s: StructAt, i: usize, data: &[u8]) {
        self.set_bytes(s, i, data, false);
    }

    /// A composite list of `len` zeroed structs at pointer `i` of `s`.
    pub fn new_struct_list(
        &mut self,
        s: StructAt,
        i: usize,
        len: usize,
        data_words: u16,
        ptr_count: u16,
    ) -> Vec<StructAt> {
        let from = Self::ptr_slot(s, i);
        let stride = usize::from(data_words) + usize::from(ptr_count);
        let tag = self.alloc(1 + len * stride);
        // The tag is struct-shaped with the element count in the offset field.
        self.put_word(tag, ((len as u64) << 2) | shape(data_words, ptr_count));
        self.put_pointer(from, tag, 1 | (7 << 32) | (((len * stride) as u64) << 35));
        (0..len).map(|k| StructAt { at: tag + 1 + k * stride, data_words, ptr_count }).collect()
    }

    /// The message in stream framing (one segment).
    pub fn finish(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(WORD + self.seg.len());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(self.words() as u32).to_le_bytes());
        out.extend_from_slice(&self.seg);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Limits, Message};
    use super::*;

    fn parse(b: &[u8]) -> crate::Result<Message<'_>> {
        Message::parse(b, Limits::default())
    }

    #[test]
    fn round_trip_fields_text_data_lists() {
        let mut b = Builder::new();
        let root = b.new_struct(2, 3);
        b.set_root(root);
        b.set_u16(root, 0, 0xbeef);
        b.set_u32(root, 4, 7);
        b.set_u64(root, 8, u64::MAX - 1);
        b.set_text(root, 0, b"name\xff");
        let items = b.new_struct_list(root, 1, 3, 1, 1);
        for (k, it) in items.iter().enumerate() {
            b.set_u64(*it, 0, k as u64 * 10);
            b.set_data(*it, 0, &vec![k as u8; k * 5]);
        }
        let child = b.new_struct(0, 1);
        b.set_struct(root, 2, child);
        b.set_text(child, 0, b"");
        let bytes = b.finish();

        let m = parse(&bytes).unwrap();
        let r = m.root().unwrap();
        assert_eq!((r.u16(0), r.u32(4), r.u64(8)), (0xbeef, 7, u64::MAX - 1));
        assert_eq!(r.u64(16), 0, "past the data section reads as zero");
        assert_eq!(r.text_field(0).unwrap(), b"name\xff");
        let l = r.struct_list(1).unwrap();
        assert_eq!(l.len(), 3);
        for (k, it) in l.iter().enumerate() {
            assert_eq!(it.u64(0), k as u64 * 10);
            assert_eq!(it.data_field(0).unwrap(), vec![k as u8; k * 5].as_slice());
        }
        let c = r.struct_field(2).unwrap().unwrap();
        assert_eq!(c.text_field(0).unwrap(), b"");
        assert!(r.struct_field(5).unwrap().is_none(), "past the pointer section is null");
        assert_eq!(r.text_field(7).unwrap(), b"");
    }

    /// A message whose root struct has one pointer word `raw` (data 0).
    fn with_pointer(raw: u64, extra_words: usize) -> Vec<u8> {
        let mut b = Builder::new();
        let root = b.new_struct(0, 1);
        b.set_root(root);
        b.set_raw_pointer(root, 0, raw);
        b.alloc(extra_words);
        b.finish()
    }

    fn err_of(r: crate::Result<impl Sized>) -> String {
        match r {
            Ok(_) => panic!("hostile message accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn framing_errors_are_clear() {
        assert!(err_of(parse(b"")).contains("segment table"));
        assert!(err_of(parse(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0])).contains("segments"));
        // One segment claiming 2^32-1 words.
        let mut m = vec![0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        m.extend_from_slice(&[0; 16]);
        assert!(err_of(parse(&m)).contains("past the end"));
        // Empty first segment.
        assert!(err_of(parse(&[0; 8]).and_then(|m| m.root().map(|_| ()))).contains("root"));
    }

    #[test]
    fn out_of_bounds_pointers_are_refused() {
        // Struct pointer far past the segment end.
        let raw = (1000u64 << 2) | shape(1, 0);
        let bytes = with_pointer(raw, 0);
        let m = parse(&bytes).unwrap();
        let r = m.root().unwrap();
        assert!(err_of(r.struct_field(0)).contains("outside"));
        // Negative offset before the segment start.
        let raw = ((-50i32 << 2) as u32 as u64) | shape(1, 0);
        let bytes = with_pointer(raw, 0);
        let m = parse(&bytes).unwrap();
        assert!(err_of(m.root().unwrap().struct_field(0)).contains("outside"));
        // A struct whose size overruns the segment.
        let raw = shape(0xffff, 0xffff);
        let bytes = with_pointer(raw, 2);
        let m = parse(&bytes).unwrap();
        assert!(err_of(m.root().unwrap().struct_field(0)).contains("overruns"));
        // A byte list claiming 2^29-1 bytes.
        let raw = 1 | (2 << 32) | (((1u64 << 29) - 1) << 35);
        let bytes = with_pointer(raw, 1);
        let m = parse(&bytes).unwrap();
        assert!(err_of(m.root().unwrap().data_field(0)).contains("overruns"));
        // Capability pointer.
        let bytes = with_pointer(3, 0);
        let m = parse(&bytes).unwrap();
        assert!(err_of(m.root().unwrap().struct_field(0)).contains("capability"));
        // Far pointer to a segment that does not exist.
        let bytes = with_pointer(2 | (7u64 << 32), 0);
        let m = parse(&bytes).unwrap();
        assert!(err_of(m.root().unwrap().struct_field(0)).contains("missing segment"));
        // Wrong kind: a list where a struct is expected, and back.
        let bytes = with_pointer(1 | (2 << 32) | (3 << 35), 1);
        let m = parse(&bytes).unwrap();
        assert!(err_of(m.root().unwrap().struct_field(0)).contains("struct"));
        let bytes = with_pointer(shape(1, 0), 1);
        let m = parse(&bytes).unwrap();
        assert!(err_of(m.root().unwrap().data_field(0)).contains("list"));
        // Text without its NUL: the list's word (the last one) holds "xxx…".
        let mut bytes = with_pointer(1 | (2 << 32) | (3 << 35), 1);
        let n = bytes.len();
        bytes[n - 8..].fill(b'x');
        let m = parse(&bytes).unwrap();
        assert!(err_of(m.root().unwrap().text_field(0)).contains("NUL"));
    }

    #[test]
    fn huge_lists_cost_their_size_not_memory() {
        // Composite list: tag claims 2^29-1 zero-sized elements in 0 words.
        let mut b = Builder::new();
        let root = b.new_struct(0, 1);
        b.set_root(root);
        let tag = b.alloc(1);
        b.put_word(tag, ((1u64 << 29) - 1) << 2);
        let from = Builder::ptr_slot(root, 0);
        b.put_pointer(from, tag, 1 | (7 << 32));
        let bytes = b.finish();
        let m = parse(&bytes).unwrap();
        assert!(err_of(m.root().unwrap().struct_list(0)).contains("traversal limit"));
        // Void list of 2^29-1 elements.
        let bytes = with_pointer(1 | (((1u64 << 29) - 1) << 35), 0);
        let m = parse(&bytes).unwrap();
        assert!(err_of(m.root().unwrap().struct_list(0)).contains("traversal limit"));
        // Composite list whose elements overrun the words it claims.
        let mut b = Builder::new();
        let root = b.new_struct(0, 1);
        b.set_root(root);
        let tag = b.alloc(3);
        b.put_word(tag, (100u64 << 2) | shape(1, 0));
        let from = Builder::ptr_slot(root, 0);
        b.put_pointer(from, tag, 1 | (7 << 32) | (2 << 35));
        let bytes = b.finish();
        let m = parse(&bytes).unwrap();
        assert!(err_of(m.root().unwrap().struct_list(0)).contains("overruns"));
    }

    #[test]
    fn revisiting_the_same_object_exhausts_the_budget() {
        // 64 pointers all aimed at one struct: reading them all is bounded by
        // the traversal budget, not by the number of pointer words.
        let mut b = Builder::new();
        let root = b.new_struct(0, 64);
        b.set_root(root);
        let big = b.new_struct(200, 0);
        for i in 0..64 {
            b.set_struct(root, i, big);
        }
        let bytes = b.finish();
        let m = parse(&bytes).unwrap();
        let r = m.root().unwrap();
        let results: Vec<_> = (0..64).map(|i| r.struct_field(i).map(|_| ())).collect();
        assert!(results.iter().any(|x| x.is_err()), "amplification must hit the budget");
    }

    #[test]
    fn far_pointers_single_and_double() {
        // Segment 0: root far pointer; segment 1: landing pad + struct.
        let seg0: [u64; 1] = [2 | (1u64 << 32)]; // single far to seg 1, pad at word 0
        let seg1: [u64; 2] = [shape(1, 0), 0x1234]; // pad: struct at offset 0, data 1 word
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&2u32.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        for w in seg0.iter().chain(&seg1) {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
        let m = parse(&bytes).unwrap();
        assert_eq!(m.root().unwrap().u64(0), 0x1234);

        // Double far: seg 0 root → pad in seg 1 (far to seg 2 word 0 + tag).
        let seg0: [u64; 1] = [2 | 4 | (1u64 << 32)];
        let seg1: [u64; 2] = [2 | (2u64 << 32), shape(1, 0)];
        let seg2: [u64; 1] = [0x5678];
        let mut bytes = Vec::new();
        for v in [2u32, 1, 2, 1] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        for w in seg0.iter().chain(&seg1).chain(&seg2) {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
        let m = parse(&bytes).unwrap();
        assert_eq!(m.root().unwrap().u64(0), 0x5678);

        // A far pointer whose landing pad is itself far is refused.
        let seg0: [u64; 1] = [2 | (1u64 << 32)];
        let seg1: [u64; 1] = [2 | (1u64 << 32)];
        let mut bytes = Vec::new();
        for v in [1u32, 1, 1, 0] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        for w in seg0.iter().chain(&seg1) {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
        let m = parse(&bytes).unwrap();
        assert!(err_of(m.root()).contains("landing pad"));
    }

    #[test]
    fn deep_nesting_is_capped() {
        // A chain of 100 structs each pointing to the next.
        let mut b = Builder::new();
        let mut prev = b.new_struct(0, 1);
        b.set_root(prev);
        for _ in 0..100 {
            let next = b.new_struct(0, 1);
            b.set_struct(prev, 0, next);
            prev = next;
        }
        let bytes = b.finish();
        let m = parse(&bytes).unwrap();
        let mut cur = m.root().unwrap();
        let mut err = None;
        for _ in 0..100 {
            match cur.struct_field(0) {
                Ok(Some(n)) => cur = n,
                Ok(None) => break,
                Err(e) => {
                    err = Some(e.to_string());
                    break;
                }
            }
        }
        assert!(err.expect("depth must be capped").contains("nesting"));
    }
}
