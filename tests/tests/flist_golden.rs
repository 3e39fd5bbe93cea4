//! Golden flists: `.flist` files written by earlier zosfs builds
//! (tests/fixtures/flist-golden/, provenance in its README) are read entry
//! by entry against the committed listing, and every file's bytes are
//! read back from the committed `dir://` store. A reader change that
//! breaks an flist somebody already has fails here.
//!
//! Rewrite `expected.txt` only for a new fixture, never to make a failing
//! reader pass: `ZOSFS_WRITE_GOLDEN=1 cargo nextest run --release -p
//! zosfs-tests --test flist_golden`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use sha2::{Digest, Sha256};
use zosfs_flist::native::Version;
use zosfs_flist::{Flist, Inode, Kind, OpenOptions, Step, Tree, walk};
use zosfs_tests::flist::{dir_url, flist, run};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/flist-golden")
}

/// A copy of the committed store, so no test run can change the fixture.
fn store_copy(tmp: &Path) -> Result<PathBuf> {
    let to = tmp.join("store");
    run(std::process::Command::new("cp").arg("-a").arg(fixtures().join("store")).arg(&to))?;
    Ok(to)
}

fn header_lines(fl: &Flist) -> String {
    let h = fl.header();
    let mut s = format!(
        "header chunking={:?} codec={:?} compression_level={}\n",
        h.chunking, h.codec, h.compression_level
    );
    for r in &h.routes {
        writeln!(s, "route {r}").unwrap();
    }
    for (k, v) in &h.tags {
        writeln!(s, "tag {k}={v}").unwrap();
    }
    s
}

/// One line per name: every attribute the model keeps except inode
/// numbers (a packer may number inodes in any order), plus the SHA-256 of
/// a file's content as `flist cat` prints it.
fn entry_line(
    fl: &Flist,
    path: &[u8],
    i: &Inode,
    cat: &mut dyn FnMut(&str) -> Result<Vec<u8>>,
) -> Result<String> {
    let path = format!("/{}", String::from_utf8(path.to_vec())?);
    let (major, minor) = i.rdev_major_minor();
    let mut s = format!(
        "{path} kind={} perm={:04o} uid={} gid={} size={} mtime_ns={} nlink={} rdev={major}:{minor}",
        i.kind.letter(),
        i.perm,
        i.uid,
        i.gid,
        i.size,
        i.mtime_ns,
        i.nlink,
    );
    if i.kind == Kind::Symlink {
        write!(s, " target={}", String::from_utf8(i.target.clone())?)?;
    }
    for x in &i.xattrs {
        write!(s, " xattr={}:{}", String::from_utf8(x.name.clone())?, hex::encode(&x.value))?;
    }
    if i.kind == Kind::File {
        let chunks = fl.chunks(i.ino)?;
        for c in &chunks {
            write!(s, " chunk={}/{}", hex::encode(c.id.0), c.len)?;
        }
        let data = cat(&path)?;
        ensure!(data.len() as u64 == i.size, "{path}: cat gave {} bytes", data.len());
        write!(s, " sha256={}", hex::encode(Sha256::digest(&data)))?;
    }
    Ok(s)
}

fn listing(fl: &Flist, cat: &mut dyn FnMut(&str) -> Result<Vec<u8>>) -> Result<String> {
    let mut entries = Vec::new();
    walk(fl, fl.root(), b"", &mut |path, inode| {
        entries.push((path.to_vec(), inode.clone()));
        Ok(Step::Continue)
    })?;
    let mut out = header_lines(fl);
    for (path, inode) in &entries {
        out.push_str(&entry_line(fl, path, inode, cat)?);
        out.push('\n');
    }
    Ok(out)
}

/// Open `name` from the fixtures and list it, catting through the binary.
fn list_fixture(name: &str, tmp: &Path) -> Result<(Flist, String)> {
    let file = fixtures().join(name);
    let store = store_copy(tmp)?;
    let cache = tmp.join("cache");
    let fl = Flist::open_with(&file, &OpenOptions { cache_dir: cache.clone() })
        .with_context(|| format!("open {name}"))?;
    let mut cat = |path: &str| -> Result<Vec<u8>> {
        let out =
            run(flist(&cache).args(["cat", "--store", &dir_url(&store)]).arg(&file).arg(path))?;
        Ok(out.stdout)
    };
    let text = listing(&fl, &mut cat)?;
    Ok((fl, text))
}

fn check_fixture(name: &str) -> Result<Flist> {
    let tmp = tempfile::tempdir()?;
    let (fl, got) = list_fixture(name, tmp.path())?;
    let expected_path = fixtures().join("expected.txt");
    if std::env::var_os("ZOSFS_WRITE_GOLDEN").is_some() {
        std::fs::write(&expected_path, &got)?;
    }
    let expected = std::fs::read_to_string(&expected_path)?;
    let (got_lines, want_lines): (Vec<_>, Vec<_>) =
        (got.lines().collect(), expected.lines().collect());
    for (g, w) in got_lines.iter().zip(&want_lines) {
        ensure!(g == w, "{name}: entry differs\n  got:  {g}\n  want: {w}");
    }
    ensure!(
        got_lines.len() == want_lines.len(),
        "{name}: {} lines, expected {}",
        got_lines.len(),
        want_lines.len()
    );
    // The two names of the hardlinked file are one inode.
    let a = fl.resolve(b"hello.txt")?;
    let b = fl.resolve(b"hardlink")?;
    ensure!(a.ino == b.ino && a.nlink == 2, "{name}: hello.txt and hardlink are not one inode");
    Ok(fl)
}

/// `name` is in format `major.0`, and reads as listed.
fn check_version(name: &str, major: u32) -> Result<()> {
    let fl = check_fixture(name)?;
    ensure!(fl.header().format_version == major, "{name}: {:?}", fl.header());
    ensure!(fl.version() == Version { major, minor: 0 }, "{name}: format {}", fl.version());
    Ok(())
}

#[test]
fn v1_flist_reads_as_listed() -> Result<()> {
    check_version("v1.flist", 1)
}

#[test]
fn v2_flist_reads_as_listed() -> Result<()> {
    check_version("v2.flist", 2)
}

/// `flist inspect` names the version of each.
#[test]
fn inspect_shows_the_format_version() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    for (name, want) in
        [("v1.flist", "format:       native 1.0\n"), ("v2.flist", "format:       native 2.0\n")]
    {
        let out = run(flist(tmp.path()).arg("inspect").arg(fixtures().join(name)))?;
        let text = String::from_utf8(out.stdout)?;
        ensure!(text.contains(want), "{name}: {text}");
    }
    Ok(())
}
