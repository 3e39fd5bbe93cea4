//! Where a server's settings come from: `--config FILE` (TOML) and flags,
//! flags adding to or overriding the file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use zosfs_nbdserver::config::{ConfigFile, FillMode, check_unique};
use zosfs_nbdserver::device::spec::ExportSpec;
use zosfs_store::engine::EngineChoice;

/// Flags that say which devices exist (shared by serve and commit).
#[derive(clap::Args, Debug, Clone)]
pub struct DeviceArgs {
    /// TOML configuration (see the nbdserver README section); flags add to it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory holding device state (one subdirectory per export).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// A read-write export, NAME=SPEC (repeatable).
    #[arg(long = "export", value_name = "NAME=SPEC")]
    pub exports: Vec<String>,
    /// A read-only export, NAME=SPEC (repeatable).
    #[arg(long = "export-ro", value_name = "NAME=SPEC")]
    pub exports_ro: Vec<String>,
    /// Chunk store URL (repeatable or comma-separated, as fsmount takes
    /// them: the node store first, then replicas). Default: the routes
    /// recorded in each image's flist. URLs with passwords belong in
    /// ZOSFS_STORE or --store-file: the command line is visible to every
    /// local user.
    #[arg(
        long = "store",
        value_name = "URL",
        value_delimiter = ',',
        env = "ZOSFS_STORE",
        hide_env_values = true
    )]
    pub stores: Vec<String>,
    /// File of chunk store URLs, one per line (blank lines and lines
    /// starting with # are skipped); instead of --store.
    #[arg(long, value_name = "FILE")]
    pub store_file: Option<PathBuf>,
    /// Disk I/O engine: auto (io_uring if usable), uring, sync.
    #[arg(long, default_value = "auto")]
    pub engine: EngineChoice,
}

/// Everything resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub file: ConfigFile,
    pub cache_dir: PathBuf,
    pub specs: Vec<ExportSpec>,
    pub stores: Vec<String>,
}

impl DeviceArgs {
    pub fn resolve(&self) -> Result<Settings> {
        let file = match &self.config {
            Some(p) => ConfigFile::load(p)?,
            None => ConfigFile::default(),
        };
        let cache_dir = self
            .cache_dir
            .clone()
            .or_else(|| file.cache_dir.clone())
            .context("no cache dir: give --cache-dir DIR or cache_dir in --config")?;
        let mut specs = file.export_specs()?;
        for s in &self.exports {
            specs.push(ExportSpec::parse(s, false)?);
        }
        for s in &self.exports_ro {
            specs.push(ExportSpec::parse(s, true)?);
        }
        check_unique(&specs)?;
        let stores = match (&self.store_file, self.stores.is_empty()) {
            (Some(_), false) => {
                bail!("give the stores once: --store (or ZOSFS_STORE) or --store-file")
            }
            (Some(p), true) => read_store_file(p)?,
            (None, false) => self.stores.clone(),
            (None, true) => file.store.clone(),
        };
        Ok(Settings { file, cache_dir, specs, stores })
    }
}

/// The URLs of a `--store-file`. A file others may read is used, with a
/// warning: it may hold passwords.
fn read_store_file(path: &Path) -> Result<Vec<String>> {
    use std::os::unix::fs::MetadataExt;
    let shown = path.display();
    let text =
        std::fs::read_to_string(path).with_context(|| format!("read --store-file {shown}"))?;
    let mode = std::fs::metadata(path).with_context(|| format!("stat {shown}"))?.mode();
    if mode & 0o077 != 0 {
        tracing::warn!("--store-file {shown} is readable by others (mode {:o})", mode & 0o777);
    }
    let urls: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    if urls.is_empty() {
        bail!("--store-file {shown} holds no store URL");
    }
    Ok(urls)
}

impl Settings {
    pub fn fill(&self, flag: Option<FillMode>) -> FillMode {
        flag.or(self.file.fill).unwrap_or_default()
    }

    pub fn require_exports(&self) -> Result<()> {
        if self.specs.is_empty() {
            bail!(
                "no exports: give --export NAME=SPEC (e.g. --export disk=blank:10G) or a --config"
            );
        }
        Ok(())
    }
}
