//! The 0-db client against replies recorded from a real 0-db v2.0.7
//! (tests/fixtures/zdb/transcript.jsonl), replayed by a scripted peer.
//! Step numbers below are the fixture's `n`.

use anyhow::Result;
use bytes::Bytes;
use zosfs_store::chunk::MAX_BLOB;
use zosfs_store::{ChunkId, ErrorKind};
use zosfs_tests::router::replay::{Expect, ReplayPeer, Transcript};
use zosfs_tests::router::{open, quick_opts};

use Expect::{Exact, Hangup, Shape};

/// The 32-byte binary key of steps 48/49 (bytes 0..31, with CR and LF).
fn binary_key() -> ChunkId {
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = i as u8;
    }
    ChunkId(k)
}

const SET: fn(u32) -> Expect = |reply| Shape { cmd: "SET", argc: 3, reply };
const GET: fn(u32) -> Expect = |reply| Shape { cmd: "GET", argc: 2, reply };

/// AUTH SECURE CHALLENGE (286, nonce b8be68e093a6d53a) then
/// `SELECT ns1 SECURE sha1("b8be68e093a6d53a:nspw")` (288): only a correct
/// hash matches the recorded request byte for byte.
const SECURE_NS1: [Expect; 2] = [Exact(286), Exact(288)];

#[tokio::test]
async fn data_replies_as_recorded() -> Result<()> {
    let t = Transcript::load()?;
    let mut script = SECURE_NS1.to_vec();
    script.extend([
        Exact(1),                                    // PING probe at open
        Exact(48),                                   // SET <binary key> binval -> the key
        SET(22),                                     // identical re-SET -> nil, still success
        Exact(49),                                   // GET <binary key> -> binval
        GET(25),                                     // GET missing -> nil
        Shape { cmd: "EXISTS", argc: 2, reply: 26 }, // :1
        Shape { cmd: "EXISTS", argc: 2, reply: 27 }, // :0
        Shape { cmd: "DEL", argc: 2, reply: 36 },    // +OK
        Shape { cmd: "DEL", argc: 2, reply: 37 },    // -Key not found
    ]);
    let peer = ReplayPeer::start(&t, &script)?;
    let url = format!("zdb://:nspw@127.0.0.1:{}/ns1", peer.port);
    let s = open(&url, &quick_opts()).await?;
    let id = binary_key();
    let blob = Bytes::from_static(b"binval");
    s.put(&id, blob.clone()).await?;
    s.put(&id, blob.clone()).await?;
    assert_eq!(s.get(&id).await?.unwrap(), blob);
    assert_eq!(s.get(&ChunkId([9; 32])).await?, None);
    assert!(s.has(&id).await?);
    assert!(!s.has(&ChunkId([9; 32])).await?);
    assert!(s.delete(&id).await?);
    assert!(!s.delete(&id).await?);
    peer.finish()?;
    Ok(())
}

#[tokio::test]
async fn wrong_password_with_secure_select() -> Result<()> {
    let t = Transcript::load()?;
    // The real server answered a wrong SECURE hash with -Access denied (287).
    let script = [Exact(286), Shape { cmd: "SELECT", argc: 4, reply: 287 }];
    let peer = ReplayPeer::start(&t, &script)?;
    let url = format!("zdb://:bad-secret@127.0.0.1:{}/ns1", peer.port);
    let e = open(&url, &quick_opts()).await.err().expect("wrong password must fail");
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    let msg = e.chain();
    assert!(msg.contains(&format!("zdb://127.0.0.1:{}/ns1", peer.port)), "{msg}");
    assert!(msg.contains("wrong password"), "{msg}");
    assert!(!msg.contains("bad-secret"), "password leaked: {msg}");
    // Not retried: the peer saw exactly the two scripted requests.
    peer.finish()?;
    Ok(())
}

#[tokio::test]
async fn plain_select_when_auth_is_disabled() -> Result<()> {
    let t = Transcript::load()?;
    // A server without --admin answers every AUTH with -Authentication
    // disabled (7); the client then uses SELECT ns password (118: +OK), as
    // the URL allows it (plaintext-auth=1).
    let script = [
        Shape { cmd: "AUTH", argc: 3, reply: 7 },
        Exact(118),
        Exact(1),
        SET(150), // public namespace opened read-only
        SET(170), // namespace full
        GET(178), // namespace frozen
    ];
    let peer = ReplayPeer::start(&t, &script)?;
    let url = format!("zdb://:s3cret@127.0.0.1:{}/imgs?plaintext-auth=1", peer.port);
    let s = open(&url, &quick_opts()).await?;
    let shown = format!("zdb://127.0.0.1:{}/imgs", peer.port);
    let e = s.put(&ChunkId([1; 32]), Bytes::from_static(b"v")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(e.to_string().contains("read-only") && e.to_string().contains(&shown), "{e}");
    let e = s.put(&ChunkId([2; 32]), Bytes::from_static(b"v")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace, "{e}");
    assert!(e.to_string().contains("full") && e.to_string().contains(&shown), "{e}");
    let e = s.get(&ChunkId([2; 32])).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(!e.chain().contains("s3cret"));
    peer.finish()?;
    Ok(())
}

#[tokio::test]
async fn no_plaintext_password_unless_the_url_allows_it() -> Result<()> {
    let t = Transcript::load()?;
    // -Authentication disabled (7) to the challenge: without plaintext-auth=1
    // the client stops there; the password never goes out.
    let script = [Shape { cmd: "AUTH", argc: 3, reply: 7 }];
    let peer = ReplayPeer::start(&t, &script)?;
    let url = format!("zdb://:s3cret@127.0.0.1:{}/imgs", peer.port);
    let e = open(&url, &quick_opts()).await.err().expect("must refuse plaintext auth");
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    let msg = e.chain();
    assert!(msg.contains("plaintext-auth=1") && msg.contains("no secure authentication"), "{msg}");
    assert!(!msg.contains("s3cret"), "password leaked: {msg}");
    peer.finish()?;
    Ok(())
}

#[tokio::test]
async fn plain_wrong_password_private_and_missing_namespace() -> Result<()> {
    let t = Transcript::load()?;
    let cases: [(&str, Vec<Expect>, ErrorKind, &str); 3] = [
        (
            "zdb://:wrongpw@127.0.0.1:{}/imgs?plaintext-auth=1",
            vec![Shape { cmd: "AUTH", argc: 3, reply: 7 }, Exact(117)],
            ErrorKind::PermissionDenied,
            "wrong password",
        ),
        (
            "zdb://127.0.0.1:{}/imgs",
            vec![Exact(116)],
            ErrorKind::PermissionDenied,
            "needs a password",
        ),
        ("zdb://127.0.0.1:{}/missing-ns", vec![Exact(131)], ErrorKind::NotFound, "does not exist"),
    ];
    for (url, script, kind, want) in cases {
        let peer = ReplayPeer::start(&t, &script)?;
        let url = url.replace("{}", &peer.port.to_string());
        let e = open(&url, &quick_opts()).await.err().expect("must fail");
        assert_eq!(e.kind(), kind, "{url}: {e}");
        assert!(e.to_string().contains(want), "{url}: {e}");
        assert!(!e.to_string().contains("wrongpw"), "{e}");
        peer.finish()?;
    }
    Ok(())
}

#[tokio::test]
async fn oversize_never_reaches_the_server() -> Result<()> {
    let t = Transcript::load()?;
    // Only the session and one 8 MiB SET may arrive; 8 MiB + 1 is refused by
    // the client (the real server drops the connection on it, step 69).
    let mut script = SECURE_NS1.to_vec();
    script.extend([Exact(1), SET(67)]);
    let peer = ReplayPeer::start(&t, &script)?;
    let s = open(&format!("zdb://:nspw@127.0.0.1:{}/ns1", peer.port), &quick_opts()).await?;
    let e = s.put(&ChunkId([3; 32]), Bytes::from(vec![b'x'; MAX_BLOB + 1])).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("over the 8 MiB"), "{e}");
    s.put(&ChunkId([3; 32]), Bytes::from(vec![b'x'; MAX_BLOB])).await?;
    peer.finish()?;
    Ok(())
}

#[tokio::test]
async fn worm_namespace_accepts_an_identical_reput() -> Result<()> {
    let t = Transcript::load()?;
    let mut script = SECURE_NS1.to_vec();
    script.extend([
        Exact(1),
        SET(124), // -Namespace is protected by worm mode
        GET(129), // the stored value is "1": ours, so the put succeeded
        SET(124),
        GET(129), // stored "1" but we wrote "2": refused
    ]);
    let peer = ReplayPeer::start(&t, &script)?;
    let s = open(&format!("zdb://:nspw@127.0.0.1:{}/ns1", peer.port), &quick_opts()).await?;
    s.put(&ChunkId([4; 32]), Bytes::from_static(b"1")).await?;
    let e = s.put(&ChunkId([4; 32]), Bytes::from_static(b"2")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(e.to_string().contains("worm"), "{e}");
    peer.finish()?;
    Ok(())
}

#[tokio::test]
async fn dropped_connection_is_retried_on_a_new_one() -> Result<()> {
    let t = Transcript::load()?;
    let mut script = SECURE_NS1.to_vec();
    script.push(Exact(1));
    script.push(Hangup); // the GET: connection closed, no reply
    script.extend(SECURE_NS1); // new connection, new session
    script.push(Exact(49));
    // A recorded error after which the real server closed the connection
    // (140): a server answer, so not retried.
    script.push(GET(140));
    let peer = ReplayPeer::start(&t, &script)?;
    let s = open(&format!("zdb://:nspw@127.0.0.1:{}/ns1", peer.port), &quick_opts()).await?;
    assert_eq!(s.get(&binary_key()).await?.unwrap(), Bytes::from_static(b"binval"));
    let e = s.get(&binary_key()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("namespace was removed"), "{e}");
    peer.finish()?;
    Ok(())
}
