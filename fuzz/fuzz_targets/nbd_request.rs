#![no_main]
//! NBD wire parsing (nbdserver::proto) on hostile bytes: transmission
//! request headers validated against a session the input also chooses,
//! option headers and option payloads. Besides "no panic", the verdicts
//! must keep the protocol's promises: a command that runs lies inside the
//! export and within the payload limit, a header round-trips.

use libfuzzer_sys::fuzz_target;
use zosfs_nbdserver::proto::consts::{OPTION_HEADER_LEN, REQUEST_HEADER_LEN, REQUEST_MAGIC};
use zosfs_nbdserver::proto::handshake::OptionHeader;
use zosfs_nbdserver::proto::{
    ClientOption, Command, MetaContext, RequestHeader, Session, Verdict, parse_request,
};

fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, rest) = data.split_at_checked(n)?;
    *data = rest;
    Some(head)
}

fn session(b: &[u8]) -> Session {
    let size = u64::from_le_bytes(b[0..8].try_into().expect("8 bytes"));
    Session {
        size,
        flags: u16::from_le_bytes([b[8], b[9]]),
        structured: b[10] & 1 != 0,
        contexts: if b[10] & 2 != 0 { vec![MetaContext::Allocation] } else { vec![] },
        max_payload: u32::from_le_bytes(b[11..15].try_into().expect("4 bytes")),
    }
}

/// What a command that runs must satisfy.
fn check(c: &Command, s: &Session) {
    let span = match *c {
        Command::Read { offset, length, .. } => {
            assert!(length <= s.max_payload, "READ over the payload limit");
            Some((offset, length))
        }
        Command::Write { offset, length, .. } => {
            assert!(length <= s.max_payload, "WRITE over the payload limit");
            assert!(!s.read_only(), "WRITE on a read-only export");
            Some((offset, length))
        }
        Command::Trim { offset, length, .. } | Command::WriteZeroes { offset, length, .. } => {
            assert!(!s.read_only(), "a write command on a read-only export");
            Some((offset, length))
        }
        Command::Cache { offset, length } | Command::BlockStatus { offset, length, .. } => {
            Some((offset, length))
        }
        Command::Disconnect | Command::Flush => None,
    };
    if let Some((offset, length)) = span {
        let end = offset.checked_add(u64::from(length));
        assert!(end.is_some_and(|e| e <= s.size), "a command past the end of the export");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut data = data;
    let Some(sess) = take(&mut data, 15) else { return };
    let s = session(sess);
    // Request headers; the magic is forced on every other one so that the
    // validation behind it is reached.
    while let Some(raw) = take(&mut data, REQUEST_HEADER_LEN) {
        let mut buf: [u8; REQUEST_HEADER_LEN] = raw.try_into().expect("header length");
        if buf[0] & 1 == 0 {
            buf[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        }
        let Ok((h, verdict)) = parse_request(&buf, &s) else { continue };
        assert_eq!(RequestHeader::parse(&h.encode()), Ok(h), "header round trip");
        match verdict {
            Verdict::Run(c) => check(&c, &s),
            Verdict::Reject(r) => {
                assert!(r.discard == 0 || r.discard == h.length, "discard is the payload");
                assert!(!r.message.is_empty());
            }
        }
        if buf[1] == 0xff {
            break;
        }
    }
    // A header cut short is an error, never a panic.
    let _ = parse_request(&data[..data.len().min(REQUEST_HEADER_LEN - 1)], &s);
    // What is left: option headers and payloads.
    if let Some(raw) = take(&mut data, OPTION_HEADER_LEN) {
        let buf: [u8; OPTION_HEADER_LEN] = raw.try_into().expect("option header length");
        if let Ok(h) = OptionHeader::parse(&buf) {
            assert_eq!(OptionHeader::parse(&h.encode()).ok(), Some(h), "option round trip");
        }
    }
    while let Some(code) = take(&mut data, 4) {
        let code = u32::from_be_bytes(code.try_into().expect("4 bytes"));
        let len = take(&mut data, 1).map_or(0, |n| usize::from(n[0])).min(data.len());
        let payload = take(&mut data, len).unwrap_or(&[]);
        let _ = ClientOption::parse(code, payload);
    }
});
