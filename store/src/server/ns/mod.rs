//! Namespace state and storage for the 0-db-compatible server.
//!
//! A namespace is an in-memory index (key → [`Entry`], scan order) rebuilt
//! at start from its metadata [`journal`]; values live in the value store
//! (a [`DynStore`]) under blob ids derived from the namespace's random uid
//! and a random per-write nonce, so an overwrite never reuses an id and a
//! re-created namespace of the same name never sees old blobs.
//!
//! Write path (SET): hash the value, check it against the state (cheap,
//! optimistic), put the blob, re-check and apply under the state lock while
//! appending the journal record to an in-memory queue, then wait until the
//! queue has been written to the journal file (group commit: one `write(2)`
//! for every record queued meanwhile), then drop the replaced blob. A reply
//! is only sent after its record reached the file; the file is fsynced
//! periodically and at shutdown ([`Namespace::sync`]), like 0-db.
//!
//! This layer returns typed outcomes; the exact 0-db reply strings are the
//! dialect's business.

pub mod journal;
pub mod table;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::backend::DynStore;
use crate::chunk::ChunkId;
use crate::error::{Error, Result};
use journal::{JournalFile, Record, Setting};

pub use table::{CreateError, Namespaces};

/// Longest key 0-db accepts.
pub const MAX_KEY: usize = 255;
/// Longest namespace name.
pub const MAX_NAME: usize = 128;
/// Length of a sequential-mode key (a little-endian u64 id).
pub const SEQ_KEY_LEN: usize = 8;

/// How keys are chosen in a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The client names its keys.
    User,
    /// The server assigns 8-byte little-endian ids, counting from 0.
    Sequential,
}

impl Mode {
    /// The name NSINFO shows.
    pub fn info_name(self) -> &'static str {
        match self {
            Mode::User => "userkey",
            Mode::Sequential => "sequential",
        }
    }
}

/// Why writes are refused after a failed journal write or fsync.
const POISONED: &str =
    "an earlier journal write or fsync failed; namespace is read-only until restart";

/// Runtime access restriction (NSSET lock / freeze), not persisted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lock {
    Open,
    /// Writes refused, reads served.
    ReadOnly,
    /// Reads and writes refused (DBSIZE and NSINFO still answer).
    Frozen,
}

/// A namespace password: bytes that never print.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(Vec<u8>);

impl Password {
    pub fn new(b: impl Into<Vec<u8>>) -> Self {
        Password(b.into())
    }
    /// The only way to read it: call sites are easy to audit.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// Persistent settings of a namespace.
#[derive(Clone, Debug)]
pub struct Settings {
    pub password: Option<Password>,
    pub public: bool,
    pub worm: bool,
    /// Bytes of live values allowed; 0: unlimited.
    pub maxsize: u64,
    pub mode: Mode,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { password: None, public: true, worm: false, maxsize: 0, mode: Mode::User }
    }
}

/// What the index knows about a live key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Scan position: the internal id of its latest write (user mode) or
    /// its id (sequential mode).
    pub pos: u64,
    pub len: u32,
    /// Unix seconds of the latest write (or the admin-given timestamp).
    pub timestamp: u32,
    /// BLAKE3 of the value: identical re-SETs and CHECK use it.
    pub hash: [u8; 32],
    /// Where the value lives; None for an empty value.
    pub blob: Option<ChunkId>,
}

/// Why a write was refused (each maps to one 0-db error line).
#[derive(Debug)]
pub enum WriteError {
    Frozen,
    Locked,
    Worm,
    /// DEL of a key in a worm namespace.
    WormDelete,
    NoSpace,
    /// User mode SET with an empty key.
    KeyNeeded,
    /// Sequential mode SET of a key that is not an existing id.
    OnlyUpdate,
    /// DEL of a key that does not exist.
    NotFound,
    /// The value store refused the value.
    Data(Error),
    /// The journal could not be written.
    Index(Error),
}

/// Why a read failed.
#[derive(Debug)]
pub enum ReadError {
    Frozen,
    /// The index names a blob the value store does not have, or the store failed.
    Data(Error),
}

/// Result of an accepted SET.
#[derive(Debug, PartialEq, Eq)]
pub enum SetOutcome {
    /// Written; the key (the new id in sequential mode).
    Stored(Bytes),
    /// The value was already identical: nothing written.
    Unchanged,
}

/// A value read from a namespace.
#[derive(Debug)]
pub struct Value {
    pub data: Bytes,
    pub entry: Entry,
}

/// What every namespace of a server shares.
pub struct Context {
    /// Where values live.
    pub values: DynStore,
    pub stats: IoStats,
    /// fsync the journal before acknowledging each write (`--sync`);
    /// otherwise writes reach the page cache before the reply and are
    /// fsynced periodically.
    pub sync_writes: bool,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context").field("values", &self.values.url()).finish()
    }
}

/// Counters shared by all namespaces (INFO).
#[derive(Debug, Default)]
pub struct IoStats {
    pub index_write_bytes: AtomicU64,
    pub index_read_bytes: AtomicU64,
    pub data_write_bytes: AtomicU64,
    pub data_read_bytes: AtomicU64,
    pub index_write_failed: AtomicU64,
    pub data_write_failed: AtomicU64,
    pub data_read_failed: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Mutable state under the namespace lock.
#[derive(Debug)]
struct State {
    settings: Settings,
    lock: Lock,
    index: HashMap<Bytes, Entry>,
    /// pos → key, for SCAN / RSCAN.
    order: BTreeMap<u64, Bytes>,
    /// Internal id counter: every accepted write uses one.
    next_id: u64,
    /// Bytes of live values.
    data_size: u64,
    /// 0-db's index file size: 64 bytes plus the key per write.
    index_size: u64,
    /// Encoded records not yet written to the journal file.
    pending: Vec<u8>,
    /// Total bytes ever queued in `pending` (journal offset after them).
    queued: u64,
    /// Set when a journal write failed: the file no longer matches memory,
    /// so every later write is refused rather than silently lost.
    poisoned: bool,
}

/// 0-db counts 64 bytes of index header per entry.
const INDEX_ENTRY_HEADER: u64 = 64;

impl State {
    fn new(settings: Settings) -> Self {
        State {
            settings,
            lock: Lock::Open,
            index: HashMap::new(),
            order: BTreeMap::new(),
            next_id: 0,
            data_size: 0,
            index_size: 0,
            pending: Vec::new(),
            queued: 0,
            poisoned: false,
        }
    }

    /// The live entry of `key` (sequential keys must be 8 bytes).
    fn get(&self, key: &[u8]) -> Option<&Entry> {
        if self.settings.mode == Mode::Sequential && key.len() != SEQ_KEY_LEN {
            return None;
        }
        self.index.get(key)
    }

    /// Apply one replayed or new record to the in-memory state.
    fn apply(&mut self, rec: &Record) -> Option<ChunkId> {
        match rec {
            Record::Create { .. } => None,
            Record::Set { key, pos, len, timestamp, hash, blob } => {
                let key = Bytes::copy_from_slice(key);
                let entry =
                    Entry { pos: *pos, len: *len, timestamp: *timestamp, hash: *hash, blob: *blob };
                // Every write uses up one internal id, updates included.
                self.next_id += 1;
                self.index_size += INDEX_ENTRY_HEADER + key.len() as u64;
                self.data_size += *len as u64;
                self.order.insert(*pos, key.clone());
                let old = self.index.insert(key, entry)?;
                self.data_size -= old.len as u64;
                if old.pos != *pos {
                    self.order.remove(&old.pos);
                }
                old.blob
            }
            Record::Del { key } => {
                let old = self.index.remove(&key[..])?;
                self.order.remove(&old.pos);
                self.data_size -= old.len as u64;
                old.blob
            }
            Record::Setting(s) => {
                match s {
                    Setting::Password(p) if p.is_empty() => self.settings.password = None,
                    Setting::Password(p) => self.settings.password = Some(Password::new(p.clone())),
                    Setting::Public(b) => self.settings.public = *b,
                    Setting::Worm(b) => self.settings.worm = *b,
                    Setting::MaxSize(n) => self.settings.maxsize = *n,
                    Setting::Sequential(b) => {
                        self.settings.mode = if *b { Mode::Sequential } else { Mode::User }
                    }
                }
                None
            }
            Record::NextId(n) => {
                self.next_id = *n;
                None
            }
        }
    }

    /// Queue a record for the journal and apply it; returns the journal
    /// offset the caller must wait for and the blob the record replaced.
    fn commit(&mut self, rec: Record) -> (u64, Option<ChunkId>) {
        let before = self.pending.len();
        rec.encode(&mut self.pending);
        self.queued += (self.pending.len() - before) as u64;
        (self.queued, self.apply(&rec))
    }
}

/// What a SET would do given the current state.
enum SetPlan {
    Unchanged,
    /// Write under this key (a new id in sequential mode) at scan position `pos`.
    Write {
        key: Bytes,
        pos: u64,
    },
}

/// A SET request after the dialect's argument checks.
#[derive(Clone, Debug)]
pub struct SetRequest {
    pub key: Bytes,
    pub value: Bytes,
    /// Admin-given timestamp (4-argument SET); None: now.
    pub timestamp: Option<u32>,
}

/// One namespace.
pub struct Namespace {
    name: Bytes,
    uid: [u8; 16],
    order: u64,
    dir: PathBuf,
    removed: AtomicBool,
    state: Mutex<State>,
    journal: JournalFile,
    /// Serialises journal writers; holds the journal offset written so far.
    written: tokio::sync::Mutex<u64>,
    ctx: Arc<Context>,
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Namespace").field("name", &String::from_utf8_lossy(&self.name)).finish()
    }
}

/// Unix seconds now, as 0-db stores them (32 bits).
pub fn now_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// The little-endian 8-byte key of a sequential id.
pub fn seq_key(id: u64) -> Bytes {
    Bytes::copy_from_slice(&id.to_le_bytes())
}

fn hash_value(v: &[u8]) -> [u8; 32] {
    *blake3::hash(v).as_bytes()
}

/// Hash off the async workers when the value is big.
async fn hash_value_async(v: &Bytes) -> [u8; 32] {
    if v.len() < 256 * 1024 {
        return hash_value(v);
    }
    let v = v.clone();
    tokio::task::spawn_blocking(move || hash_value(&v)).await.expect("hash task panicked")
}

impl Namespace {
    /// Build a namespace from its replayed journal.
    fn from_replay(dir: PathBuf, replay: journal::Replay, ctx: Arc<Context>) -> Result<Namespace> {
        let Some(Record::Create { uid, order, name }) = replay.records.first().cloned() else {
            return Err(crate::error::corrupt(format!("{}: journal has no Create", dir.display())));
        };
        let mut state = State::new(Settings::default());
        for rec in &replay.records[1..] {
            state.apply(rec);
        }
        state.queued = replay.valid_len;
        let journal = JournalFile::open(&dir.join(table::JOURNAL), replay.valid_len)?;
        Ok(Namespace {
            name: Bytes::from(name),
            uid,
            order,
            dir,
            removed: AtomicBool::new(false),
            state: Mutex::new(state),
            journal,
            written: tokio::sync::Mutex::new(replay.valid_len),
            ctx,
        })
    }

    pub fn name(&self) -> &Bytes {
        &self.name
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn journal_path(&self) -> &Path {
        self.journal.path()
    }

    /// Creation order (NSLIST).
    pub fn order(&self) -> u64 {
        self.order
    }

    /// True once NSDEL removed it; connections still on it are dropped.
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    fn mark_removed(&self) {
        self.removed.store(true, Ordering::Release);
    }

    pub fn settings(&self) -> Settings {
        self.state.lock().settings.clone()
    }

    pub fn mode(&self) -> Mode {
        self.state.lock().settings.mode
    }

    pub fn lock_state(&self) -> Lock {
        self.state.lock().lock
    }

    pub fn set_lock(&self, lock: Lock) {
        self.state.lock().lock = lock;
    }

    /// Live keys (DBSIZE).
    pub fn len(&self) -> usize {
        self.state.lock().index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Facts NSINFO shows.
    pub fn info(&self) -> NsInfo {
        let s = self.state.lock();
        NsInfo {
            entries: s.index.len() as u64,
            settings: s.settings.clone(),
            locked: s.lock != Lock::Open,
            data_size: s.data_size,
            index_size: s.index_size,
            next_id: s.next_id,
        }
    }

    /// Never written to (only then may its mode change).
    pub fn is_fresh(&self) -> bool {
        self.state.lock().next_id == 0
    }

    /// Err(Frozen) when reads are disabled.
    pub fn readable(&self) -> Result<(), ReadError> {
        match self.state.lock().lock {
            Lock::Frozen => Err(ReadError::Frozen),
            _ => Ok(()),
        }
    }

    /// The entry of a live key, unless the namespace is frozen.
    pub fn entry(&self, key: &[u8]) -> Result<Option<Entry>, ReadError> {
        let s = self.state.lock();
        if s.lock == Lock::Frozen {
            return Err(ReadError::Frozen);
        }
        Ok(s.get(key).cloned())
    }

    /// Read a value.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Value>, ReadError> {
        let Some(mut entry) = self.entry(key)? else { return Ok(None) };
        // A concurrent overwrite may drop the blob we are about to read;
        // then the index has moved on and we read the new one.
        for _ in 0..8 {
            let Some(blob) = entry.blob else {
                return Ok(Some(Value { data: Bytes::new(), entry }));
            };
            match self.ctx.values.get(&blob).await {
                Ok(Some(data)) => {
                    add(&self.ctx.stats.data_read_bytes, data.len() as u64);
                    return Ok(Some(Value { data, entry }));
                }
                Ok(None) => {}
                Err(e) => {
                    add(&self.ctx.stats.data_read_failed, 1);
                    return Err(ReadError::Data(e));
                }
            }
            match self.entry(key)? {
                Some(now) if now != entry => entry = now,
                Some(_) => break,
                None => return Ok(None),
            }
        }
        add(&self.ctx.stats.data_read_failed, 1);
        Err(ReadError::Data(Error::new(
            crate::ErrorKind::NotFound,
            format!(
                "value of a key in namespace {:?} is missing from {}",
                self,
                self.ctx.values.url()
            ),
        )))
    }

    /// CHECK: Some(true) if the stored value still hashes to what was written.
    pub async fn check(&self, key: &[u8]) -> Result<Option<bool>, ReadError> {
        match self.get(key).await {
            Ok(Some(v)) => {
                let data = v.data.clone();
                let ok = hash_value_async(&data).await == v.entry.hash;
                Ok(Some(ok))
            }
            Ok(None) => Ok(None),
            Err(ReadError::Data(e)) if e.kind() == crate::ErrorKind::NotFound => Ok(Some(false)),
            Err(e) => Err(e),
        }
    }

    /// Decide what a SET does, in 0-db's order of checks.
    fn plan_set(s: &State, key: &Bytes, len: u64, hash: &[u8; 32]) -> Result<SetPlan, WriteError> {
        if s.poisoned {
            return Err(WriteError::Index(Error::new(crate::ErrorKind::Io, POISONED)));
        }
        match s.lock {
            Lock::Frozen => return Err(WriteError::Frozen),
            Lock::ReadOnly => return Err(WriteError::Locked),
            Lock::Open => {}
        }
        let existing = if key.is_empty() { None } else { s.get(key) };
        if existing.is_some() && s.settings.worm {
            return Err(WriteError::Worm);
        }
        if s.settings.maxsize > 0 {
            let floating = existing.map_or(0, |e| e.len as u64);
            if s.data_size + len > s.settings.maxsize + floating {
                return Err(WriteError::NoSpace);
            }
        }
        match s.settings.mode {
            Mode::User if key.is_empty() => return Err(WriteError::KeyNeeded),
            Mode::Sequential if !key.is_empty() && existing.is_none() => {
                return Err(WriteError::OnlyUpdate);
            }
            _ => {}
        }
        if let Some(e) = existing {
            if e.len as u64 == len && &e.hash == hash {
                return Ok(SetPlan::Unchanged);
            }
        }
        Ok(match (s.settings.mode, existing) {
            (Mode::Sequential, Some(e)) => SetPlan::Write { key: key.clone(), pos: e.pos },
            (Mode::Sequential, None) => SetPlan::Write { key: seq_key(s.next_id), pos: s.next_id },
            (Mode::User, _) => SetPlan::Write { key: key.clone(), pos: s.next_id },
        })
    }

    /// A fresh blob id for a value of this namespace.
    fn new_blob_id(&self) -> ChunkId {
        let mut h = blake3::Hasher::new_derive_key("zosfs chunkstore serve 2025 value blob id v1");
        h.update(&self.uid);
        h.update(&rand::random::<[u8; 16]>());
        ChunkId(*h.finalize().as_bytes())
    }

    /// SET.
    pub async fn set(&self, req: SetRequest) -> Result<SetOutcome, WriteError> {
        let hash = hash_value_async(&req.value).await;
        let len = req.value.len() as u64;
        // Optimistic check first, so refused and identical writes never
        // touch the value store.
        if let SetPlan::Unchanged = Self::plan_set(&self.state.lock(), &req.key, len, &hash)? {
            return Ok(SetOutcome::Unchanged);
        }
        let blob = if req.value.is_empty() {
            None
        } else {
            let id = self.new_blob_id();
            if let Err(e) = self.ctx.values.put(&id, req.value.clone()).await {
                add(&self.ctx.stats.data_write_failed, 1);
                return Err(WriteError::Data(e));
            }
            add(&self.ctx.stats.data_write_bytes, len);
            Some(id)
        };
        let committed = {
            let mut s = self.state.lock();
            let plan = if self.is_removed() {
                // NSDEL raced with this write: do not leave a blob behind.
                Err(WriteError::Index(Error::new(crate::ErrorKind::NotFound, "namespace removed")))
            } else {
                Self::plan_set(&s, &req.key, len, &hash)
            };
            match plan {
                Ok(SetPlan::Write { key, pos }) => {
                    let rec = Record::Set {
                        key: key.to_vec(),
                        pos,
                        len: len as u32,
                        timestamp: req.timestamp.unwrap_or_else(now_u32),
                        hash,
                        blob,
                    };
                    let (end, replaced) = s.commit(rec);
                    Ok((key, end, replaced))
                }
                Ok(SetPlan::Unchanged) => Err(Ok(SetOutcome::Unchanged)),
                Err(e) => Err(Err(e)),
            }
        };
        match committed {
            Ok((key, end, replaced)) => {
                self.wait_written(end).await.map_err(WriteError::Index)?;
                if let Some(old) = replaced {
                    self.drop_blob(old).await;
                }
                Ok(SetOutcome::Stored(key))
            }
            // The state changed while the blob was being stored.
            Err(outcome) => {
                if let Some(id) = blob {
                    self.drop_blob(id).await;
                }
                outcome
            }
        }
    }

    /// DEL.
    pub async fn del(&self, key: &[u8]) -> Result<(), WriteError> {
        let (end, replaced) = {
            let mut s = self.state.lock();
            match s.lock {
                Lock::Frozen => return Err(WriteError::Frozen),
                Lock::ReadOnly => return Err(WriteError::Locked),
                Lock::Open => {}
            }
            if s.get(key).is_none() {
                return Err(WriteError::NotFound);
            }
            if s.settings.worm {
                return Err(WriteError::WormDelete);
            }
            if s.poisoned {
                return Err(WriteError::Index(Error::new(crate::ErrorKind::Io, POISONED)));
            }
            s.commit(Record::Del { key: key.to_vec() })
        };
        self.wait_written(end).await.map_err(WriteError::Index)?;
        if let Some(old) = replaced {
            self.drop_blob(old).await;
        }
        Ok(())
    }

    /// Change a persistent setting (NSSET).
    pub async fn set_setting(&self, setting: Setting) -> Result<()> {
        let end = {
            let mut s = self.state.lock();
            s.commit(Record::Setting(setting)).0
        };
        self.wait_written(end).await
    }

    async fn drop_blob(&self, id: ChunkId) {
        if let Err(e) = self.ctx.values.delete(&id).await {
            tracing::warn!("namespace {self:?}: could not delete replaced value {id}: {e}");
        }
    }

    /// Wait until the journal file holds everything queued up to `end`,
    /// writing it ourselves if nobody else is (group commit).
    async fn wait_written(&self, end: u64) -> Result<()> {
        let mut written = self.written.lock().await;
        if *written >= end {
            return Ok(());
        }
        let (buf, upto) = {
            let mut s = self.state.lock();
            (std::mem::take(&mut s.pending), s.queued)
        };
        let file = self.journal.handle();
        let n = buf.len() as u64;
        let sync = self.ctx.sync_writes;
        let res = tokio::task::spawn_blocking(move || {
            file.append(&buf)?;
            if sync { file.sync() } else { Ok(()) }
        })
        .await
        .expect("journal write task panicked");
        match res {
            Ok(()) => {
                add(&self.ctx.stats.index_write_bytes, n);
                *written = upto;
                Ok(())
            }
            Err(e) => {
                add(&self.ctx.stats.index_write_failed, 1);
                tracing::error!("namespace {self:?}: {e}; refusing further writes");
                self.state.lock().poisoned = true;
                Err(e)
            }
        }
    }

    /// Make everything written so far durable (fsync the journal).
    ///
    /// A failed fsync poisons the namespace like a failed write: after a
    /// writeback error Linux may have dropped the dirty pages and a retried
    /// fsync succeeds without them, so acknowledged writes may be gone and
    /// only a restart (replay checks every frame) tells what is on disk.
    pub async fn sync(&self) -> Result<()> {
        let queued = self.state.lock().queued;
        self.wait_written(queued).await?;
        let file = self.journal.handle();
        let res =
            tokio::task::spawn_blocking(move || file.sync()).await.expect("fsync task panicked");
        if let Err(e) = &res {
            add(&self.ctx.stats.index_write_failed, 1);
            tracing::error!("namespace {self:?}: {e}; refusing further writes");
            self.state.lock().poisoned = true;
        }
        res
    }

    /// Up to `limit` entries after (or, backwards, before) a scan position.
    pub fn scan(
        &self,
        from: Option<u64>,
        backwards: bool,
        limit: usize,
    ) -> Result<Vec<(Bytes, Entry)>, ReadError> {
        use std::ops::Bound::{Excluded, Unbounded};
        let s = self.state.lock();
        if s.lock == Lock::Frozen {
            return Err(ReadError::Frozen);
        }
        let pick = |(_, k): (&u64, &Bytes)| (k.clone(), s.index[k].clone());
        Ok(match (from, backwards) {
            (None, false) => s.order.iter().take(limit).map(pick).collect(),
            (None, true) => s.order.iter().rev().take(limit).map(pick).collect(),
            (Some(p), false) => {
                s.order.range((Excluded(p), Unbounded)).take(limit).map(pick).collect()
            }
            (Some(p), true) => s.order.range(..p).rev().take(limit).map(pick).collect(),
        })
    }

    /// The uid (scan cursors are bound to it).
    pub fn uid(&self) -> &[u8; 16] {
        &self.uid
    }

    /// Records that rebuild the current state (compaction).
    fn snapshot(&self) -> Vec<Record> {
        let s = self.state.lock();
        let mut out =
            vec![Record::Create { uid: self.uid, order: self.order, name: self.name.to_vec() }];
        let st = &s.settings;
        if st.mode == Mode::Sequential {
            out.push(Record::Setting(Setting::Sequential(true)));
        }
        if let Some(p) = &st.password {
            out.push(Record::Setting(Setting::Password(p.expose().to_vec())));
        }
        if !st.public {
            out.push(Record::Setting(Setting::Public(false)));
        }
        if st.worm {
            out.push(Record::Setting(Setting::Worm(true)));
        }
        if st.maxsize != 0 {
            out.push(Record::Setting(Setting::MaxSize(st.maxsize)));
        }
        for key in s.order.values() {
            let e = &s.index[key];
            out.push(Record::Set {
                key: key.to_vec(),
                pos: e.pos,
                len: e.len,
                timestamp: e.timestamp,
                hash: e.hash,
                blob: e.blob,
            });
        }
        out.push(Record::NextId(s.next_id));
        out
    }

    /// Every blob the namespace references (NSDEL cleanup).
    fn blobs(&self) -> Vec<ChunkId> {
        self.state.lock().index.values().filter_map(|e| e.blob).collect()
    }

    pub fn values(&self) -> &DynStore {
        &self.ctx.values
    }
}

/// Facts shown by NSINFO.
#[derive(Clone, Debug)]
pub struct NsInfo {
    pub entries: u64,
    pub settings: Settings,
    pub locked: bool,
    pub data_size: u64,
    pub index_size: u64,
    pub next_id: u64,
}

#[cfg(test)]
mod tests;
