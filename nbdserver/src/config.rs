//! Server configuration: a TOML file, command-line flags, or both (flags
//! add to the file). Reloaded on SIGHUP, where only the export list may
//! change.
//!
//! ```toml
//! listen = ["127.0.0.1:10809"]
//! unix = "/run/zosfs/nbd.sock"
//! cache_dir = "/var/lib/zosfs/nbd"
//! store = ["local:///var/lib/zosfs/chunks", "zdb://10.0.0.2:9900/images"]
//! fill = "background"          # or "none" (default)
//! fill_bandwidth = "50M"       # bytes per second, K/M/G suffixes
//! metrics = "127.0.0.1:9109"
//! fetch_depth = 32             # chunk fetches in flight per device
//! outage_wait = 300            # seconds a read waits out an unreachable store
//! max_connections = 256        # NBD connections open at once
//! handshake_timeout = 10       # seconds a client has to finish the handshake
//! insecure_no_tls = false      # allow a non-loopback listen without client certificates
//!
//! [tls]                        # STARTTLS on TCP listeners
//! cert = "/etc/zosfs/nbd-cert.pem"
//! key = "/etc/zosfs/nbd-key.pem"
//! client_ca = "/etc/zosfs/clients-ca.pem"   # optional: require client certificates
//! allow_plain = false          # default: TLS is required on TCP
//!
//! [[export]]
//! name = "vm1"
//! device = "/images/ubuntu.flist:/disk.raw"
//!
//! [[export]]
//! name = "scratch"
//! device = "blank:20G"
//! read_only = false
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::device::spec::{ExportSpec, parse_size};
use crate::error::{Error, Result, invalid};
use crate::server::tls::TlsFiles;

/// Background fill of image devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FillMode {
    /// Fetch only what is read.
    #[default]
    None,
    /// Also fetch every chunk in the background, under the bandwidth cap.
    Background,
}

impl std::str::FromStr for FillMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(FillMode::None),
            "background" => Ok(FillMode::Background),
            _ => Err(invalid(format!("fill mode {s:?}: expected none or background"))),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExportEntry {
    pub name: String,
    pub device: String,
    #[serde(default)]
    pub read_only: bool,
}

/// The file's content, as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub listen: Vec<String>,
    pub unix: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    #[serde(default)]
    pub store: Vec<String>,
    pub fill: Option<FillMode>,
    pub fill_bandwidth: Option<String>,
    pub metrics: Option<String>,
    pub fetch_depth: Option<usize>,
    /// Seconds.
    pub outage_wait: Option<u64>,
    pub max_connections: Option<usize>,
    /// Seconds.
    pub handshake_timeout: Option<u64>,
    #[serde(default)]
    pub insecure_no_tls: bool,
    pub tls: Option<TlsEntry>,
    #[serde(default, rename = "export")]
    pub exports: Vec<ExportEntry>,
}

impl ConfigFile {
    /// Settings other than the export list that differ in `new`: they
    /// take effect only at the next start (SIGHUP reloads exports only).
    pub fn startup_changes(&self, new: &ConfigFile) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut check = |name: &'static str, same: bool| {
            if !same {
                out.push(name);
            }
        };
        check("listen", self.listen == new.listen);
        check("unix", self.unix == new.unix);
        check("cache_dir", self.cache_dir == new.cache_dir);
        check("store", self.store == new.store);
        check("fill", self.fill == new.fill);
        check("fill_bandwidth", self.fill_bandwidth == new.fill_bandwidth);
        check("metrics", self.metrics == new.metrics);
        check("fetch_depth", self.fetch_depth == new.fetch_depth);
        check("outage_wait", self.outage_wait == new.outage_wait);
        check("max_connections", self.max_connections == new.max_connections);
        check("handshake_timeout", self.handshake_timeout == new.handshake_timeout);
        check("insecure_no_tls", self.insecure_no_tls == new.insecure_no_tls);
        check("tls", self.tls == new.tls);
        out
    }
}

/// The `[tls]` table.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsEntry {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    #[serde(default)]
    pub allow_plain: bool,
}

impl TlsEntry {
    pub fn files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.cert.clone(),
            key: self.key.clone(),
            client_ca: self.client_ca.clone(),
            required: !self.allow_plain,
        }
    }
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("read config {}", path.display()), e))?;
        toml::from_str(&text)
            .map_err(|e| invalid(format!("config {}: {}", path.display(), e.message().trim())))
    }

    /// The exports this file declares, parsed.
    pub fn export_specs(&self) -> Result<Vec<ExportSpec>> {
        self.exports
            .iter()
            .map(|e| ExportSpec::parse(&format!("{}={}", e.name, e.device), e.read_only))
            .collect()
    }

    /// Bandwidth cap in bytes per second.
    pub fn bandwidth(&self) -> Result<Option<u64>> {
        self.fill_bandwidth.as_deref().map(parse_size).transpose()
    }
}

/// Refuse two exports with one name.
pub fn check_unique(specs: &[ExportSpec]) -> Result<()> {
    let mut names = std::collections::BTreeSet::new();
    for s in specs {
        if !names.insert(s.name.as_str()) {
            return Err(invalid(format!("export {:?} is given twice", s.name)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let text = r#"
            listen = ["127.0.0.1:10809"]
            cache_dir = "/var/lib/zosfs/nbd"
            store = ["dir:///srv/chunks"]
            fill = "background"
            fill_bandwidth = "50M"
            fetch_depth = 64
            max_connections = 16
            handshake_timeout = 5
            [tls]
            cert = "/etc/c.pem"
            key = "/etc/k.pem"
            [[export]]
            name = "vm1"
            device = "/images/u.flist:/disk.raw"
            [[export]]
            name = "scratch"
            device = "blank:20G"
            read_only = true
        "#;
        let c: ConfigFile = toml::from_str(text).unwrap();
        assert_eq!(c.fill, Some(FillMode::Background));
        assert_eq!(c.bandwidth().unwrap(), Some(50 << 20));
        assert_eq!(c.fetch_depth, Some(64));
        assert_eq!((c.max_connections, c.handshake_timeout), (Some(16), Some(5)));
        assert!(!c.insecure_no_tls);
        let tls = c.tls.as_ref().unwrap().files();
        assert!(tls.required && tls.client_ca.is_none());
        let specs = c.export_specs().unwrap();
        assert_eq!(specs.len(), 2);
        assert!(specs[1].read_only);
        check_unique(&specs).unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_exports_are_errors() {
        assert!(toml::from_str::<ConfigFile>("listne = []").is_err());
        let c: ConfigFile =
            toml::from_str("[[export]]\nname = \"a\"\ndevice = \"floppy\"\n").unwrap();
        assert!(c.export_specs().is_err());
    }
}
