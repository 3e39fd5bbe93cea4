//! `dir://PATH`: one file per blob in a two-level fan-out, `ab/cd/<hex id>`,
//! the layout rfs uses. Writes go to a temporary name and are renamed into
//! place after fsync, so a crash never leaves a torn blob under its id.

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
        let path = self.path_of(id);
        let name = self.name.clone();
        let id = *id;
        blocking(move || match std::fs::read(&path) {
            Ok(b) => Ok(Some(Bytes::from(b))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("{name}: read chunk {id}"), e)),
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
        Ok(self.path_of(id).exists())
    }

    async fn delete(&self, id: &ChunkId) -> Result<bool> {
        match std::fs::remove_file(self.path_of(id)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(format!("{}: delete chunk {id}", self.name), e)),
        }
    }

    async fn list_ids(&self) -> Result<Vec<ChunkId>> {
        let root = self.root.clone();
        blocking(move || {
            let mut ids = Vec::new();
            for a in read_dirs(&root) {
                for b in read_dirs(&a) {
                    for f in std::fs::read_dir(&b).into_iter().flatten().flatten() {
                        if let Some(id) = f.file_name().to_str().and_then(|n| n.parse().ok()) {
                            ids.push(id);
                        }
                    }
                }
            }
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
}
