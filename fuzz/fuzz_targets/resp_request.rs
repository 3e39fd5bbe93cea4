#![no_main]
//! The RESP request parser of `chunkstore serve` (store::server::wire) on
//! hostile bytes. The first input byte picks how the rest is cut into
//! reads (0: one read; n: pieces of n bytes). Besides "no panic": every
//! request keeps the limits and re-encodes to itself; the cut changes
//! neither the requests nor the error (except that a header line can only
//! be seen as too long in pieces); an error is sticky.

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use zosfs_store::server::wire::{MAX_ARG, MAX_ARGS, MAX_REQUEST, Parser, WireError};

/// A request as a client would send it.
fn encode(req: &[Bytes]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", req.len()).into_bytes();
    for a in req {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn check(req: &[Bytes]) {
    assert!(!req.is_empty() && req.len() <= MAX_ARGS, "argument count");
    assert!(req.iter().all(|a| a.len() <= MAX_ARG), "argument over MAX_ARG");
    assert!(req.iter().map(Bytes::len).sum::<usize>() <= MAX_REQUEST, "request over MAX_REQUEST");
    let mut again = BytesMut::from(&encode(req)[..]);
    assert_eq!(Parser::new().parse(&mut again), Ok(Some(req.to_vec())), "re-encoding");
    assert!(again.is_empty());
}

/// Parse `pieces` fed one after the other: the requests and the error.
fn run<'a>(pieces: impl Iterator<Item = &'a [u8]>) -> (Vec<Vec<Bytes>>, Option<WireError>) {
    let mut p = Parser::new();
    let mut buf = BytesMut::new();
    let mut reqs = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match p.parse(&mut buf) {
                Ok(Some(r)) => {
                    check(&r);
                    reqs.push(r);
                }
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(p.parse(&mut buf), Err(e), "errors are sticky");
                    return (reqs, Some(e));
                }
            }
        }
    }
    (reqs, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else { return };
    let (whole_reqs, whole_err) = run(std::iter::once(rest));
    if cut == 0 {
        return;
    }
    let (reqs, err) = run(rest.chunks(cut as usize));
    assert_eq!(reqs, whole_reqs, "the cut changed the requests");
    if err != whole_err {
        assert!(
            err == Some(WireError::HeaderTooLong) || whole_err == Some(WireError::HeaderTooLong),
            "the cut changed the error: {err:?} vs {whole_err:?}"
        );
    }
});
