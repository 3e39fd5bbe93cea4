//! Network stores: 0-db (`zdb://`, `zdb+unix://`) and plain Redis
//! (`redis://`, `redis+unix://`), both spoken through the `redis` crate.
//!
//! * [`pool`] — connections, one request in flight each, timeouts,
//!   retries with backoff on transport failures only;
//! * [`conn`] — one socket under a `redis` connection;
//! * [`zdb`] / [`redis`](self::redis) — per-server session setup and the
//!   meaning of each reply.
//!
//! Chunks are stored under their raw 32-byte id. Values over
//! [`MAX_BLOB`] are refused before anything is sent (0-db drops the
//! connection on them). Messages name the URL without its password.

pub mod admin;
mod conn;
mod pool;
mod redis;
mod zdb;

use std::sync::Arc;

use ::redis::{Cmd, Value};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use self::pool::Pool;
use crate::backend::{ChunkStore, DynStore, OpenOptions, StoreStats};
use crate::chunk::{ChunkId, MAX_BLOB};
use crate::error::{Error, ErrorKind, Result, invalid};
use crate::url::{Backend, StoreUrl};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialect {
    Zdb,
    Redis,
}

/// A 0-db namespace or a Redis database as a [`ChunkStore`].
pub struct RemoteStore {
    pool: Pool,
    name: String,
    dialect: Dialect,
    /// 0-db namespace (for NSINFO).
    namespace: Option<String>,
    pool_size: usize,
}

/// Open a network store. A wrong password or a missing namespace fails here;
/// an unreachable server does not (it is reported by each request, and the
/// router keeps working with the other replicas meanwhile).
pub async fn open(url: &StoreUrl, opts: &OpenOptions) -> Result<DynStore> {
    let store = RemoteStore::new(url, opts)?;
    match store.probe().await {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::Unavailable => {
            tracing::warn!("{}", e.chain());
        }
        Err(e) => return Err(e),
    }
    Ok(Arc::new(store))
}

impl RemoteStore {
    /// Build without connecting.
    pub fn new(url: &StoreUrl, opts: &OpenOptions) -> Result<RemoteStore> {
        let name = url.redacted();
        let (addr, dialect, namespace, session): (_, _, _, Box<dyn pool::Session>) =
            match &url.backend {
                Backend::Zdb { addr, namespace, password, plaintext_auth } => (
                    addr.clone(),
                    Dialect::Zdb,
                    Some(namespace.clone()),
                    Box::new(zdb::ZdbSession {
                        name: name.clone(),
                        namespace: namespace.clone(),
                        password: password.clone(),
                        plaintext_auth: *plaintext_auth,
                    }),
                ),
                Backend::Redis { addr, db, password } => (
                    addr.clone(),
                    Dialect::Redis,
                    None,
                    Box::new(redis::RedisSession {
                        name: name.clone(),
                        db: *db,
                        password: password.clone(),
                    }),
                ),
                _ => return Err(invalid(format!("{name}: not a network store URL"))),
            };
        if opts.timeout.is_zero() {
            return Err(invalid(format!("{name}: network timeout must be above zero")));
        }
        let pool = Pool::new(addr, name.clone(), opts, session);
        Ok(RemoteStore { pool, name, dialect, namespace, pool_size: opts.pool_size.max(1) })
    }

    /// Connect once (no retry) and check the session and that the server
    /// answers PING.
    pub async fn probe(&self) -> Result<()> {
        match self.pool.query_once("PING", &::redis::cmd("PING")).await? {
            Value::SimpleString(s) if s == "PONG" => Ok(()),
            Value::Okay => Ok(()),
            Value::ServerError(e) => Err(self.map_error("PING", &conn::server_error_text(&e))),
            other => Err(unexpected(&self.name, "PING", &other)),
        }
    }

    fn map_error(&self, what: &str, text: &str) -> Error {
        match self.dialect {
            Dialect::Zdb => zdb::map_error(&self.name, what, text),
            Dialect::Redis => redis::map_error(&self.name, what, text),
        }
    }

    fn refuse_oversize(&self, id: &ChunkId, len: usize) -> Result<()> {
        if len > MAX_BLOB {
            return Err(invalid(format!(
                "{}: chunk {id}: value of {len} bytes is over the 8 MiB (8388608 bytes) limit",
                self.name
            )));
        }
        Ok(())
    }

    async fn get_reply(&self, id: &ChunkId, v: Value) -> Result<Option<Bytes>> {
        match v {
            Value::BulkString(b) => Ok(Some(Bytes::from(b))),
            Value::Nil => Ok(None),
            Value::ServerError(e) => {
                Err(self.map_error(&format!("GET chunk {id}"), &conn::server_error_text(&e)))
            }
            other => Err(unexpected(&self.name, &format!("GET chunk {id}"), &other)),
        }
    }

    fn exists_reply(&self, id: &ChunkId, v: Value) -> Result<bool> {
        match v {
            Value::Int(n) => Ok(n > 0),
            Value::ServerError(e) => {
                Err(self.map_error(&format!("EXISTS chunk {id}"), &conn::server_error_text(&e)))
            }
            other => Err(unexpected(&self.name, &format!("EXISTS chunk {id}"), &other)),
        }
    }

    /// A write-once 0-db namespace refuses any SET of an existing key, even
    /// an identical one: the put succeeded if the stored value is ours.
    async fn put_worm(&self, id: &ChunkId, blob: &Bytes) -> Result<()> {
        match self.get(id).await? {
            Some(have) if have == *blob => Ok(()),
            Some(_) => Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "{}: SET chunk {id}: the namespace is write-once (worm) and holds \
                     different bytes under this id",
                    self.name
                ),
            )),
            None => Err(Error::new(
                ErrorKind::Protocol,
                format!(
                    "{}: SET chunk {id}: refused by worm mode but the key is missing",
                    self.name
                ),
            )),
        }
    }
}

fn key_cmd(name: &str, id: &ChunkId) -> Cmd {
    let mut c = ::redis::cmd(name);
    c.arg(id.as_bytes().as_slice());
    c
}

/// A reply of a type the command never produces.
pub(crate) fn unexpected(name: &str, what: &str, v: &Value) -> Error {
    let shown = match v {
        Value::BulkString(b) => format!("a {}-byte bulk string", b.len()),
        Value::ServerError(e) => format!("error {:?}", conn::server_error_text(e)),
        other => format!("{other:?}").chars().take(80).collect(),
    };
    Error::new(ErrorKind::Protocol, format!("{name}: {what}: unexpected reply: {shown}"))
}

/// Ids per EXISTS pipeline on Redis.
const EXISTS_BATCH: usize = 256;

/// Keys Redis is asked for per SCAN page (a hint; it may return more or fewer).
const SCAN_COUNT: usize = 1000;

#[async_trait]
impl ChunkStore for RemoteStore {
    fn url(&self) -> &str {
        &self.name
    }

    async fn get(&self, id: &ChunkId) -> Result<Option<Bytes>> {
        let v = self.pool.query("GET", &key_cmd("GET", id)).await?;
        self.get_reply(id, v).await
    }

    async fn put(&self, id: &ChunkId, blob: Bytes) -> Result<()> {
        self.refuse_oversize(id, blob.len())?;
        let mut cmd = key_cmd("SET", id);
        cmd.arg(&blob[..]);
        if self.dialect == Dialect::Redis {
            cmd.arg("NX");
        }
        let v = self.pool.query("SET", &cmd).await?;
        match self.dialect {
            Dialect::Zdb => match zdb::set_reply(&self.name, id, v)? {
                zdb::SetOutcome::Stored => Ok(()),
                zdb::SetOutcome::Worm => self.put_worm(id, &blob).await,
            },
            Dialect::Redis => match v {
                Value::Okay | Value::Nil => Ok(()),
                Value::ServerError(e) => {
                    Err(self.map_error(&format!("SET chunk {id}"), &conn::server_error_text(&e)))
                }
                other => Err(unexpected(&self.name, &format!("SET chunk {id}"), &other)),
            },
        }
    }

    async fn has(&self, id: &ChunkId) -> Result<bool> {
        let v = self.pool.query("EXISTS", &key_cmd("EXISTS", id)).await?;
        self.exists_reply(id, v)
    }

    async fn delete(&self, id: &ChunkId) -> Result<bool> {
        let v = self.pool.query("DEL", &key_cmd("DEL", id)).await?;
        match self.dialect {
            Dialect::Zdb => zdb::del_reply(&self.name, id, v),
            Dialect::Redis => match v {
                Value::Int(n) => Ok(n > 0),
                Value::ServerError(e) => {
                    Err(self.map_error(&format!("DEL chunk {id}"), &conn::server_error_text(&e)))
                }
                other => Err(unexpected(&self.name, &format!("DEL chunk {id}"), &other)),
            },
        }
    }

    async fn has_many(&self, ids: &[ChunkId]) -> Result<Vec<bool>> {
        match self.dialect {
            // One connection per request: spread the EXISTS over the pool.
            Dialect::Zdb => {
                let asks: Vec<_> = ids.iter().map(|id| self.has(id)).collect();
                futures::stream::iter(asks).buffered(self.pool_size).try_collect().await
            }
            // Redis sets TCP_NODELAY: pipelining pays.
            Dialect::Redis => {
                let mut out = Vec::with_capacity(ids.len());
                for batch in ids.chunks(EXISTS_BATCH) {
                    let mut pipe = ::redis::pipe();
                    for id in batch {
                        pipe.add_command(key_cmd("EXISTS", id));
                    }
                    let replies = self.pool.query_many("EXISTS", &pipe, batch.len()).await?;
                    if replies.len() != batch.len() {
                        return Err(Error::new(
                            ErrorKind::Protocol,
                            format!(
                                "{}: EXISTS: {} replies for {} requests",
                                self.name,
                                replies.len(),
                                batch.len()
                            ),
                        ));
                    }
                    for (id, v) in batch.iter().zip(replies) {
                        out.push(self.exists_reply(id, v)?);
                    }
                }
                Ok(out)
            }
        }
    }

    /// Every key of the namespace / database that is a 32-byte id, by SCAN
    /// (0-db: cursor pages until "No more data"; Redis: until cursor 0).
    /// Keys of other lengths are not chunks and are left out.
    async fn list_ids(&self) -> Result<Vec<ChunkId>> {
        let mut out = Vec::new();
        let mut keep = |keys: Vec<Vec<u8>>| {
            out.extend(keys.into_iter().filter_map(|k| Some(ChunkId(k.try_into().ok()?))));
        };
        match self.dialect {
            Dialect::Zdb => {
                let mut cursor: Option<Vec<u8>> = None;
                loop {
                    let mut cmd = ::redis::cmd("SCAN");
                    if let Some(c) = &cursor {
                        cmd.arg(c.as_slice());
                    }
                    match zdb::scan_page(&self.name, self.pool.query("SCAN", &cmd).await?)? {
                        Some((next, keys)) => {
                            keep(keys);
                            cursor = Some(next);
                        }
                        None => break,
                    }
                }
            }
            Dialect::Redis => {
                let mut cursor = 0u64;
                loop {
                    let mut cmd = ::redis::cmd("SCAN");
                    cmd.arg(cursor).arg("COUNT").arg(SCAN_COUNT);
                    let (next, keys) =
                        redis::scan_page(&self.name, self.pool.query("SCAN", &cmd).await?)?;
                    keep(keys);
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
        }
        // Redis SCAN may return a key more than once.
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn stats(&self) -> Result<StoreStats> {
        let mut st = StoreStats::default();
        match (self.dialect, &self.namespace) {
            (Dialect::Zdb, Some(ns)) => {
                let mut cmd = ::redis::cmd("NSINFO");
                cmd.arg(ns.as_str());
                match self.pool.query("NSINFO", &cmd).await? {
                    Value::BulkString(b) => {
                        let (entries, bytes) = zdb::nsinfo_counts(&String::from_utf8_lossy(&b));
                        st.chunks = entries.unwrap_or(0);
                        st.bytes = bytes.unwrap_or(0);
                    }
                    Value::ServerError(e) => {
                        return Err(self.map_error("NSINFO", &conn::server_error_text(&e)));
                    }
                    other => return Err(unexpected(&self.name, "NSINFO", &other)),
                }
            }
            _ => match self.pool.query("DBSIZE", &::redis::cmd("DBSIZE")).await? {
                Value::Int(n) => st.chunks = n.max(0) as u64,
                Value::ServerError(e) => {
                    return Err(self.map_error("DBSIZE", &conn::server_error_text(&e)));
                }
                other => return Err(unexpected(&self.name, "DBSIZE", &other)),
            },
        }
        Ok(st)
    }
}
