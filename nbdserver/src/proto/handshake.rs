//! Handshake phase (fixed newstyle): the greeting, client flags, option
//! requests and option replies, as plain data. Parsing validates
//! everything the server later relies on, so the negotiation logic in
//! `server::negotiate` only sees well-formed options.

use super::consts::*;
use super::wire::{Put, Reader};

/// The 18 bytes the server sends first: NBDMAGIC, IHAVEOPT, handshake flags
/// (fixed newstyle; the 124 trailing zeroes of EXPORT_NAME may be skipped).
pub fn greeting() -> [u8; 18] {
    let mut g = [0u8; 18];
    g[..8].copy_from_slice(&NBD_MAGIC.to_be_bytes());
    g[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    g[16..].copy_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    g
}

/// A handshake violation after which the session cannot go on: the server
/// closes the connection (a "hard disconnect" in the spec's words).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("client flags {0:#x} include bits the server did not offer")]
    UnknownClientFlags(u32),
    #[error("option magic {0:#018x} is not IHAVEOPT")]
    BadOptionMagic(u64),
    #[error("option {code} carries {len} bytes, more than the {max} accepted")]
    OptionTooLong { code: u32, len: u32, max: u32 },
}

/// What the client answered to the greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientFlags {
    pub fixed_newstyle: bool,
    pub no_zeroes: bool,
}

impl ClientFlags {
    /// The server must drop the connection on any flag it did not offer.
    pub fn parse(raw: u32) -> Result<Self, HandshakeError> {
        if raw & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
            return Err(HandshakeError::UnknownClientFlags(raw));
        }
        Ok(ClientFlags {
            fixed_newstyle: raw & FLAG_C_FIXED_NEWSTYLE != 0,
            no_zeroes: raw & FLAG_C_NO_ZEROES != 0,
        })
    }
}

/// Largest option payload the server reads. Options carry at most a few
/// strings of ≤ 4096 bytes; anything larger is treated as abuse.
pub const MAX_OPTION_LEN: u32 = 64 * 1024;

/// The 16-byte header of every option request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    pub code: u32,
    pub len: u32,
}

impl OptionHeader {
    pub fn parse(buf: &[u8; OPTION_HEADER_LEN]) -> Result<Self, HandshakeError> {
        let mut r = Reader::new(buf);
        // A 16-byte array always holds 8 + 4 + 4 bytes; the defaults are
        // never used (and a zero magic would be refused anyway).
        let magic = r.u64().unwrap_or(0);
        let code = r.u32().unwrap_or(0);
        let len = r.u32().unwrap_or(0);
        if magic != IHAVEOPT {
            return Err(HandshakeError::BadOptionMagic(magic));
        }
        if len > MAX_OPTION_LEN {
            return Err(HandshakeError::OptionTooLong { code, len, max: MAX_OPTION_LEN });
        }
        Ok(OptionHeader { code, len })
    }

    pub fn encode(&self) -> [u8; OPTION_HEADER_LEN] {
        let mut b = [0u8; OPTION_HEADER_LEN];
        b[..8].copy_from_slice(&IHAVEOPT.to_be_bytes());
        b[8..12].copy_from_slice(&self.code.to_be_bytes());
        b[12..].copy_from_slice(&self.len.to_be_bytes());
        b
    }
}

/// `NBD_OPT_INFO` / `NBD_OPT_GO` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest {
    pub name: String,
    pub infos: Vec<u16>,
}

impl InfoRequest {
    pub fn wants(&self, info: u16) -> bool {
        self.infos.contains(&info)
    }
}

/// `NBD_OPT_LIST_META_CONTEXT` / `NBD_OPT_SET_META_CONTEXT` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaRequest {
    pub export: String,
    pub queries: Vec<String>,
}

/// A parsed option request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOption {
    ExportName(String),
    Abort,
    List,
    StartTls,
    Info(InfoRequest),
    Go(InfoRequest),
    StructuredReply,
    ListMetaContext(MetaRequest),
    SetMetaContext(MetaRequest),
    /// Any other code: answered `NBD_REP_ERR_UNSUP`.
    Unknown(u32),
}

/// An option the server refuses; answered with an option error reply and
/// the negotiation goes on (except for EXPORT_NAME, which cannot carry an
/// error and so ends the session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionError {
    pub reply: u32,
    pub message: String,
}

impl OptionError {
    pub fn invalid(message: impl Into<String>) -> Self {
        OptionError { reply: REP_ERR_INVALID, message: message.into() }
    }
}

fn string(bytes: &[u8], what: &str) -> Result<String, OptionError> {
    if bytes.len() > MAX_STRING {
        return Err(OptionError::invalid(format!("{what} is longer than {MAX_STRING} bytes")));
    }
    if bytes.contains(&0) {
        return Err(OptionError::invalid(format!("{what} contains a NUL byte")));
    }
    String::from_utf8(bytes.to_vec())
        .map_err(|_| OptionError::invalid(format!("{what} is not valid UTF-8")))
}

/// A u32 length followed by that many bytes of string.
fn prefixed_string(r: &mut Reader<'_>, what: &str) -> Result<String, OptionError> {
    let len = r.u32().ok_or_else(|| OptionError::invalid(format!("{what}: length truncated")))?;
    let bytes = usize::try_from(len)
        .ok()
        .and_then(|n| r.bytes(n))
        .ok_or_else(|| OptionError::invalid(format!("{what}: length {len} overruns the option")))?;
    string(bytes, what)
}

fn no_data(data: &[u8], name: &str) -> Result<(), OptionError> {
    if data.is_empty() {
        Ok(())
    } else {
        Err(OptionError::invalid(format!("{name} takes no data, got {} bytes", data.len())))
    }
}

fn parse_info(data: &[u8]) -> Result<InfoRequest, OptionError> {
    let mut r = Reader::new(data);
    let name = prefixed_string(&mut r, "export name")?;
    let n = r.u16().ok_or_else(|| OptionError::invalid("number of info requests truncated"))?;
    if r.remaining() != usize::from(n) * 2 {
        return Err(OptionError::invalid(format!(
            "{n} info requests announced, {} bytes follow",
            r.remaining()
        )));
    }
    let mut infos = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        // Length was checked above, so each u16 is present.
        infos.push(r.u16().ok_or_else(|| OptionError::invalid("info request truncated"))?);
    }
    Ok(InfoRequest { name, infos })
}

fn parse_meta(data: &[u8]) -> Result<MetaRequest, OptionError> {
    let mut r = Reader::new(data);
    let export = prefixed_string(&mut r, "export name")?;
    let n = r.u32().ok_or_else(|| OptionError::invalid("number of queries truncated"))?;
    // Each query needs at least its 4-byte length: bound n before allocating.
    if usize::try_from(n).map_or(true, |n| n > r.remaining() / 4) {
        return Err(OptionError::invalid(format!("{n} queries cannot fit in the option")));
    }
    let mut queries = Vec::with_capacity(n as usize);
    for _ in 0..n {
        queries.push(prefixed_string(&mut r, "meta context query")?);
    }
    if r.remaining() != 0 {
        return Err(OptionError::invalid(format!(
            "{} stray bytes after the queries",
            r.remaining()
        )));
    }
    Ok(MetaRequest { export, queries })
}

impl ClientOption {
    /// Parse the payload of option `code`. Pure: the caller has read exactly
    /// the header's length of bytes.
    pub fn parse(code: u32, data: &[u8]) -> Result<ClientOption, OptionError> {
        Ok(match code {
            OPT_EXPORT_NAME => ClientOption::ExportName(string(data, "export name")?),
            // The spec asks servers to ignore data sent with ABORT.
            OPT_ABORT => ClientOption::Abort,
            OPT_LIST => {
                no_data(data, "NBD_OPT_LIST")?;
                ClientOption::List
            }
            OPT_STARTTLS => {
                no_data(data, "NBD_OPT_STARTTLS")?;
                ClientOption::StartTls
            }
            OPT_INFO => ClientOption::Info(parse_info(data)?),
            OPT_GO => ClientOption::Go(parse_info(data)?),
            OPT_STRUCTURED_REPLY => {
                no_data(data, "NBD_OPT_STRUCTURED_REPLY")?;
                ClientOption::StructuredReply
            }
            OPT_LIST_META_CONTEXT => ClientOption::ListMetaContext(parse_meta(data)?),
            OPT_SET_META_CONTEXT => ClientOption::SetMetaContext(parse_meta(data)?),
            other => ClientOption::Unknown(other),
        })
    }
}

/// Block size constraints advertised with `NBD_INFO_BLOCK_SIZE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSizes {
    pub min: u32,
    pub preferred: u32,
    pub max: u32,
}

impl BlockSizes {
    /// The spec's rules: min a power of two ≤ 64 KiB; preferred a power of
    /// two ≥ max(min, 512); max a multiple of min and ≥ preferred.
    pub fn validate(&self) -> Result<(), String> {
        if !self.min.is_power_of_two() || self.min > 65536 {
            return Err(format!("minimum block size {} is not a power of two ≤ 65536", self.min));
        }
        if !self.preferred.is_power_of_two() || self.preferred < self.min.max(512) {
            return Err(format!(
                "preferred block size {} is not a power of two ≥ max(min, 512)",
                self.preferred
            ));
        }
        if self.max % self.min != 0 || self.max < self.preferred {
            return Err(format!(
                "maximum block size {} is not a multiple of {} and ≥ {}",
                self.max, self.min, self.preferred
            ));
        }
        Ok(())
    }
}

// ---- Option replies ----

/// One option reply: magic, option, reply type, length, data.
pub fn option_reply(option: u32, reply: u32, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(20 + data.len());
    v.put_u64(OPTION_REPLY_MAGIC);
    v.put_u32(option);
    v.put_u32(reply);
    // Every payload we build is bounded by strings of ≤ 4096 bytes.
    v.put_u32(u32::try_from(data.len()).unwrap_or(u32::MAX));
    v.extend_from_slice(data);
    v
}

pub fn ack(option: u32) -> Vec<u8> {
    option_reply(option, REP_ACK, &[])
}

/// An error reply; the message is cut to the protocol's string limit.
pub fn error_reply(option: u32, err: &OptionError) -> Vec<u8> {
    option_reply(option, err.reply, truncate(&err.message).as_bytes())
}

fn truncate(s: &str) -> &str {
    if s.len() <= MAX_STRING {
        return s;
    }
    let mut end = MAX_STRING;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `NBD_REP_SERVER` for `NBD_OPT_LIST`: the name, then a human description.
pub fn rep_server(name: &str, description: &str) -> Vec<u8> {
    let mut d = Vec::new();
    d.put_u32(name.len() as u32);
    d.extend_from_slice(name.as_bytes());
    d.extend_from_slice(truncate(description).as_bytes());
    option_reply(OPT_LIST, REP_SERVER, &d)
}

pub fn rep_info_export(option: u32, size: u64, flags: u16) -> Vec<u8> {
    let mut d = Vec::with_capacity(12);
    d.put_u16(INFO_EXPORT);
    d.put_u64(size);
    d.put_u16(flags);
    option_reply(option, REP_INFO, &d)
}

pub fn rep_info_string(option: u32, info: u16, s: &str) -> Vec<u8> {
    let mut d = Vec::new();
    d.put_u16(info);
    d.extend_from_slice(truncate(s).as_bytes());
    option_reply(option, REP_INFO, &d)
}

pub fn rep_info_block_size(option: u32, b: BlockSizes) -> Vec<u8> {
    let mut d = Vec::with_capacity(14);
    d.put_u16(INFO_BLOCK_SIZE);
    d.put_u32(b.min);
    d.put_u32(b.preferred);
    d.put_u32(b.max);
    option_reply(option, REP_INFO, &d)
}

/// `NBD_REP_META_CONTEXT` for the context called `name`
/// ([`MetaContext::name`](super::meta::MetaContext::name)); LIST replies
/// use id 0 as the spec asks.
pub fn rep_meta_context(option: u32, id: u32, name: &str) -> Vec<u8> {
    let mut d = Vec::new();
    d.put_u32(id);
    d.extend_from_slice(name.as_bytes());
    option_reply(option, REP_META_CONTEXT, &d)
}

/// The answer to `NBD_OPT_EXPORT_NAME`: size, flags and, unless the client
/// negotiated NO_ZEROES, 124 reserved zero bytes.
pub fn export_name_reply(size: u64, flags: u16, no_zeroes: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(134);
    v.put_u64(size);
    v.put_u16(flags);
    if !no_zeroes {
        v.resize(v.len() + 124, 0);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info_payload(name: &str, infos: &[u16]) -> Vec<u8> {
        let mut d = Vec::new();
        d.put_u32(name.len() as u32);
        d.extend_from_slice(name.as_bytes());
        d.put_u16(infos.len() as u16);
        for i in infos {
            d.put_u16(*i);
        }
        d
    }

    #[test]
    fn greeting_bytes() {
        let g = greeting();
        assert_eq!(&g[..8], b"NBDMAGIC");
        assert_eq!(&g[8..16], b"IHAVEOPT");
        assert_eq!(u16::from_be_bytes([g[16], g[17]]), 3);
    }

    #[test]
    fn client_flags() {
        assert_eq!(
            ClientFlags::parse(3).unwrap(),
            ClientFlags { fixed_newstyle: true, no_zeroes: true }
        );
        assert_eq!(ClientFlags::parse(4), Err(HandshakeError::UnknownClientFlags(4)));
    }

    #[test]
    fn option_header_checks_magic_and_length() {
        let h = OptionHeader { code: OPT_GO, len: 10 };
        assert_eq!(OptionHeader::parse(&h.encode()).unwrap(), h);
        let mut bad = h.encode();
        bad[0] ^= 1;
        assert!(matches!(OptionHeader::parse(&bad), Err(HandshakeError::BadOptionMagic(_))));
        let long = OptionHeader { code: OPT_GO, len: MAX_OPTION_LEN + 1 }.encode();
        assert!(matches!(OptionHeader::parse(&long), Err(HandshakeError::OptionTooLong { .. })));
    }

    #[test]
    fn go_payload() {
        let d = info_payload("disk", &[INFO_BLOCK_SIZE, INFO_NAME]);
        let ClientOption::Go(req) = ClientOption::parse(OPT_GO, &d).unwrap() else { panic!() };
        assert_eq!(req.name, "disk");
        assert!(req.wants(INFO_NAME) && !req.wants(INFO_DESCRIPTION));
        // Count that disagrees with the bytes that follow.
        let mut bad = d.clone();
        bad.push(0);
        assert_eq!(ClientOption::parse(OPT_GO, &bad).unwrap_err().reply, REP_ERR_INVALID);
        // Name length overrunning the option.
        let mut over = Vec::new();
        over.put_u32(100);
        over.extend_from_slice(b"ab");
        assert!(ClientOption::parse(OPT_INFO, &over).is_err());
    }

    #[test]
    fn meta_payload() {
        let mut d = Vec::new();
        d.put_u32(4);
        d.extend_from_slice(b"disk");
        d.put_u32(2);
        for q in ["base:allocation", "zosfs:"] {
            d.put_u32(q.len() as u32);
            d.extend_from_slice(q.as_bytes());
        }
        let ClientOption::SetMetaContext(m) =
            ClientOption::parse(OPT_SET_META_CONTEXT, &d).unwrap()
        else {
            panic!()
        };
        assert_eq!(m.export, "disk");
        assert_eq!(m.queries, vec!["base:allocation".to_string(), "zosfs:".to_string()]);
        // A huge query count is refused before any allocation.
        let mut huge = Vec::new();
        huge.put_u32(0);
        huge.put_u32(u32::MAX);
        assert!(ClientOption::parse(OPT_LIST_META_CONTEXT, &huge).is_err());
    }

    #[test]
    fn strings_are_checked() {
        assert!(ClientOption::parse(OPT_EXPORT_NAME, b"a\0b").is_err());
        assert!(ClientOption::parse(OPT_EXPORT_NAME, &[0xff, 0xfe]).is_err());
        assert!(ClientOption::parse(OPT_EXPORT_NAME, &vec![b'a'; MAX_STRING + 1]).is_err());
        assert_eq!(
            ClientOption::parse(OPT_EXPORT_NAME, b"").unwrap(),
            ClientOption::ExportName(String::new())
        );
        assert!(ClientOption::parse(OPT_LIST, b"x").is_err());
        assert_eq!(ClientOption::parse(99, b"whatever").unwrap(), ClientOption::Unknown(99));
    }

    #[test]
    fn block_sizes_rules() {
        assert!(BlockSizes { min: 1, preferred: 1 << 20, max: 32 << 20 }.validate().is_ok());
        assert!(BlockSizes { min: 3, preferred: 4096, max: 4096 }.validate().is_err());
        assert!(BlockSizes { min: 1, preferred: 256, max: 4096 }.validate().is_err());
        assert!(BlockSizes { min: 512, preferred: 4096, max: 1000 }.validate().is_err());
    }

    #[test]
    fn replies_encode() {
        let r = rep_info_export(OPT_GO, 1 << 30, 0x1234);
        assert_eq!(r.len(), 20 + 12);
        assert_eq!(&r[..8], &OPTION_REPLY_MAGIC.to_be_bytes());
        assert_eq!(export_name_reply(1, 1, false).len(), 134);
        assert_eq!(export_name_reply(1, 1, true).len(), 10);
        let long = OptionError::invalid("é".repeat(3000));
        let e = error_reply(OPT_GO, &long);
        assert!(e.len() - 20 <= MAX_STRING);
    }
}
