// Shared by the flist fuzz targets: exercise every read path of a tree,
// bounded, ignoring errors (they are the expected outcome for bad input);
// only panics, hangs and sanitizer reports are findings.

use zosfs_flist::{Step, Tree, walk};

pub fn exercise(t: &dyn Tree) {
    let mut budget = 10_000usize;
    let _ = walk(t, t.root(), b"", &mut |path, inode| {
        budget = budget.saturating_sub(1);
        if budget == 0 {
            return Err(zosfs_flist::Error::new(zosfs_flist::ErrorKind::InvalidInput, "budget"));
        }
        let _ = t.data(inode.ino);
        let _ = t.readlink(inode.ino);
        let _ = t.resolve(path);
        let _ = t.resolve_follow(path);
        let _ = t.lookup(inode.ino, b"x");
        let _ = t.readdir(inode.ino, Some(b"m"), 3);
        Ok(Step::Continue)
    });
    let _ = t.resolve(b"/a/../b/./c");
    let _ = t.getattr(0);
    let _ = t.getattr(u64::MAX);
}

/// A scratch directory per input, in memory when /dev/shm exists: the
/// readers fsync what they unpack, and on a disk that, not the parsing,
/// would bound the executions per second.
pub fn tmp() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.expect("tempdir")
}
