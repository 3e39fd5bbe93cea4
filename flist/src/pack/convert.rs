//! Tree source: any readable flist (a legacy one, typically) becomes a
//! native flist. Metadata is copied as the reader reports it; contents are
//! fetched and decoded from the old stores and go through the same chunk
//! pipeline as a pack (the native codec cannot point at foreign blobs).

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::builder::{Attrs, Builder, ContentId};
use super::pipeline::{Counters, Pipeline};
use crate::content::{DataChunk, Store, fetch};
use crate::error::{Error, Result};
use crate::model::{Ino, Kind};
use crate::names::components;
use crate::tree::{Step, Tree, walk};

/// Plaintext of a file's chunks as a blocking reader (one chunk in memory).
struct ChunkReader<'a> {
    store: &'a Store,
    rt: &'a tokio::runtime::Handle,
    chunks: std::vec::IntoIter<DataChunk>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            let Some(c) = self.chunks.next() else { return Ok(0) };
            self.buf = self.rt.block_on(fetch(self.store, &c)).map_err(std::io::Error::other)?;
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

pub(super) fn read_tree_source(
    tree: &dyn Tree,
    from: &Store,
    rt: &tokio::runtime::Handle,
    pipe: &Pipeline,
    readers: usize,
    counters: &Counters,
) -> Result<(Builder, usize)> {
    let mut b = Builder::new();
    let mut node_of: HashMap<Ino, usize> = HashMap::new();
    let mut files: Vec<Ino> = Vec::new();
    walk(tree, tree.root(), b"", &mut |path, inode| {
        let names: Vec<&[u8]> = components(path).collect();
        if inode.kind != Kind::Dir {
            if let Some(&node) = node_of.get(&inode.ino) {
                b.link_node(&names, node, path)?;
                return Ok(Step::Continue);
            }
        }
        let attrs = Attrs {
            kind: inode.kind,
            perm: inode.perm,
            uid: inode.uid,
            gid: inode.gid,
            mtime_ns: inode.mtime_ns,
            rdev: inode.rdev,
            target: inode.target.clone(),
            xattrs: inode.xattrs.clone(),
        };
        let content: Option<ContentId> = (inode.kind == Kind::File).then(|| {
            files.push(inode.ino);
            files.len() - 1
        });
        let node = b.insert(&names, attrs, content, path)?;
        node_of.insert(inode.ino, node);
        counters.bytes_total.fetch_add(inode.size, Ordering::Relaxed);
        Ok(Step::Continue)
    })?;
    counters.files_total.store(files.len() as u64, Ordering::Relaxed);
    let mut data = Vec::with_capacity(files.len());
    for ino in &files {
        data.push(tree.data(*ino)?);
    }
    let next = AtomicUsize::new(0);
    let first_err: std::sync::Mutex<Option<Error>> = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..readers.max(1) {
            let sink = pipe.sink();
            let (next, first_err, data) = (&next, &first_err, &data);
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= data.len() || pipe.failed() {
                        return;
                    }
                    let mut r = ChunkReader {
                        store: from,
                        rt,
                        chunks: data[i].clone().into_iter(),
                        buf: Vec::new(),
                        pos: 0,
                    };
                    if let Err(e) = sink.chunk_reader(i, &mut r) {
                        let mut slot = first_err.lock().expect("error lock");
                        if slot.is_none() {
                            *slot = Some(e);
                        }
                        pipe.fail(Error::new(crate::ErrorKind::Io, "a file could not be read"));
                        return;
                    }
                }
            });
        }
    });
    match first_err.into_inner().expect("error lock") {
        Some(e) => Err(e),
        None => Ok((b, files.len())),
    }
}
