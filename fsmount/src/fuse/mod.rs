//! The read-only FUSE layer over a [`Tree`].
//!
//! * Entries and attributes never change while mounted, so replies carry
//!   long TTLs and files keep the page cache across opens.
//! * Inode numbers are the tree's, except that FUSE's root must be 1: the
//!   tree root and inode 1 swap places ([`InoMap`]).
//! * A file whose content is entirely local is opened with FUSE passthrough
//!   when the kernel granted it; any failure falls back to normal reads.
//! * Every request is answered: errors map through [`Error::errno`] (a
//!   fetch failure is EIO, never ENOENT).
//!
//! Callbacks run on fuser's worker threads (several: multi-threaded
//! session) and may block there; they never run on a tokio worker.

mod handles;
pub mod session;

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};

use crate::error::Error;
use crate::stats::Counters;
use crate::tree::{Attr, Ino, Kind, Tree};
use handles::Handles;

/// How long the kernel may cache entries and attributes: the tree is
/// immutable while mounted.
const TTL: Duration = Duration::from_secs(24 * 3600);

/// Tree inode numbers ↔ FUSE node ids (the root must be 1).
#[derive(Clone, Copy, Debug)]
pub enum InoMap {
    /// The tree's root already is 1.
    Identity,
    /// The tree's root is 0: every node id is inode + 1.
    Shift,
    /// Swap the root and inode 1.
    Swap(Ino),
}

impl InoMap {
    pub fn new(root: Ino) -> InoMap {
        match root {
            1 => InoMap::Identity,
            0 => InoMap::Shift,
            r => InoMap::Swap(r),
        }
    }

    pub fn to_fuse(self, ino: Ino) -> u64 {
        match self {
            InoMap::Identity => ino,
            InoMap::Shift => ino + 1,
            InoMap::Swap(r) if ino == r => 1,
            InoMap::Swap(r) if ino == 1 => r,
            InoMap::Swap(_) => ino,
        }
    }

    pub fn to_tree(self, node: u64) -> Ino {
        match self {
            InoMap::Identity => node,
            InoMap::Shift => node - 1,
            InoMap::Swap(r) if node == 1 => r,
            InoMap::Swap(r) if node == r => 1,
            InoMap::Swap(_) => node,
        }
    }
}

/// Options of the FUSE layer.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FuseOptions {
    /// Ask the kernel for passthrough of fully local files.
    pub passthrough: bool,
}

impl Default for FuseOptions {
    fn default() -> Self {
        FuseOptions { passthrough: true }
    }
}

pub struct FuseFs {
    tree: Arc<dyn Tree>,
    map: InoMap,
    counters: Arc<Counters>,
    handles: Handles,
    want_passthrough: bool,
    /// Set in init when the kernel granted passthrough.
    passthrough: Arc<AtomicBool>,
}

fn kind(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::CharDev => FileType::CharDevice,
        Kind::BlockDev => FileType::BlockDevice,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
    }
}

/// The kernel's 32-bit `new_encode_dev`, which FUSE attributes carry.
pub fn fuse_rdev(rdev: u64) -> u32 {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

fn errno(e: &Error) -> Errno {
    Errno::from_i32(e.errno())
}

impl FuseFs {
    pub fn new(tree: Arc<dyn Tree>, counters: Arc<Counters>, opts: &FuseOptions) -> FuseFs {
        FuseFs {
            map: InoMap::new(tree.root()),
            tree,
            counters,
            handles: Handles::default(),
            want_passthrough: opts.passthrough,
            passthrough: Arc::new(AtomicBool::new(false)),
        }
    }

    /// True once the kernel granted passthrough (after init).
    pub fn passthrough_flag(&self) -> Arc<AtomicBool> {
        self.passthrough.clone()
    }

    fn attr(&self, a: &Attr) -> FileAttr {
        FileAttr {
            ino: INodeNo(self.map.to_fuse(a.ino)),
            size: a.size,
            blocks: a.blocks,
            atime: a.atime,
            mtime: a.mtime,
            ctime: a.ctime,
            crtime: a.mtime,
            kind: kind(a.kind),
            perm: a.perm,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: fuse_rdev(a.rdev),
            blksize: 4096,
            flags: 0,
        }
    }

    fn ino(&self, node: INodeNo) -> Ino {
        self.map.to_tree(node.0)
    }

    /// Register `content`'s local file with the kernel, reusing the backing
    /// id of an inode that is already open.
    fn open_passthrough(
        &self,
        ino: Ino,
        content: &Arc<dyn crate::tree::Content>,
        reply: &ReplyOpen,
    ) -> Option<Arc<fuser::BackingId>> {
        if !self.passthrough.load(Ordering::Relaxed) {
            return None;
        }
        let file = content.local_file()?;
        match self.handles.backing(ino, || reply.open_backing(file)) {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::warn!("passthrough for inode {ino} refused ({e}); serving reads");
                None
            }
        }
    }
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_ASYNC_READ;
        for flag in wanted.iter() {
            if config.add_capabilities(flag).is_err() {
                tracing::info!("kernel lacks FUSE capability {flag:?}");
            }
        }
        if self.want_passthrough {
            // Depth 1: our backing files sit on a plain filesystem and an
            // overlay may stack on top of us (the kernel allows 2 levels).
            let granted = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            self.passthrough.store(granted, Ordering::Relaxed);
            tracing::info!("FUSE passthrough {}", if granted { "on" } else { "not available" });
        }
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.tree.lookup(self.ino(parent), name) {
            Ok(a) => reply.entry(&TTL, &self.attr(&a), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.tree.getattr(self.ino(ino)) {
            Ok(a) => reply.attr(&TTL, &self.attr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.tree.readlink(self.ino(ino)) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&self, _req: &Request, node: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            reply.error(Errno::EROFS);
            return;
        }
        let ino = self.ino(node);
        let content = match self.tree.open(ino) {
            Ok(c) => c,
            Err(e) => {
                reply.error(errno(&e));
                return;
            }
        };
        Counters::add(&self.counters.files_opened, 1);
        // Decide the mode and register the handle under one lock: the
        // kernel refuses mixing cached and passthrough opens of an inode.
        let mut cached = self.handles.cached_opens();
        let backing = match cached.get(&ino) {
            Some(n) if *n > 0 => None,
            _ => self.open_passthrough(ino, &content, &reply),
        };
        let fh = self.handles.open_file(&mut cached, ino, content, backing.clone());
        drop(cached);
        match backing {
            Some(id) => {
                Counters::add(&self.counters.passthrough_opens, 1);
                // The kernel refuses any other flag with passthrough
                // (FOPEN_PASSTHROUGH_MASK): no KEEP_CACHE here.
                reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id)
            }
            None => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(content) = self.handles.file(fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        let len = content.size().saturating_sub(offset).min(u64::from(size)) as usize;
        let mut buf = vec![0u8; len];
        match content.read_at(&mut buf, offset) {
            Ok(n) => {
                Counters::add(&self.counters.reads, 1);
                Counters::add(&self.counters.bytes_read, n as u64);
                reply.data(&buf[..n])
            }
            Err(e) => {
                tracing::warn!("read inode {} at {offset}: {}", self.ino(_ino), e.chain());
                reply.error(errno(&e))
            }
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.handles.close_file(fh.0);
        reply.ok();
    }

    // Quiet answers for what a read-only tree has nothing to do for
    // (fuser's defaults log a multi-line warning on every call).

    /// Nothing is buffered: close(2) has nothing to flush.
    fn flush(&self, _: &Request, _: INodeNo, _: FileHandle, _: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    /// Nothing is ever dirty.
    fn fsync(&self, _: &Request, _: INodeNo, _: FileHandle, _: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsyncdir(&self, _: &Request, _: INodeNo, _: FileHandle, _: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    /// No ioctls: what the kernel answers for a file without any.
    #[allow(clippy::too_many_arguments)]
    fn ioctl(
        &self,
        _: &Request,
        _: INodeNo,
        _: FileHandle,
        _: fuser::IoctlFlags,
        _: u32,
        _: &[u8],
        _: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    /// ENOSYS makes the kernel do SEEK_DATA/SEEK_HOLE itself (every byte is
    /// data) and stop asking for this mount.
    fn lseek(
        &self,
        _: &Request,
        _: INodeNo,
        _: FileHandle,
        _: i64,
        _: i32,
        reply: fuser::ReplyLseek,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // The listing is read at the first readdir: the kernel serves most
        // opendirs of a directory it has read from its cache.
        let ino = self.ino(ino);
        match self.tree.getattr(ino) {
            Ok(a) if a.kind == Kind::Dir => {
                let fh = self.handles.open_dir(ino);
                reply.opened(
                    FileHandle(fh),
                    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
                )
            }
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(dir) = self.handles.dir(fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        let entries = match dir.entries(|| self.tree.readdir(dir.ino)) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(&e)),
        };
        // Offsets: 1 after ".", 2 after "..", i + 3 after entries[i].
        let mut off = offset;
        if off == 0 {
            if reply.add(ino, 1, FileType::Directory, ".") {
                return reply.ok();
            }
            off = 1;
        }
        if off == 1 {
            if reply.add(ino, 2, FileType::Directory, "..") {
                return reply.ok();
            }
            off = 2;
        }
        for (i, e) in entries.iter().enumerate().skip((off - 2) as usize) {
            let node = INodeNo(self.map.to_fuse(e.attr.ino));
            if reply.add(node, i as u64 + 3, kind(e.attr.kind), &e.name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let Some(dir) = self.handles.dir(fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        let entries = match dir.entries(|| self.tree.readdir(dir.ino)) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(&e)),
        };
        let dir_attr = match self.tree.getattr(self.ino(ino)) {
            Ok(a) => self.attr(&a),
            Err(e) => return reply.error(errno(&e)),
        };
        let mut off = offset;
        // The kernel skips "." and ".." when it links readdirplus entries.
        if off == 0 {
            if reply.add(ino, 1, ".", &TTL, &dir_attr, Generation(0)) {
                return reply.ok();
            }
            off = 1;
        }
        if off == 1 {
            if reply.add(ino, 2, "..", &TTL, &dir_attr, Generation(0)) {
                return reply.ok();
            }
            off = 2;
        }
        for (i, e) in entries.iter().enumerate().skip((off - 2) as usize) {
            let a = self.attr(&e.attr);
            if reply.add(a.ino, i as u64 + 3, &e.name, &TTL, &a, Generation(0)) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.handles.close_dir(fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.tree.stats();
        reply.statfs(s.bytes.div_ceil(4096), 0, 0, s.files, 0, 4096, 255, 4096);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.tree.getxattr(self.ino(ino), name) {
            Ok(Some(v)) => xattr_reply(reply, &v, size),
            Ok(None) => reply.error(Errno::NO_XATTR),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.tree.listxattr(self.ino(ino)) {
            Ok(names) => {
                let mut buf = Vec::new();
                for n in names {
                    buf.extend_from_slice(n.as_bytes());
                    buf.push(0);
                }
                xattr_reply(reply, &buf, size)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // default_permissions: the kernel checks modes itself.
        reply.ok();
    }
}

/// size 0 asks for the length; a too small buffer is ERANGE.
fn xattr_reply(reply: ReplyXattr, v: &[u8], size: u32) {
    if size == 0 {
        reply.size(v.len() as u32);
    } else if (size as usize) < v.len() {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ino_maps_are_bijective() {
        for root in [0u64, 1, 2, 256, 1 << 40] {
            let m = InoMap::new(root);
            assert_eq!(m.to_fuse(root), 1);
            for i in [1u64, 2, 3, 256, 257, 1 << 40] {
                if root == 0 || i != 0 {
                    assert_eq!(m.to_tree(m.to_fuse(i)), i, "root {root} ino {i}");
                }
            }
        }
    }

    #[test]
    fn rdev_encoding_matches_kernel() {
        // /dev/null 1:3, /dev/loop7 7:7, a large minor 259:65536.
        assert_eq!(fuse_rdev(libc::makedev(1, 3)), 0x103);
        assert_eq!(fuse_rdev(libc::makedev(259, 65536)), (259 << 8) | (0x1_0000 << 12));
    }
}
