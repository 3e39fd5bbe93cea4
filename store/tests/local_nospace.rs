//! A full filesystem: puts fail with NoSpace, nothing already stored is
//! damaged, and the store reopens clean. Uses a small tmpfs mounted in a
//! temp dir (root only; this machine runs tests as root).

mod blobs;
use blobs::blob;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use zosfs_store::engine::EngineChoice;
use zosfs_store::local::{FsckOptions, LocalStore};
use zosfs_store::{ChunkStore, ErrorKind, OpenOptions};

/// A tmpfs of `size` mounted on a temp dir, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "zosfs-test"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(st.success(), "mount tmpfs on {} failed: {st}", dir.path().display());
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_filesystem_gives_nospace_and_damages_nothing() {
    for engine in [EngineChoice::Uring, EngineChoice::Sync] {
        let fs = Tmpfs::mount("24m");
        let root = fs.path().join("store");
        let o = OpenOptions { engine, segment_size: Some(4 << 20), ..Default::default() };
        let mut stored = Vec::new();
        {
            let store = Arc::new(LocalStore::open(&root, &o).unwrap());
            let mut err = None;
            for i in 0..100u64 {
                let (id, b) = blob(i, 700 << 10);
                match store.put(&id, b.clone()).await {
                    Ok(()) => stored.push((id, b)),
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
            let err = err.expect("24 MiB filled without an error");
            assert_eq!(err.kind(), ErrorKind::NoSpace, "{}", err.chain());
            assert_eq!(err.errno(), libc_enospc(), "{}", err.chain());
            assert!(stored.len() >= 20, "only {} puts fit", stored.len());
            // Small puts keep failing cleanly or succeed; nothing breaks.
            for i in 1000..1010u64 {
                let (id, b) = blob(i, 300 << 10);
                if store.put(&id, b.clone()).await.is_ok() {
                    stored.push((id, b));
                }
            }
            for (id, b) in &stored {
                assert_eq!(&store.get(id).await.unwrap().unwrap(), b);
            }
            // Freeing space makes puts work again.
            for (id, _) in stored.drain(..10) {
                assert!(store.delete(&id).await.unwrap());
            }
            store.gc().await.unwrap();
            let (id, b) = blob(5000, 700 << 10);
            store.put(&id, b.clone()).await.unwrap();
            stored.push((id, b));
        }
        let store = LocalStore::open(&root, &o).unwrap();
        for (id, b) in &stored {
            assert_eq!(&store.get(id).await.unwrap().unwrap(), b, "{engine:?}");
        }
        let f = store.fsck(&FsckOptions { verify_ids: true }).await.unwrap();
        assert!(f.is_clean(), "{f:?}");
        assert_eq!(f.damaged_bytes + f.bad_dead, 0, "{f:?}");
        assert_eq!(f.live_blobs as usize, stored.len());
        drop(store);
    }
}

fn libc_enospc() -> i32 {
    28
}
