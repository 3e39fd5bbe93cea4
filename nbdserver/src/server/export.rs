//! Exports: a name, a shared device, and the transmission flags derived
//! from them. The table is shared by all connections and may be replaced
//! as a whole (config reload) without disturbing connections already in
//! transmission, which hold their own `Arc<Export>`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use zosfs_flist::Codec;
use zosfs_flist::source::FileSource;
use zosfs_flist::stores::StoreOpener;
use zosfs_store::DynStore;
use zosfs_store::engine::IoEngine;
use zosfs_store::lazy::{BlankSource, ChunkSource, Layout, LazyFile, LazyOptions};

use super::counters::ExportCounters;
use crate::commit::{CommitInput, CommitReport, commit};
use crate::device::BlockDevice;
use crate::device::image::Image;
use crate::device::lazy::LazyDevice;
use crate::device::spec::{DeviceSpec, ExportSpec};
use crate::error::{Error, Result, flist_err, invalid};
use crate::proto::consts::*;

/// Chunk size of blank devices (the preferred block size they advertise).
pub const BLANK_CHUNK: u32 = 1 << 20;

/// Default chunk fetches in flight per device. A cold sequential read is
/// bound by depth × chunk size / round trip: 32 × 1 MiB / 20 ms ≈ 1.6 GB/s.
pub const DEFAULT_FETCH_DEPTH: usize = 32;

pub struct Export {
    pub name: String,
    pub spec: ExportSpec,
    pub device: Arc<LazyDevice>,
    pub read_only: bool,
    /// The image a device was made from (None: blank), for commit.
    pub image: Option<Arc<Image>>,
    /// Store the device fetches from (None: blank without --store).
    pub store: Option<DynStore>,
    /// URLs of that store without passwords (recorded in committed flists).
    pub routes: Vec<String>,
    pub counters: ExportCounters,
}

impl Export {
    /// Commit the export as it is now: changes to its content wait until
    /// the new flist is written (reads go on), so the image is one point in
    /// time even while clients are connected.
    pub async fn commit(&self, out: &Path) -> Result<CommitReport> {
        let store = self.store.clone().ok_or_else(|| {
            invalid(format!("export {}: commit needs a store to upload to (--store)", self.name))
        })?;
        let _paused = self.device.pause_changes().await;
        let input = CommitInput {
            device: &self.device,
            base: self.image.as_ref().map(|i| i.chunks.pieces()),
            header: self.image.as_ref().map(|i| i.header.clone()),
            file_path: self.spec.device.file_path(),
            store,
            routes: self.routes.clone(),
        };
        commit(input, out).await
    }

    /// For logs and `nbdserver stats`: names the flist file and path.
    pub fn description(&self) -> String {
        let ro = if self.read_only { ", read-only" } else { "" };
        format!("{}{ro}", self.device.describe())
    }

    /// For NBD clients (NBD_OPT_LIST, NBD_INFO_DESCRIPTION): what kind of
    /// device and its size, never a path of the server's.
    pub fn public_description(&self) -> String {
        let kind = match self.spec.device {
            DeviceSpec::Blank { .. } => "blank thin disk",
            DeviceSpec::Image { .. } => "image",
        };
        let ro = if self.read_only { ", read-only" } else { "" };
        format!("{kind} of {} bytes{ro}", self.device.size())
    }

    /// Transmission flags for a session that did (not) negotiate structured
    /// replies. One device state is shared by all connections, hence
    /// CAN_MULTI_CONN; DF only makes sense with structured replies.
    pub fn transmission_flags(&self, structured: bool) -> u16 {
        let mut f = FLAG_HAS_FLAGS
            | FLAG_SEND_FLUSH
            | FLAG_SEND_FUA
            | FLAG_SEND_CACHE
            | FLAG_CAN_MULTI_CONN;
        if self.read_only {
            f |= FLAG_READ_ONLY;
        } else {
            f |= FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES | FLAG_SEND_FAST_ZERO;
        }
        if structured {
            f |= FLAG_SEND_DF;
        }
        f
    }
}

/// The exports a server offers, in declaration order; the first one is
/// the default export (the empty name).
#[derive(Default)]
pub struct ExportTable {
    exports: RwLock<Vec<Arc<Export>>>,
}

impl ExportTable {
    pub fn new(exports: Vec<Arc<Export>>) -> Self {
        ExportTable { exports: RwLock::new(exports) }
    }

    /// The export called `name`; "" names the default (first) export.
    pub fn get(&self, name: &str) -> Option<Arc<Export>> {
        let list = self.exports.read().unwrap_or_else(|p| p.into_inner());
        if name.is_empty() {
            return list.first().cloned();
        }
        list.iter().find(|e| e.name == name).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Export>> {
        self.exports.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replace the whole set (connections in transmission keep theirs).
    pub fn replace(&self, exports: Vec<Arc<Export>>) {
        *self.exports.write().unwrap_or_else(|p| p.into_inner()) = exports;
    }
}

/// What opening exports needs: where caches live, the stores, the engine.
pub struct Opener {
    pub cache_dir: PathBuf,
    /// The `--store` URLs (empty: an image's own routes, password-less
    /// stores), each store opened once and shared by the devices using it.
    stores: StoreOpener,
    pub engine: Arc<dyn IoEngine>,
    /// Chunk fetches in flight per device; also the connections per remote
    /// store, since a 0-db connection carries one request at a time.
    pub fetch_depth: usize,
    /// How long a read waits out an unreachable store before it fails.
    pub outage_wait: Duration,
}

/// Default of `--outage-wait`: a VM's root disk rides out a few minutes
/// of a store outage (a restart, a network blip) as a pause, not EIO.
pub const DEFAULT_OUTAGE_WAIT: Duration = Duration::from_secs(300);

impl Opener {
    pub fn new(cache_dir: &Path, store_urls: Vec<String>, engine: Arc<dyn IoEngine>) -> Self {
        let mut o = Opener {
            cache_dir: cache_dir.to_path_buf(),
            stores: StoreOpener::new(store_urls, zosfs_store::RouterConfig::default()),
            engine,
            fetch_depth: 0,
            outage_wait: DEFAULT_OUTAGE_WAIT,
        };
        o.set_fetch_depth(DEFAULT_FETCH_DEPTH);
        o
    }

    /// Fetches in flight per device and connections per remote store
    /// (at least 1). Takes effect for stores and devices opened later.
    pub fn set_fetch_depth(&mut self, depth: usize) {
        self.fetch_depth = depth.max(1);
        self.stores.config_mut().open.pool_size = self.fetch_depth;
    }

    /// The store for `--store`, if any was given.
    pub async fn default_store(&self) -> Result<Option<DynStore>> {
        let given = self.stores.given();
        if given.is_empty() {
            return Ok(None);
        }
        self.stores.open(given, Codec::Zck1).await.map(Some).map_err(flist_err)
    }

    /// Where the flists of image exports are unpacked.
    pub fn flist_cache(&self) -> PathBuf {
        // Export names never start with a dot, so this cannot clash.
        self.cache_dir.join(".flists")
    }

    /// Data file of an export's LazyFile (its state file sits next to it).
    pub fn data_path(&self, name: &str) -> PathBuf {
        self.cache_dir.join(name).join("disk")
    }

    /// Open the device an export spec names, with its state under
    /// `cache_dir/NAME/`.
    pub async fn open(&self, spec: &ExportSpec) -> Result<Export> {
        let opts = LazyOptions {
            engine: Some(self.engine.clone()),
            writable: !spec.read_only,
            fetch_depth: self.fetch_depth,
            // Read-ahead keeps most of the depth busy for one sequential reader.
            readahead: (self.fetch_depth as u32 / 2).max(1),
            outage_wait: self.outage_wait,
            ..LazyOptions::default()
        };
        let (layout, source, image, store, urls, what): (
            Layout,
            Arc<dyn ChunkSource>,
            _,
            _,
            Vec<String>,
            String,
        ) = match &spec.device {
            DeviceSpec::Blank { size } => {
                let layout = Layout::fixed(BLANK_CHUNK, *size)?;
                let store = self.default_store().await?;
                (
                    layout,
                    Arc::new(BlankSource),
                    None,
                    store,
                    self.stores.given().to_vec(),
                    format!("blank thin disk of {size} bytes"),
                )
            }
            DeviceSpec::Image { flist, path } => {
                let cache = self.flist_cache();
                let (f, p) = (flist.clone(), path.clone());
                let image = tokio::task::spawn_blocking(move || Image::open(&f, &p, &cache))
                    .await
                    .map_err(|e| Error::with_source(crate::ErrorKind::Io, "open flist", e))??;
                let (urls, store) = self.stores.open_for(&image.header).await.map_err(|e| {
                    flist_err(e).context_prefix(format!("{}: no usable store", spec.device))
                })?;
                let source = Arc::new(FileSource::new(store.clone(), image.chunks.clone()));
                let what = format!("image {} of {} bytes", spec.device, image.chunks.size());
                let layout = image.chunks.layout().clone();
                (layout, source, Some(Arc::new(image)), Some(store), urls, what)
            }
        };
        let path = self.data_path(&spec.name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        }
        // The caller names the export; the LazyFile its files.
        let lazy = LazyFile::open(&path, layout, source, opts).await?;
        // What this cache is for: `nbdserver commit NAME` offline reads it.
        crate::device::record::write(&self.cache_dir, spec)?;
        Ok(Export {
            name: spec.name.clone(),
            spec: spec.clone(),
            device: Arc::new(LazyDevice::new(lazy, what)),
            read_only: spec.read_only,
            image,
            store,
            routes: redacted(&urls)?,
            counters: ExportCounters::default(),
        })
    }
}

/// Store URLs as recorded in an flist: without passwords.
fn redacted(urls: &[String]) -> Result<Vec<String>> {
    urls.iter()
        .map(|u| u.parse::<zosfs_store::StoreUrl>().map(|u| u.redacted()).map_err(Error::from))
        .collect()
}

impl std::fmt::Display for ExportSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.name, self.device)
    }
}
