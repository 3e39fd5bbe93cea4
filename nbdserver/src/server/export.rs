//! Exports: a name, a shared device, and the transmission flags derived
//! from them. The table is shared by all connections and may be replaced
//! as a whole (config reload) without disturbing connections already in
//! transmission, which hold their own `Arc<Export>`.

use std::sync::{Arc, RwLock};

use crate::device::BlockDevice;
use crate::proto::consts::*;

pub struct Export {
    pub name: String,
    pub device: Arc<dyn BlockDevice>,
    pub read_only: bool,
}

impl Export {
    pub fn new(name: impl Into<String>, device: Arc<dyn BlockDevice>, read_only: bool) -> Self {
        Export { name: name.into(), device, read_only }
    }

    pub fn description(&self) -> String {
        let ro = if self.read_only { ", read-only" } else { "" };
        format!("{}{ro}", self.device.describe())
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

/// Chunk size of blank devices (the preferred block size they advertise).
pub const BLANK_CHUNK: u32 = 1 << 20;

impl Export {
    /// Open the device an export spec names, keeping its state under
    /// `cache_dir/NAME/`.
    pub fn open(
        spec: &crate::device::spec::ExportSpec,
        cache_dir: &std::path::Path,
        engine: Arc<dyn zosfs_store::engine::IoEngine>,
    ) -> crate::error::Result<Self> {
        use crate::device::spec::DeviceSpec;
        let dir = cache_dir.join(&spec.name);
        let device: Arc<dyn BlockDevice> = match spec.device {
            DeviceSpec::Blank { size } => Arc::new(crate::device::sparse::SparseFile::open(
                &dir.join("blank.img"),
                size,
                BLANK_CHUNK,
                engine,
            )?),
        };
        Ok(Export::new(spec.name.clone(), device, spec.read_only))
    }
}
