//! The shared node store (`zosfs_store::node`) on real files and real unix
//! sockets: several handles on one `local://` store, the owner changing
//! under clients in flight, maintenance through the owner, hostile and
//! mismatched peers, and the wire format against committed golden bytes.
//! Processes killed with -9 are in tests/tests/node_store_processes.rs.

mod blobs;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use blobs::blob;
use bytes::Bytes;
use zosfs_store::local::FsckOptions;
use zosfs_store::node::locate::OwnerRecord;
use zosfs_store::node::proto::{self, Hello, Op};
use zosfs_store::node::{NodeStore, Role};
use zosfs_store::{ChunkId, ChunkStore, ErrorKind, OpenOptions};

fn open(dir: &Path) -> Arc<NodeStore> {
    Arc::new(NodeStore::open(dir, &OpenOptions::default()).unwrap())
}

fn socket_of(s: &NodeStore) -> std::path::PathBuf {
    match s.role() {
        Role::Client { socket, .. } => socket,
        Role::Owner => panic!("expected a client"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn owner_and_client_share_every_operation() {
    let d = tempfile::tempdir().unwrap();
    let owner = open(d.path());
    let client = open(d.path());
    assert_eq!(owner.role(), Role::Owner);
    let Role::Client { owner_pid, .. } = client.role() else { panic!("second handle owns") };
    assert_eq!(owner_pid, std::process::id());
    // The store directory and the socket's directory are private.
    let mode = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
    };
    assert_eq!(mode(d.path()) & 0o777, 0o700);
    assert_eq!(mode(socket_of(&client).parent().unwrap()) & 0o777, 0o700);

    let blobs: Vec<_> = (0..20).map(|i| blob(i, 1000 + i as usize * 5000)).collect();
    for (i, (id, b)) in blobs.iter().enumerate() {
        let via = if i % 2 == 0 { &owner } else { &client };
        via.put(id, b.clone()).await.unwrap();
    }
    for (id, b) in &blobs {
        assert_eq!(client.get(id).await.unwrap().as_ref(), Some(b));
        assert_eq!(owner.get(id).await.unwrap().as_ref(), Some(b));
    }
    let (absent, _) = blob(99, 10);
    assert_eq!(client.get(&absent).await.unwrap(), None);
    let ids: Vec<ChunkId> = blobs.iter().map(|(id, _)| *id).chain([absent]).collect();
    let has = client.has_many(&ids).await.unwrap();
    assert_eq!(has.iter().filter(|h| **h).count(), 20);
    assert!(!has[20]);

    let mut listed = client.list_ids().await.unwrap();
    let mut want: Vec<ChunkId> = blobs.iter().map(|(id, _)| *id).collect();
    listed.sort();
    want.sort();
    assert_eq!(listed, want);

    // Counters are the owner's, node-wide: the client's gets count there.
    let st = client.local_stats().await.unwrap();
    assert_eq!(st.chunks, 20);
    assert!(st.gets >= 41, "gets {}", st.gets);
    assert_eq!(client.stats().await.unwrap().chunks, 20);

    // Deletes, gc and fsck run in the owner whoever asks.
    for (id, _) in &blobs[..10] {
        assert!(client.delete(id).await.unwrap());
    }
    assert!(!client.delete(&blobs[0].0).await.unwrap());
    client.sync().await.unwrap();
    let gc = client.gc().await.unwrap();
    assert!(gc.disk_bytes_after <= gc.disk_bytes_before);
    let f = client.fsck(&FsckOptions { verify_ids: true }).await.unwrap();
    assert!(f.report.is_clean(), "{:?}", f.report);
    assert_eq!(f.report.live_blobs, 10);
    for (id, b) in &blobs[10..] {
        assert_eq!(client.get(id).await.unwrap().as_ref(), Some(b));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_becomes_owner_when_the_owner_closes() {
    let d = tempfile::tempdir().unwrap();
    let owner = open(d.path());
    let client = open(d.path());
    let acked: Vec<_> = (0..10).map(|i| blob(i, 64 * 1024)).collect();
    for (id, b) in &acked {
        client.put(id, b.clone()).await.unwrap();
    }
    let old_socket = socket_of(&client);
    drop(owner);
    // The old owner removed its socket and OWNER record on the way out.
    assert!(!old_socket.exists());
    for (id, b) in &acked {
        assert_eq!(client.get(id).await.unwrap().as_ref(), Some(b), "acknowledged put lost");
    }
    assert_eq!(client.role(), Role::Owner);
    let rec = OwnerRecord::read(d.path()).unwrap().unwrap();
    assert_eq!(rec.pid, std::process::id());
    // A third handle now finds the new owner.
    let third = open(d.path());
    assert!(matches!(third.role(), Role::Client { .. }));
    assert_eq!(third.get(&acked[0].0).await.unwrap().as_ref(), Some(&acked[0].1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_in_flight_survive_a_change_of_owner() {
    let d = tempfile::tempdir().unwrap();
    let owner = open(d.path());
    let clients: Vec<_> = (0..3).map(|_| open(d.path())).collect();
    let blobs: Arc<Vec<_>> =
        Arc::new((0..300).map(|i| blob(i, 4096 + (i as usize % 7) * 1000)).collect());
    let mut tasks = Vec::new();
    for (n, c) in clients.iter().enumerate() {
        let (c, blobs) = (c.clone(), blobs.clone());
        tasks.push(tokio::spawn(async move {
            for (i, (id, b)) in blobs.iter().enumerate() {
                if i % 3 == n {
                    c.put(id, b.clone()).await.unwrap();
                }
            }
        }));
    }
    // The owner goes away while the puts are in flight.
    tokio::task::spawn_blocking(move || drop(owner)).await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let owners = clients.iter().filter(|c| c.role() == Role::Owner).count();
    assert_eq!(owners, 1, "exactly one client took over");
    for c in &clients {
        for (id, b) in blobs.iter() {
            assert_eq!(c.get(id).await.unwrap().as_ref(), Some(b));
        }
    }
}

/// Holds a store's LOCK the way another process would.
fn hold_lock(dir: &Path) -> std::fs::File {
    std::fs::create_dir_all(dir).unwrap();
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))
        .unwrap();
    // SAFETY: flock on an fd we own.
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
    f
}

#[test]
fn a_lock_holder_that_does_not_serve_is_named() {
    let d = tempfile::tempdir().unwrap();
    let _lock = hold_lock(d.path());
    let opts = OpenOptions { timeout: Duration::from_millis(100), ..Default::default() };
    let err = NodeStore::open(d.path(), &opts).err().expect("opened a store held by another");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let msg = err.to_string();
    assert!(msg.contains("does not serve it") && msg.contains("older"), "{msg}");
}

#[test]
fn an_owner_of_another_protocol_version_is_named() {
    let d = tempfile::tempdir().unwrap();
    let _lock = hold_lock(d.path());
    let sock = d.path().join("v2.sock");
    let l = UnixListener::bind(&sock).unwrap();
    OwnerRecord { pid: 4242, socket: sock.clone() }.write(d.path()).unwrap();
    let fake = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut hello = [0u8; proto::HELLO_LEN];
        s.read_exact(&mut hello).unwrap();
        assert_eq!(Hello::decode(&hello).unwrap().version, proto::VERSION);
        s.write_all(&Hello { version: proto::VERSION + 1, pid: 4242 }.encode()).unwrap();
    });
    let err =
        NodeStore::open(d.path(), &OpenOptions::default()).err().expect("spoke to a v2 owner");
    fake.join().unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("pid 4242") && msg.contains(&format!("protocol {}", proto::VERSION + 1)),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_are_cut_off_and_others_still_served() {
    let d = tempfile::tempdir().unwrap();
    let owner = open(d.path());
    let client = open(d.path());
    let sock = socket_of(&client);
    let (id, b) = blob(1, 1000);
    owner.put(&id, b.clone()).await.unwrap();

    let dial = || {
        let s = UnixStream::connect(&sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    // Bad magic: the owner answers its hello and hangs up.
    let mut s = dial();
    s.write_all(&[0u8; proto::HELLO_LEN]).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert_eq!(rest.len(), proto::HELLO_LEN);
    // A frame announcing 4 GiB: cut off before any allocation.
    let mut s = dial();
    s.write_all(&Hello::ours().encode()).unwrap();
    s.write_all(&u32::MAX.to_le_bytes()).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert_eq!(rest.len(), proto::HELLO_LEN, "no reply to an oversized frame");
    // An unknown request: an error reply, then the connection closes.
    let mut s = dial();
    s.write_all(&Hello::ours().encode()).unwrap();
    s.write_all(&1u32.to_le_bytes()).unwrap();
    s.write_all(&[200]).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    let body = &rest[proto::HELLO_LEN + 4..];
    let reply = proto::decode_reply(&Op::Sync, Bytes::copy_from_slice(body)).unwrap();
    let msg = reply.err().unwrap().to_string();
    assert!(msg.contains("unknown request 200"), "{msg}");
    // Everyone else is still served.
    assert_eq!(client.get(&id).await.unwrap(), Some(b));
}

/// The committed bytes of every request decode to what they say and encode
/// back to the same bytes: the protocol (docs/formats/node-store-socket.md)
/// is a promise.
#[test]
fn golden_requests_and_replies() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/node-store-socket");
    let id = ChunkId([0xab; 32]);
    let cases: Vec<(&str, Op)> = vec![
        ("get.bin", Op::Get(id)),
        ("put.bin", Op::Put { id, durable: true, blob: Bytes::from_static(b"blob") }),
        ("has.bin", Op::Has(vec![id, ChunkId([1; 32])])),
        ("delete.bin", Op::Delete(id)),
        ("stats.bin", Op::Stats),
        ("list.bin", Op::List { after: Some(id) }),
        ("sync.bin", Op::Sync),
        ("fsck.bin", Op::Fsck { verify_ids: true }),
        ("gc.bin", Op::Gc),
    ];
    let bless = std::env::var_os("ZOSFS_BLESS").is_some();
    for (file, op) in cases {
        let (head, tail) = op.encode();
        let mut bytes = head;
        bytes.extend_from_slice(tail.as_deref().unwrap_or_default());
        let path = dir.join(file);
        if bless {
            std::fs::write(&path, &bytes).unwrap();
        }
        let golden = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(bytes, golden, "{file}: encoding changed");
        assert_eq!(Op::decode(Bytes::from(golden)).unwrap(), op, "{file}");
    }
    let hello = Hello { version: 1, pid: 0x01020304 }.encode();
    let path = dir.join("hello.bin");
    if bless {
        std::fs::write(&path, hello).unwrap();
    }
    assert_eq!(std::fs::read(&path).unwrap(), hello);
    // A GET reply carrying a blob, and an error reply.
    let (head, tail) =
        proto::encode_reply(&Ok(proto::Reply::Blob(Some(Bytes::from_static(b"xyz")))));
    assert_eq!([head, tail.unwrap().to_vec()].concat(), b"\x00\x01xyz");
    let err = zosfs_store::Error::new(ErrorKind::NotFound, "gone");
    let (head, _) = proto::encode_reply(&Err(err));
    assert_eq!(head, b"\x01\x01gone");
}

#[test]
fn malformed_requests_are_refused() {
    for bad in [&b""[..], &[1u8, 2, 3], &[2u8; 33], &[3u8; 31], &[8u8, 2], &[7u8, 0], &[99u8]] {
        assert!(Op::decode(Bytes::copy_from_slice(bad)).is_err(), "{bad:?} accepted");
    }
}
