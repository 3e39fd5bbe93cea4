//! `dir://PATH`: one file per blob in a two-level fan-out, `ab/cd/<hex id>`,
//! the layout rfs uses. Writes go to a temporary name and are renamed into
//! place after fsync, so a crash never leaves a torn blob under its id.
//! Blobs in the one-level layout `ab/<hex id>` (older stores) are read,
//! listed and deleted too; new blobs always go to `ab/cd/<hex id>`.

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::{ChunkStore, StoreStats, blocking};
use crate::chunk::{ChunkId, MAX_BLOB};
use crate::error::{Error, Result, invalid};

pub struct DirStore {
    root: PathBuf,
    name: String,
}

impl DirStore {
    pub fn open(root: &Path, name: String) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(|e| Error::io(format!("{name}: create"), e))?;
        Ok(DirStore { root: root.to_path_buf(), name })
    }

    fn path_of(&self, id: &ChunkId) -> PathBuf {
        let hex = id.to_hex();
        self.root.join(&hex[0..2]).join(&hex[2..4]).join(hex)
    }

    /// Where the one-level layout keeps the blob: `ab/<hex id>`.
    fn flat_path_of(&self, id: &ChunkId) -> PathBuf {
        let hex = id.to_hex();
        self.root.join(&hex[0..2]).join(hex)
    }

    /// The paths a blob may live at, the layout written first.
    fn paths_of(&self, id: &ChunkId) -> [PathBuf; 2] {
        [self.path_of(id), self.flat_path_of(id)]
    }

    fn write_blob(&self, id: &ChunkId, blob: &[u8]) -> Result<()> {
        let path = self.path_of(id);
        if path.exists() {
            return Ok(());
        }
        let ctx = |what: &str| format!("{}: {what} chunk {id}", self.name);
        let parent = path.parent().expect("fan-out path has a parent");
        let new_dirs = !parent.is_dir();
        std::fs::create_dir_all(parent).map_err(|e| Error::io(ctx("mkdir for"), e))?;
        let mut tmp = tempfile_in(parent).map_err(|e| Error::io(ctx("create temp for"), e))?;
        tmp.1.write_all(blob).map_err(|e| Error::io(ctx("write"), e))?;
        tmp.1.sync_data().map_err(|e| Error::io(ctx("fsync"), e))?;
        if let Err(e) = std::fs::rename(&tmp.0, &path) {
            let _ = std::fs::remove_file(&tmp.0);
            return Err(Error::io(ctx("rename"), e));
        }
        // The blob survives a crash only once its name does: fsync the
        // directory holding it, and the fan-out directories made for it.
        let mut dirs = vec![parent];
        if new_dirs {
            dirs.extend(parent.parent());
            dirs.push(&self.root);
        }
        for d in dirs {
            sync_dir(d).map_err(|e| Error::io(ctx(&format!("fsync {} for", d.display())), e))?;
        }
        Ok(())
    }
}

/// fsync(2) a directory, making the names in it durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// A uniquely named temporary file next to its final place.
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    loop {
        let name = format!(".tmp.{:016x}", rand::random::<u64>());
        let path = dir.join(name);
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

#[async_trait]
impl ChunkStore for DirStore {
    fn url(&self) -> &str {
        &self.name
    }

    async fn get(&self, id: &ChunkId) -> Result<Option<Bytes>> {
        let paths = self.paths_of(id);
        let name = self.name.clone();
        let id = *id;
        blocking(move || {
            for path in &paths {
                match std::fs::read(path) {
                    Ok(b) => return Ok(Some(Bytes::from(b))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(format!("{name}: read chunk {id}"), e)),
                }
            }
            Ok(None)
        })
        .await
    }

    async fn put(&self, id: &ChunkId, blob: Bytes) -> Result<()> {
        if blob.len() > MAX_BLOB {
            return Err(invalid(format!("{}: blob of {} bytes over 8 MiB", self.name, blob.len())));
        }
        let this = DirStore { root: self.root.clone(), name: self.name.clone() };
        let id = *id;
        blocking(move || this.write_blob(&id, &blob)).await
    }

    async fn has(&self, id: &ChunkId) -> Result<bool> {
        Ok(self.paths_of(id).iter().any(|p| p.exists()))
    }

    /// Removes the blob from both layouts (a store may hold it in each).
    async fn delete(&self, id: &ChunkId) -> Result<bool> {
        let mut any = false;
        for path in self.paths_of(id) {
            match std::fs::remove_file(path) {
                Ok(()) => any = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("{}: delete chunk {id}", self.name), e)),
            }
        }
        Ok(any)
    }

    /// Ids under `ab/cd/<hex>` and `ab/<hex>` whose name matches their
    /// fan-out directories; anything else (temp files, other directories,
    /// misplaced names) is not a blob this store would read, so not listed.
    async fn list_ids(&self) -> Result<Vec<ChunkId>> {
        let root = self.root.clone();
        let name = self.name.clone();
        blocking(move || {
            let mut ids = Vec::new();
            let io = |p: &Path, e| Error::io(format!("{name}: list {}", p.display()), e);
            for (a, a_name) in fan_out_dirs(&root).map_err(|e| io(&root, e))? {
                for f in std::fs::read_dir(&a).map_err(|e| io(&a, e))? {
                    let f = f.map_err(|e| io(&a, e))?;
                    let file_name = f.file_name();
                    let Some(n) = file_name.to_str() else { continue };
                    if f.file_type().map_err(|e| io(&a, e))?.is_dir() {
                        if is_fan_out(n) {
                            list_blobs(&f.path(), &format!("{a_name}{n}"), &mut ids)
                                .map_err(|e| io(&f.path(), e))?;
                        }
                    } else if let Some(id) = blob_id(n, &a_name) {
                        ids.push(id);
                    }
                }
            }
            ids.sort();
            ids.dedup();
            Ok(ids)
        })
        .await
    }

    async fn stats(&self) -> Result<StoreStats> {
        let root = self.root.clone();
        blocking(move || {
            let mut st = StoreStats::default();
            for a in read_dirs(&root) {
                for b in read_dirs(&a) {
                    for f in std::fs::read_dir(&b).into_iter().flatten().flatten() {
                        let name = f.file_name();
                        if name.to_string_lossy().starts_with(".tmp.") {
                            continue;
                        }
                        st.chunks += 1;
                        st.bytes += f.metadata().map(|m| m.len()).unwrap_or(0);
                    }
                }
            }
            Ok(st)
        })
        .await
    }
}

/// A fan-out directory name: two lowercase hex digits.
fn is_fan_out(n: &str) -> bool {
    n.len() == 2 && n.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The first-level fan-out directories of `root` with their names.
fn fan_out_dirs(root: &Path) -> std::io::Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root)? {
        let e = e?;
        let name = e.file_name().to_str().unwrap_or_default().to_string();
        if is_fan_out(&name) && e.file_type()?.is_dir() {
            out.push((e.path(), name));
        }
    }
    Ok(out)
}

/// The id a file named `n` holds if it sits under the fan-out `prefix`.
fn blob_id(n: &str, prefix: &str) -> Option<ChunkId> {
    if !n.starts_with(prefix) {
        return None;
    }
    n.parse().ok()
}

/// The blobs of one second-level directory `ab/cd`.
fn list_blobs(dir: &Path, prefix: &str, ids: &mut Vec<ChunkId>) -> std::io::Result<()> {
    for f in std::fs::read_dir(dir)? {
        let f = f?;
        if let Some(id) = f.file_name().to_str().and_then(|n| blob_id(n, prefix)) {
            if f.file_type()?.is_file() {
                ids.push(id);
            }
        }
    }
    Ok(())
}

fn read_dirs(p: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(p)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::encode;

    #[tokio::test]
    async fn put_get_has_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = DirStore::open(dir.path(), "dir://t".into()).unwrap();
        let c = encode(b"hello").unwrap();
        assert_eq!(s.get(&c.chunk.id).await.unwrap(), None);
        s.put(&c.chunk.id, c.blob.clone()).await.unwrap();
        s.put(&c.chunk.id, c.blob.clone()).await.unwrap();
        assert!(s.has(&c.chunk.id).await.unwrap());
        assert_eq!(s.get(&c.chunk.id).await.unwrap().unwrap(), c.blob);
        let hex = c.chunk.id.to_hex();
        assert!(dir.path().join(&hex[..2]).join(&hex[2..4]).join(&hex).is_file());
        assert_eq!(s.stats().await.unwrap().chunks, 1);
        assert!(s.delete(&c.chunk.id).await.unwrap());
        assert!(!s.delete(&c.chunk.id).await.unwrap());
    }

    #[tokio::test]
    async fn lists_both_layouts_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let s = DirStore::open(dir.path(), "dir://t".into()).unwrap();
        let deep = encode(b"deep").unwrap();
        let flat = encode(b"flat").unwrap();
        s.put(&deep.chunk.id, deep.blob.clone()).await.unwrap();
        let hex = flat.chunk.id.to_hex();
        std::fs::create_dir_all(dir.path().join(&hex[..2])).unwrap();
        std::fs::write(dir.path().join(&hex[..2]).join(&hex), &flat.blob).unwrap();
        // Not blobs: a temp file, a misplaced id, a non-fan-out directory.
        let other = encode(b"other").unwrap().chunk.id.to_hex();
        let deep_hex = deep.chunk.id.to_hex();
        let deep_dir = dir.path().join(&deep_hex[..2]).join(&deep_hex[2..4]);
        std::fs::write(deep_dir.join(".tmp.0000"), b"x").unwrap();
        std::fs::write(deep_dir.join(&other), b"x").unwrap();
        std::fs::create_dir_all(dir.path().join(".gc")).unwrap();
        std::fs::write(dir.path().join(".gc").join(&other), b"x").unwrap();
        let mut want = vec![deep.chunk.id, flat.chunk.id];
        want.sort();
        assert_eq!(s.list_ids().await.unwrap(), want);
        assert_eq!(s.get(&flat.chunk.id).await.unwrap().unwrap(), flat.blob);
        assert!(s.has(&flat.chunk.id).await.unwrap());
        assert!(s.delete(&flat.chunk.id).await.unwrap());
        assert_eq!(s.list_ids().await.unwrap(), vec![deep.chunk.id]);
    }
}
