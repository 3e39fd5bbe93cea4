//! `chunkstore gc --keep`: deletes exactly the chunks no kept flist
//! references, by the three-phase rule (suspect, hidden, deleted), on
//! local://, dir:// and zdb:// (`chunkstore serve`), and keeps the chunks
//! of a pack that runs while it sweeps.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, ensure};
use zosfs_flist::{Kind, Step};
use zosfs_store::ChunkId;
use zosfs_tests::flist::{noise, run};
use zosfs_tests::zdb::Zdb;
use zosfs_tests::{ChildGuard, bin, start_redis};

/// A test's private directories and the store under test.
struct Env {
    dir: tempfile::TempDir,
    url: String,
}

impl Env {
    /// The store of `kind` (local, dir, zdb, redis) and the server
    /// process behind it, if any (stopped when dropped).
    fn new(kind: &str) -> Result<(Env, Option<Box<dyn std::any::Any>>)> {
        let dir = tempfile::tempdir()?;
        for d in ["run", "cache", "keep", "state", "other"] {
            std::fs::create_dir(dir.path().join(d))?;
        }
        let (url, server) = match kind {
            "local" => (format!("local://{}", dir.path().join("store").display()), None),
            "dir" => (format!("dir://{}", dir.path().join("store").display()), None),
            "zdb" => {
                let z = Zdb::start(&dir.path().join("zdb"), &[])?;
                let url = format!("zdb://{}/default", z.addr);
                (url, Some(Box::new(z) as Box<dyn std::any::Any>))
            }
            _ => {
                std::fs::create_dir(dir.path().join("redis"))?;
                let (guard, port) = start_redis(&dir.path().join("redis"))?;
                (format!("redis://127.0.0.1:{port}/3"), Some(Box::new(guard) as _))
            }
        };
        Ok((Env { dir, url }, server))
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// A command with this test's run dir (node store sockets) and flist cache.
    fn cmd(&self, name: &str) -> Command {
        let mut c = Command::new(bin(name));
        c.env("ZOSFS_RUN_DIR", self.path("run"))
            .env("ZOSFS_FLIST_CACHE", self.path("cache"))
            .env_remove("ZOSFS_STORE");
        c
    }

    /// Pack directory `src` into `out`.
    fn pack(&self, src: &Path, out: &Path) -> Result<()> {
        run(self
            .cmd("flist")
            .args(["pack", "--no-progress", "-o"])
            .arg(out)
            .args(["--store", &self.url])
            .arg(src))
        .map(|_| ())
    }

    /// `chunkstore gc --keep KEEP --state STATE --grace G` plus `extra`.
    fn gc(&self, grace: &str, extra: &[&str]) -> Result<String> {
        let o = run(self.gc_cmd(grace).args(extra))?;
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    fn gc_cmd(&self, grace: &str) -> Command {
        let mut c = self.cmd("chunkstore");
        c.args(["gc", "--store", &self.url, "--keep"])
            .arg(self.path("keep"))
            .arg("--state")
            .arg(self.path("state"))
            .args(["--grace", grace]);
        c
    }

    /// The ids among `ids` the store does not have (`chunkstore has`).
    fn missing(&self, ids: &BTreeSet<ChunkId>) -> Result<BTreeSet<ChunkId>> {
        let o = self
            .cmd("chunkstore")
            .args(["has", "--store", &self.url])
            .args(ids.iter().map(|i| i.to_hex()))
            .output()?;
        let text = String::from_utf8_lossy(&o.stdout);
        let missing: BTreeSet<ChunkId> = text
            .lines()
            .map(|l| l.strip_prefix("missing ").context(l.to_string())?.parse().map_err(Into::into))
            .collect::<Result<_>>()?;
        ensure!(o.status.success() == missing.is_empty(), "has: {:?} {text}", o.status);
        Ok(missing)
    }

    /// The store ids of every chunk of an flist.
    fn chunks(&self, flist: &Path) -> Result<BTreeSet<ChunkId>> {
        let opts = zosfs_flist::OpenOptions { cache_dir: self.path("cache") };
        let tree = zosfs_flist::legacy::open_any(flist, &opts)?;
        let mut files = Vec::new();
        zosfs_flist::walk(&*tree, tree.root(), b"", &mut |_, i| {
            if i.kind == Kind::File {
                files.push(i.ino);
            }
            Ok(Step::Continue)
        })?;
        let mut ids = BTreeSet::new();
        for ino in files {
            ids.extend(tree.data(ino)?.iter().map(|c| c.store_id()));
        }
        Ok(ids)
    }

    /// Unpack `flist` (relative to the test dir) and compare its files with
    /// the contents [`tree`] made them from.
    fn unpack_and_check(&self, flist: &str, files: &[(&str, u64, usize)]) -> Result<()> {
        let out = self.path("unpacked").join(flist.replace('/', "-"));
        run(self
            .cmd("flist")
            .args(["unpack", "--store", &self.url])
            .arg(self.path(flist))
            .arg(&out))?;
        for (name, seed, len) in files {
            ensure!(
                std::fs::read(out.join(name))? == noise(*seed, *len),
                "{flist}: {name} differs"
            );
        }
        Ok(())
    }

    /// Move every recorded time of the gc state back by `secs`: what the
    /// state looks like `secs` later, without waiting.
    fn age_state(&self, secs: u64) -> Result<()> {
        let p = self.path("state/state");
        let text = std::fs::read_to_string(&p)?;
        let aged: Vec<String> = text
            .lines()
            .map(|l| {
                let mut f: Vec<String> = l.split(' ').map(String::from).collect();
                if matches!(f[0].as_str(), "suspect" | "trash") {
                    f[2] = (f[2].parse::<u64>().expect("time") - secs).to_string();
                }
                f.join(" ")
            })
            .collect();
        std::fs::write(&p, aged.join("\n") + "\n")?;
        Ok(())
    }
}

/// A source tree of named files with deterministic contents.
fn tree(root: &Path, files: &[(&str, u64, usize)]) -> Result<()> {
    std::fs::create_dir_all(root)?;
    for (name, seed, len) in files {
        std::fs::write(root.join(name), noise(*seed, *len))?;
    }
    Ok(())
}

/// The value of the line `  <label>  N ...` of gc's output.
fn figure(out: &str, label: &str) -> usize {
    let line = out.lines().find(|l| l.trim_start().starts_with(label)).expect(label);
    line.trim_start()[label.len()..].split_whitespace().next().unwrap().parse().expect(label)
}

/// Flists A and B share one file; A is kept, B is not.
fn pack_a_and_b(env: &Env) -> Result<(BTreeSet<ChunkId>, BTreeSet<ChunkId>)> {
    tree(&env.path("a"), &[("own", 1, 3 << 20), ("shared", 3, 2 << 20)])?;
    tree(&env.path("b"), &[("own", 2, 3 << 20), ("shared", 3, 2 << 20)])?;
    env.pack(&env.path("a"), &env.path("keep/a.flist"))?;
    env.pack(&env.path("b"), &env.path("other/b.flist"))?;
    let a = env.chunks(&env.path("keep/a.flist"))?;
    let b = env.chunks(&env.path("other/b.flist"))?;
    ensure!(!a.is_disjoint(&b) && !b.is_subset(&a), "A and B must share some chunks");
    Ok((a, b))
}

fn deletes_exactly_the_unreferenced(kind: &str) -> Result<()> {
    let (env, _server) = Env::new(kind)?;
    let (a, b) = pack_a_and_b(&env)?;
    let garbage: BTreeSet<ChunkId> = b.difference(&a).copied().collect();
    let all: BTreeSet<ChunkId> = a.union(&b).copied().collect();

    // Dry run: counts what would go, changes nothing.
    let dry = env.gc("0", &["--dry-run"])?;
    assert_eq!(figure(&dry, "would be deleted"), garbage.len(), "{dry}");
    assert!(env.missing(&all)?.is_empty());

    // Run 1 (grace 2h): only suspects.
    let out = env.gc("2h", &[])?;
    assert_eq!(figure(&out, "kept flists"), 1, "{out}");
    assert_eq!(figure(&out, "referenced chunks"), a.len(), "{out}");
    assert_eq!(figure(&out, "suspects"), garbage.len(), "{out}");
    assert_eq!(figure(&out, "hidden"), 0, "{out}");
    assert!(env.missing(&all)?.is_empty(), "a suspect stays in the store");

    // Two hours later: hidden (out of the store, in the trash).
    env.age_state(7200)?;
    let out = env.gc("2h", &[])?;
    assert_eq!(figure(&out, "hidden"), garbage.len(), "{out}");
    assert_eq!(figure(&out, "deleted"), 0, "{out}");
    assert_eq!(env.missing(&all)?, garbage);

    // Two more hours: deleted.
    env.age_state(7200)?;
    let out = env.gc("2h", &[])?;
    assert_eq!(figure(&out, "deleted"), garbage.len(), "{out}");
    assert_eq!(figure(&out, "in trash"), 0, "{out}");
    assert_eq!(env.missing(&all)?, garbage, "exactly B's own chunks are gone");
    assert!(env.missing(&a)?.is_empty(), "every chunk of A is present");
    assert_eq!(std::fs::read_dir(env.path("state/trash"))?.count(), 0);

    if kind == "local" {
        let fsck = run(env.cmd("chunkstore").args(["fsck", "--verify-ids", "--store", &env.url]))?;
        assert!(String::from_utf8_lossy(&fsck.stdout).contains("clean"));
    }
    // The flist of A still unpacks whole.
    env.unpack_and_check("keep/a.flist", &[("own", 1, 3 << 20), ("shared", 3, 2 << 20)])?;
    Ok(())
}

#[test]
fn gc_keep_deletes_exactly_the_unreferenced_local() -> Result<()> {
    deletes_exactly_the_unreferenced("local")
}

#[test]
fn gc_keep_deletes_exactly_the_unreferenced_dir() -> Result<()> {
    deletes_exactly_the_unreferenced("dir")
}

#[test]
fn gc_keep_deletes_exactly_the_unreferenced_zdb() -> Result<()> {
    deletes_exactly_the_unreferenced("zdb")
}

#[test]
fn gc_keep_deletes_exactly_the_unreferenced_redis() -> Result<()> {
    deletes_exactly_the_unreferenced("redis")
}

#[test]
fn gc_grace_zero_deletes_at_once_and_warns() -> Result<()> {
    let (env, _server) = Env::new("dir")?;
    let (a, b) = pack_a_and_b(&env)?;
    let garbage: BTreeSet<ChunkId> = b.difference(&a).copied().collect();
    let o = run(&mut env.gc_cmd("0"))?;
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(figure(&out, "deleted"), garbage.len(), "{out}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("warning: --grace 0"));
    assert_eq!(env.missing(&a.union(&b).copied().collect())?, garbage);
    Ok(())
}

/// A kept flist that cannot be read: an error naming it, nothing deleted,
/// no state written.
#[test]
fn gc_unreadable_keep_deletes_nothing() -> Result<()> {
    let (env, _server) = Env::new("local")?;
    let (a, b) = pack_a_and_b(&env)?;
    std::fs::create_dir(env.path("keep/sub"))?;
    let bad = env.path("keep/sub/broken.flist");
    std::fs::write(&bad, b"this is not an flist")?;
    let o = env.gc_cmd("0").output()?;
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&bad.display().to_string()), "{err}");
    assert!(err.contains("nothing was deleted"), "{err}");
    assert!(env.missing(&a.union(&b).copied().collect())?.is_empty());
    assert!(!env.path("state/state").exists());
    // An empty keep set is refused too (it would make everything garbage).
    std::fs::create_dir(env.path("empty"))?;
    let o = env
        .cmd("chunkstore")
        .args(["gc", "--store", &env.url, "--keep"])
        .arg(env.path("empty"))
        .output()?;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no flist"));
    Ok(())
}

/// A pack runs while gc sweeps: B is removed, C shares B's chunks and is
/// packed from a tar stream the test holds open across a gc round that
/// hides B's chunks. Whichever way the pack found them (present: skipped,
/// or hidden: uploaded again), once C's flist is kept every chunk of C is
/// in the store, and the chunks of B alone are deleted a grace later.
fn pack_during_gc(kind: &str) -> Result<()> {
    let (env, _server) = Env::new(kind)?;
    let (a, b) = pack_a_and_b(&env)?;
    // C: B's own file (same bytes, same chunks) first, then a new file.
    tree(&env.path("c"), &[("from-b", 2, 3 << 20), ("new", 4, 8 << 20)])?;
    let tar = run(Command::new("tar")
        .args(["-cf", "-", "-C"])
        .arg(env.path("c"))
        .args(["from-b", "new"]))?
    .stdout;

    // Round 0, two hours ago: B's chunks become suspects.
    env.gc("1h", &[])?;
    env.age_state(7200)?;

    let c_flist = env.path("c.flist");
    let mut pack = env.cmd("flist");
    pack.args(["pack", "--no-progress", "-o"])
        .arg(&c_flist)
        .args(["--store", &env.url, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut guard = ChildGuard::spawn(pack, "flist pack")?;
    let mut stdin = guard.child.stdin.take().expect("stdin piped");
    // The pack gets B's file and part of the new one, and keeps waiting
    // for the rest while gc runs.
    let half = (3 << 20) + (4 << 20);
    stdin.write_all(&tar[..half])?;
    stdin.flush()?;
    let during = env.gc("1h", &[])?;
    assert_eq!(
        guard.child.try_wait()?,
        None,
        "the pack is still running (it waits for the rest of its input)"
    );
    let garbage_b: BTreeSet<ChunkId> = b.difference(&a).copied().collect();
    assert_eq!(figure(&during, "hidden"), garbage_b.len(), "{during}");
    stdin.write_all(&tar[half..])?;
    drop(stdin);
    let status = guard.child.wait()?;
    let mut err = String::new();
    std::io::Read::read_to_string(&mut guard.child.stderr.take().unwrap(), &mut err)?;
    assert!(status.success(), "pack: {err}");

    // The pack is done: its flist joins the keep set; the next round
    // (within the grace) puts back what it relied on.
    std::fs::rename(&c_flist, env.path("keep/c.flist"))?;
    let c = env.chunks(&env.path("keep/c.flist"))?;
    assert!(!c.is_disjoint(&garbage_b), "C shares chunks with the removed B");
    env.gc("1h", &[])?;
    assert!(env.missing(&c)?.is_empty(), "every chunk of C is present");

    // Much later: B's own chunks are gone, A's and C's stay.
    env.age_state(7200)?;
    env.gc("1h", &[])?;
    env.age_state(7200)?;
    let out = env.gc("1h", &[])?;
    assert_eq!(figure(&out, "in trash"), 0, "{out}");
    let kept: BTreeSet<ChunkId> = a.union(&c).copied().collect();
    assert!(env.missing(&kept)?.is_empty());
    let only_b: BTreeSet<ChunkId> = garbage_b.difference(&c).copied().collect();
    assert_eq!(env.missing(&b.union(&kept).copied().collect())?, only_b);
    // C unpacks whole.
    env.unpack_and_check("keep/c.flist", &[("from-b", 2, 3 << 20), ("new", 4, 8 << 20)])?;
    Ok(())
}

#[test]
fn gc_keep_with_a_concurrent_pack_local() -> Result<()> {
    pack_during_gc("local")
}

#[test]
fn gc_keep_with_a_concurrent_pack_dir() -> Result<()> {
    pack_during_gc("dir")
}
