//! `nbdserver commit`: the current content of a device becomes a new image
//! flist. Only chunks that differ from the device's base (written, or
//! zeroed where the base had data) are encoded and uploaded; every other
//! chunk reuses the base's reference, and all-zero chunks share one blob.
//! The upload goes through the router, so it is replicated like a pack.
//! A served export commits through [`Export::commit`](crate::server::Export::commit).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use futures::{StreamExt, TryStreamExt};
use zosfs_flist::pack::builder::{Attrs, Builder};
use zosfs_flist::source::Piece;
use zosfs_flist::{Chunking, Codec, DataChunk, Header, Kind, Writer};
use zosfs_store::{ChunkRef, DynStore};

use crate::device::lazy::LazyDevice;
use crate::device::{ReadPiece, is_zero};
use crate::error::{Error, ErrorKind, Result, invalid};

/// Uploads in flight during a commit.
const UPLOAD_DEPTH: usize = 8;

/// What a commit did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitReport {
    pub chunks: u64,
    /// Chunks encoded and put into the store, and their plaintext bytes.
    pub uploaded: u64,
    pub uploaded_bytes: u64,
    /// Chunks taken over from the base unchanged.
    pub reused: u64,
    /// Chunks that read as zeros (one shared blob).
    pub zero: u64,
    pub size: u64,
}

/// Where the device came from: the base's pieces (None: blank).
pub struct CommitInput<'a> {
    pub device: &'a LazyDevice,
    pub base: Option<&'a [Piece]>,
    /// Header to start from (the base flist's), or None for a fresh one.
    pub header: Option<Header>,
    /// Path of the file in the new flist, e.g. `/disk.raw`.
    pub file_path: &'a str,
    pub store: DynStore,
    /// Store URLs recorded in the new flist (already without passwords).
    pub routes: Vec<String>,
}

fn io(context: &str) -> impl FnOnce(zosfs_flist::Error) -> Error + '_ {
    move |e| Error::with_source(ErrorKind::Io, context.to_string(), e)
}

/// Encode `plain` and put it into the store.
async fn upload(store: &DynStore, plain: Vec<u8>) -> Result<ChunkRef> {
    let enc = tokio::task::spawn_blocking(move || zosfs_store::chunk::encode(&plain))
        .await
        .map_err(|e| Error::with_source(ErrorKind::Io, "encode task", e))??;
    store.put(&enc.chunk.id, enc.blob).await?;
    Ok(enc.chunk)
}

/// The one blob of `len` zero bytes, uploaded once per length.
struct Zeros {
    refs: HashMap<u32, ChunkRef>,
}

impl Zeros {
    async fn get(&mut self, store: &DynStore, len: u32) -> Result<ChunkRef> {
        if let Some(r) = self.refs.get(&len) {
            return Ok(*r);
        }
        let r = upload(store, vec![0u8; len as usize]).await?;
        self.refs.insert(len, r);
        Ok(r)
    }
}

/// Read chunk `i` whole (local after a write; fetched otherwise).
async fn chunk_plain(dev: &LazyDevice, off: u64, len: u32) -> Result<Vec<u8>> {
    use crate::device::BlockDevice;
    let mut out = Vec::with_capacity(len as usize);
    for p in dev.read(off, len).await? {
        match p {
            ReadPiece::Data(b) => out.extend_from_slice(&b),
            ReadPiece::Zero(n) => out.resize(out.len() + n as usize, 0),
        }
    }
    Ok(out)
}

impl std::fmt::Display for CommitReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes, {} chunks: {} uploaded ({} bytes), {} reused, {} zero",
            self.size, self.chunks, self.uploaded, self.uploaded_bytes, self.reused, self.zero
        )
    }
}

/// Write the new flist to `out`.
pub async fn commit(input: CommitInput<'_>, out: &Path) -> Result<CommitReport> {
    let lazy = input.device.lazy();
    let layout = lazy.layout().clone();
    let n = layout.count();
    let dirty: HashSet<u64> = lazy.dirty_chunks().into_iter().collect();
    let mut report = CommitReport { chunks: n, size: layout.size(), ..Default::default() };
    let mut refs: Vec<Option<ChunkRef>> = vec![None; n as usize];
    let mut zeros = Zeros { refs: HashMap::new() };

    // Unchanged chunks: the base's reference, or the shared zero blob.
    for i in (0..n).filter(|i| !dirty.contains(i)) {
        let len = layout.len_of(i) as u32;
        match input.base.and_then(|b| b.get(i as usize)) {
            Some(Piece::Chunk(DataChunk::Zck1(r))) => {
                refs[i as usize] = Some(*r);
                report.reused += 1;
            }
            _ => {
                refs[i as usize] = Some(zeros.get(&input.store, len).await?);
                report.zero += 1;
            }
        }
    }
    // Changed chunks: read, and upload unless they are all zeros.
    let mut changed: Vec<u64> = dirty.into_iter().collect();
    changed.sort_unstable();
    let store = input.store.clone();
    let dev = input.device;
    let results: Vec<(u64, Option<ChunkRef>, u32)> = futures::stream::iter(changed)
        .map(|i| {
            let store = store.clone();
            let span = layout.span(i);
            async move {
                let len = (span.end - span.start) as u32;
                let plain = chunk_plain(dev, span.start, len).await?;
                if is_zero(&plain) {
                    return Ok::<_, Error>((i, None, len));
                }
                Ok((i, Some(upload(&store, plain).await?), len))
            }
        })
        .buffer_unordered(UPLOAD_DEPTH)
        .try_collect()
        .await?;
    for (i, r, len) in results {
        let r = match r {
            Some(r) => {
                report.uploaded += 1;
                report.uploaded_bytes += u64::from(len);
                r
            }
            None => {
                report.zero += 1;
                zeros.get(&input.store, len).await?
            }
        };
        refs[i as usize] = Some(r);
    }
    let refs: Vec<ChunkRef> = refs.into_iter().map(|r| r.expect("every chunk resolved")).collect();
    let header = new_header(input.header, &layout, input.routes);
    write_flist(header, input.file_path, refs, out).await?;
    Ok(report)
}

fn new_header(
    base: Option<Header>,
    layout: &zosfs_store::lazy::Layout,
    routes: Vec<String>,
) -> Header {
    let mut h = base.unwrap_or_else(|| Header {
        format_version: zosfs_flist::FORMAT_VERSION,
        chunking: Chunking::Fixed {
            size: layout
                .fixed_chunk_size()
                .unwrap_or(zosfs_store::chunk::DEFAULT_CHUNK_SIZE as u32),
        },
        codec: Codec::Zck1,
        compression_level: zosfs_store::chunk::DEFAULT_LEVEL,
        tool: String::new(),
        routes: Vec::new(),
        tags: BTreeMap::new(),
    });
    h.tool = format!("zosfs-nbdserver {}", env!("CARGO_PKG_VERSION"));
    h.codec = Codec::Zck1;
    if !routes.is_empty() {
        h.routes = routes;
    }
    h
}

/// An flist holding one regular file at `file_path` (parents implied).
async fn write_flist(
    header: Header,
    file_path: &str,
    refs: Vec<ChunkRef>,
    out: &Path,
) -> Result<()> {
    let out = out.to_path_buf();
    let file_path = file_path.to_string();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let names: Vec<&[u8]> =
            file_path.split('/').filter(|c| !c.is_empty()).map(str::as_bytes).collect();
        if names.is_empty() {
            return Err(invalid(format!("{file_path:?} names no file")));
        }
        let mtime_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let attrs = Attrs { kind: Kind::File, perm: 0o644, mtime_ns, ..Attrs::implicit_dir() };
        let mut b = Builder::new();
        b.insert(&names, attrs, Some(0), file_path.as_bytes()).map_err(io("build flist"))?;
        let tmp_parent =
            out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let mut w = Writer::create_in(tmp_parent, header).map_err(io("create flist"))?;
        b.write(&mut w, &[refs]).map_err(io("write flist"))?;
        w.finish(&out).map_err(io("finish flist"))
    })
    .await
    .map_err(|e| Error::with_source(ErrorKind::Io, "flist writer task", e))?
}
