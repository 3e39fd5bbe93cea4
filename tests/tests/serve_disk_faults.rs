//! A write error the kernel reports only at fsync (the disk under the
//! filesystem ran out of space during writeback) makes `chunkstore serve`
//! refuse writes with a clear error while reads go on; after space is
//! freed a restart serves everything that was durable.
//!
//! Real kernel parts: an ext4 (no journal) on a loop device whose backing
//! file lives on a tmpfs that is then filled. ext4 still has free blocks,
//! so write(2) succeeds into the page cache; the loop device's writes into
//! the full tmpfs fail, and the error surfaces at the next fdatasync — the
//! case a periodic sync used to only log.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use zosfs_tests::wait_for;
use zosfs_tests::zdb::{Reply, Zdb};

/// tmpfs → sparse backing file → loop device → ext4, torn down on drop.
struct SmallDisk {
    top: tempfile::TempDir,
    dev: Option<String>,
    mounted: Vec<PathBuf>,
}

fn sh(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl SmallDisk {
    fn new() -> Result<SmallDisk> {
        let top = tempfile::tempdir()?;
        let mut d = SmallDisk { top, dev: None, mounted: Vec::new() };
        let tmpfs = d.tmpfs();
        std::fs::create_dir(&tmpfs)?;
        sh(Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=48m", "zosfs-test"])
            .arg(&tmpfs))?;
        d.mounted.push(tmpfs.clone());
        let backing = tmpfs.join("disk.img");
        std::fs::File::create(&backing)?.set_len(256 << 20)?;
        // No journal: a failed journal write would abort the whole
        // filesystem, which is another test; this one is about data pages.
        sh(Command::new("mkfs.ext4")
            .args(["-q", "-O", "^has_journal", "-E", "nodiscard"])
            .arg(&backing))?;
        d.dev = Some(sh(Command::new("losetup").args(["--find", "--show"]).arg(&backing))?);
        let fs = d.fs();
        std::fs::create_dir(&fs)?;
        sh(Command::new("mount")
            .args(["-o", "errors=continue"])
            .arg(d.dev.as_ref().expect("set above"))
            .arg(&fs))?;
        d.mounted.push(fs);
        Ok(d)
    }

    fn tmpfs(&self) -> PathBuf {
        self.top.path().join("tmpfs")
    }

    fn fs(&self) -> PathBuf {
        self.top.path().join("fs")
    }

    /// Fill the tmpfs under the loop device until it says ENOSPC.
    fn fill_backing(&self) -> Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(self.tmpfs().join("filler"))?;
        let block = vec![0x5au8; 1 << 20];
        loop {
            if let Err(e) = f.write_all(&block) {
                if e.raw_os_error() == Some(libc_enospc()) {
                    return Ok(());
                }
                return Err(e.into());
            }
        }
    }

    fn free_backing(&self) -> Result<()> {
        std::fs::remove_file(self.tmpfs().join("filler"))?;
        Ok(())
    }
}

fn libc_enospc() -> i32 {
    28
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        for m in self.mounted.iter().rev() {
            let _ = Command::new("umount").arg(m).status();
            if m == &self.fs() {
                if let Some(dev) = self.dev.take() {
                    let _ = Command::new("losetup").arg("-d").arg(dev).status();
                }
            }
        }
    }
}

fn is_refusal(r: &Reply) -> Option<String> {
    match r {
        Reply::Error(e) => Some(e.clone()),
        _ => None,
    }
}

fn start(data: &Path) -> Result<Zdb> {
    Zdb::start(data, &["--sync-time", "1"])
}

#[test]
fn a_failed_fsync_refuses_writes_keeps_reads_and_recovers_after_space_is_freed() -> Result<()> {
    let disk = SmallDisk::new()?;
    let data = disk.fs().join("data");
    let durable: Vec<u8> = (0..65536u32).map(|i| (i * 7) as u8).collect();

    // A value made durable by a clean stop (the shutdown syncs everything).
    let mut server = start(&data)?;
    let mut c = server.connect()?;
    assert_eq!(c.call(&[b"SET", b"durable", &durable])?, Reply::bulk(b"durable"));
    assert!(server.stop()?.success(), "clean stop");

    let mut server = start(&data)?;
    let mut c = server.connect()?;
    disk.fill_backing()?;
    // Writes land in the page cache and are acknowledged (periodic sync);
    // the next sync meets the writeback error. Wait for the refusal.
    let value = vec![0xc3u8; 256 << 10];
    let mut n = 0u32;
    let refusal =
        wait_for("a write refused after the failed sync", Duration::from_secs(60), || {
            n += 1;
            let key = format!("late-{n}");
            Ok(is_refusal(&c.call(&[b"SET", key.as_bytes(), &value])?))
        })?;
    // The client gets 0-db's own words for a failed write; the server's log
    // names the cause and says how it ends.
    assert!(refusal.starts_with("Cannot write"), "0-db's refusal: {refusal}");
    // The log reaches us through a forwarding thread: wait for the line
    // that gives the OS error and says how the refusal ends.
    let says_why = |l: &String| {
        l.contains("No space left on device")
            && ["until restart", "until the store is reopened", "refusing further writes"]
                .iter()
                .any(|end| l.contains(end))
    };
    wait_for("the server to log why it refuses writes", Duration::from_secs(10), || {
        Ok(server.log_lines("sync").iter().any(says_why).then_some(()))
    })?;
    // Reads go on, and the server still answers.
    assert_eq!(c.call(&[b"GET", b"durable"])?, Reply::bulk(&durable));
    assert_eq!(c.call(&[b"PING"])?, Reply::Status("PONG".into()));
    // Every later write is refused too, with the same cause.
    let again = c.call(&[b"SET", b"after", b"x"])?;
    assert!(is_refusal(&again).is_some(), "a later write is refused: {again:?}");

    // Space freed, server restarted: what was durable is served and writes
    // work again. Writes acknowledged after the last good sync may be lost
    // (the periodic policy's documented window), never returned wrong.
    disk.free_backing()?;
    let _ = server.stop();
    drop(c);
    let mut server = start(&data)?;
    let mut c = server.connect()?;
    assert_eq!(c.call(&[b"GET", b"durable"])?, Reply::bulk(&durable));
    for i in 1..n {
        let key = format!("late-{i}");
        match c.call(&[b"GET", key.as_bytes()])? {
            Reply::Bulk(None) => {}
            Reply::Bulk(Some(v)) => assert!(v == value, "{key} read back with wrong content"),
            other => panic!("GET {key}: {other:?}"),
        }
    }
    assert_eq!(c.call(&[b"SET", b"recovered", b"yes"])?, Reply::bulk(b"recovered"));
    assert!(server.stop()?.success(), "clean stop after recovery");
    Ok(())
}
