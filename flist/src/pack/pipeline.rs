//! The chunk pipeline: readers cut file contents into chunks, encoder
//! threads (one per core) encode them, one uploader task asks the store
//! which of a batch of new chunks it already has and puts only the rest.
//!
//! Memory stays bounded whatever the file sizes: readers block on a bounded
//! channel of plaintext chunks, encoders on a bounded channel of blobs, and
//! at most `PUTS_IN_FLIGHT` puts run at once.
//!
//! A chunk id seen once in this pack is never encoded for upload again
//! (identical chunks uploaded once); a chunk the store has is not re-sent.

use std::collections::HashSet;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use futures::StreamExt;
use zosfs_store::{ChunkId, ChunkRef};

use crate::content::Store;
use crate::error::{Error, ErrorKind, Result};
use crate::model::Chunking;
use crate::pack::builder::ContentId;

/// Blobs handed to the uploader and not yet stored.
const UPLOAD_QUEUE: usize = 64;
const PUTS_IN_FLIGHT: usize = 16;
const HAS_BATCH: usize = 256;

/// Live counters, read by progress displays while a pack runs.
#[derive(Debug, Default)]
pub struct Counters {
    /// Regular files whose content is to be read (0 until known).
    pub files_total: AtomicU64,
    pub files_done: AtomicU64,
    /// Bytes of content to read (0 until known, e.g. for a tar stream).
    pub bytes_total: AtomicU64,
    pub bytes_read: AtomicU64,
    /// Chunk references produced (with duplicates).
    pub chunks: AtomicU64,
    /// Distinct chunks in this pack.
    pub chunks_unique: AtomicU64,
    /// Plaintext bytes of the distinct chunks.
    pub bytes_unique: AtomicU64,
    /// Distinct chunks the store already had.
    pub chunks_present: AtomicU64,
    /// Chunks put into the store, and their blob bytes.
    pub chunks_uploaded: AtomicU64,
    pub bytes_uploaded: AtomicU64,
}

impl Counters {
    /// Plaintext bytes over distinct plaintext bytes (1.0 = no duplicates).
    pub fn dedup_ratio(&self) -> f64 {
        let unique = self.bytes_unique.load(Ordering::Relaxed);
        if unique == 0 {
            return 1.0;
        }
        self.bytes_read.load(Ordering::Relaxed) as f64 / unique as f64
    }
}

struct Job {
    content: ContentId,
    index: u32,
    data: Vec<u8>,
}

struct Shared {
    counters: Arc<Counters>,
    seen: Mutex<HashSet<ChunkId>>,
    results: Mutex<Vec<Vec<(u32, ChunkRef)>>>,
    failed: AtomicBool,
    error: Mutex<Option<Error>>,
}

impl Shared {
    fn fail(&self, e: Error) {
        let mut slot = self.error.lock().expect("error lock");
        if slot.is_none() {
            *slot = Some(e);
        }
        self.failed.store(true, Ordering::SeqCst);
    }

    fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    fn record(&self, content: ContentId, index: u32, c: ChunkRef) {
        let mut r = self.results.lock().expect("results lock");
        if r.len() <= content {
            r.resize_with(content + 1, Vec::new);
        }
        r[content].push((index, c));
    }
}

/// The running pipeline. Feed it with [`Pipeline::sink`], then [`Pipeline::finish`].
pub struct Pipeline {
    jobs: Option<SyncSender<Job>>,
    encoders: Vec<JoinHandle<()>>,
    uploader: Option<tokio::task::JoinHandle<()>>,
    shared: Arc<Shared>,
    chunking: Chunking,
    store: Store,
    rt: tokio::runtime::Handle,
}

/// A handle readers use to submit file contents.
#[derive(Clone)]
pub struct Sink {
    jobs: SyncSender<Job>,
    shared: Arc<Shared>,
    chunking: Chunking,
}

impl Pipeline {
    pub fn start(
        store: Store,
        rt: tokio::runtime::Handle,
        chunking: Chunking,
        level: i32,
        workers: usize,
        counters: Arc<Counters>,
    ) -> Pipeline {
        let workers = workers.max(1);
        let shared = Arc::new(Shared {
            counters,
            seen: Mutex::new(HashSet::new()),
            results: Mutex::new(Vec::new()),
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
        });
        let (jobs_tx, jobs_rx) = sync_channel::<Job>(workers * 2);
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let (up_tx, up_rx) = tokio::sync::mpsc::channel::<(ChunkId, Bytes)>(UPLOAD_QUEUE);
        let uploader = rt.spawn(upload_loop(store.clone(), up_rx, shared.clone()));
        let encoders = (0..workers)
            .map(|i| {
                let rx = jobs_rx.clone();
                let tx = up_tx.clone();
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("flist-encode-{i}"))
                    .spawn(move || encode_loop(rx, tx, shared, level))
                    .expect("spawn encoder thread")
            })
            .collect();
        Pipeline {
            jobs: Some(jobs_tx),
            encoders,
            uploader: Some(uploader),
            shared,
            chunking,
            store,
            rt,
        }
    }

    pub fn sink(&self) -> Sink {
        Sink {
            jobs: self.jobs.clone().expect("pipeline running"),
            shared: self.shared.clone(),
            chunking: self.chunking,
        }
    }

    /// Whether something failed (readers should stop early).
    pub fn failed(&self) -> bool {
        self.shared.failed()
    }

    /// Record a failure found outside the pipeline (e.g. by a reader).
    pub fn fail(&self, e: Error) {
        self.shared.fail(e)
    }

    /// Wait for every chunk to be stored; returns the chunk list of each
    /// content id `0..contents`. All sinks must have been dropped.
    pub fn finish(mut self, contents: usize) -> Result<Vec<Vec<ChunkRef>>> {
        drop(self.jobs.take());
        for h in self.encoders.drain(..) {
            if h.join().is_err() {
                self.shared.fail(Error::new(ErrorKind::Io, "an encoder thread panicked"));
            }
        }
        if let Some(up) = self.uploader.take() {
            if self.rt.block_on(up).is_err() {
                self.shared.fail(Error::new(ErrorKind::Io, "the uploader task panicked"));
            }
        }
        if let Some(e) = self.shared.error.lock().expect("error lock").take() {
            return Err(e);
        }
        let store = self.store.clone();
        self.rt.block_on(async move { store.sync().await })?;
        let mut results = std::mem::take(&mut *self.shared.results.lock().expect("results lock"));
        results.resize_with(contents.max(results.len()), Vec::new);
        results
            .into_iter()
            .enumerate()
            .map(|(content, mut parts)| {
                parts.sort_by_key(|(i, _)| *i);
                for (want, (got, _)) in parts.iter().enumerate() {
                    if *got as usize != want {
                        return Err(Error::new(
                            ErrorKind::Io,
                            format!("content {content}: chunk {want} was lost"),
                        ));
                    }
                }
                Ok(parts.into_iter().map(|(_, c)| c).collect())
            })
            .collect()
    }
}

impl Sink {
    /// Cut everything `r` yields into chunks of content `content`; returns
    /// the bytes read. Blocks while the pipeline is full.
    pub fn chunk_reader(&self, content: ContentId, r: &mut dyn Read) -> Result<u64> {
        let mut index = 0u32;
        let mut total = 0u64;
        let mut send = |data: Vec<u8>| -> Result<()> {
            if self.shared.failed() {
                return Err(Error::new(ErrorKind::Io, "pack aborted"));
            }
            total += data.len() as u64;
            self.shared.counters.bytes_read.fetch_add(data.len() as u64, Ordering::Relaxed);
            let job = Job { content, index, data };
            index = index
                .checked_add(1)
                .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "file has too many chunks"))?;
            self.jobs.send(job).map_err(|_| Error::new(ErrorKind::Io, "pack aborted"))
        };
        match self.chunking {
            Chunking::Fixed { size } => loop {
                let mut buf = vec![0u8; size as usize];
                let n = read_full(r, &mut buf)?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                send(buf)?;
                if n < size as usize {
                    break;
                }
            },
            Chunking::FastCdc { min, avg, max } => {
                for c in fastcdc::v2020::StreamCDC::new(r, min, avg, max) {
                    let c = c.map_err(|e| Error::with_source(ErrorKind::Io, "read", e))?;
                    send(c.data)?;
                }
            }
        }
        self.shared.counters.files_done.fetch_add(1, Ordering::Relaxed);
        Ok(total)
    }
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read", e)),
        }
    }
    Ok(done)
}

fn encode_loop(
    rx: Arc<Mutex<Receiver<Job>>>,
    tx: tokio::sync::mpsc::Sender<(ChunkId, Bytes)>,
    shared: Arc<Shared>,
    level: i32,
) {
    loop {
        let job = match rx.lock().expect("jobs lock").recv() {
            Ok(j) => j,
            Err(_) => return, // all readers done
        };
        if shared.failed() {
            continue; // drain so readers never block forever
        }
        let enc = match zosfs_store::chunk::encode_with(&job.data, level) {
            Ok(e) => e,
            Err(e) => {
                shared.fail(e.into());
                continue;
            }
        };
        let c = &shared.counters;
        c.chunks.fetch_add(1, Ordering::Relaxed);
        shared.record(job.content, job.index, enc.chunk);
        let new = shared.seen.lock().expect("seen lock").insert(enc.chunk.id);
        if new {
            c.chunks_unique.fetch_add(1, Ordering::Relaxed);
            c.bytes_unique.fetch_add(job.data.len() as u64, Ordering::Relaxed);
            if tx.blocking_send((enc.chunk.id, enc.blob)).is_err() {
                shared.fail(Error::new(ErrorKind::Io, "the uploader stopped"));
            }
        }
    }
}

async fn upload_loop(
    store: Store,
    mut rx: tokio::sync::mpsc::Receiver<(ChunkId, Bytes)>,
    shared: Arc<Shared>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch: Vec<(ChunkId, Bytes)> = Vec::with_capacity(HAS_BATCH);
        batch.push(first);
        while batch.len() < HAS_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        if shared.failed() {
            continue; // keep receiving so encoders never block forever
        }
        if let Err(e) = upload_batch(store.clone(), batch, shared.clone()).await {
            shared.fail(e);
        }
    }
}

async fn upload_batch(
    store: Store,
    batch: Vec<(ChunkId, Bytes)>,
    shared: Arc<Shared>,
) -> Result<()> {
    let ids: Vec<ChunkId> = batch.iter().map(|(id, _)| *id).collect();
    // Skip only chunks every replica has: a chunk already in the local store
    // must still reach a remote replica that lacks it.
    let present = store.has_many_everywhere(&ids).await?;
    let missing: Vec<(ChunkId, Bytes)> =
        batch.into_iter().zip(present).filter(|(_, p)| !*p).map(|(b, _)| b).collect();
    let c = &shared.counters;
    c.chunks_present.fetch_add((ids.len() - missing.len()) as u64, Ordering::Relaxed);
    let results: Vec<Result<()>> = futures::stream::iter(missing)
        .map(|(id, blob)| {
            let store = store.clone();
            let shared = shared.clone();
            async move {
                let len = blob.len() as u64;
                store.put(&id, blob).await?;
                shared.counters.chunks_uploaded.fetch_add(1, Ordering::Relaxed);
                shared.counters.bytes_uploaded.fetch_add(len, Ordering::Relaxed);
                Ok(())
            }
        })
        .buffer_unordered(PUTS_IN_FLIGHT)
        .collect()
        .await;
    results.into_iter().collect()
}
