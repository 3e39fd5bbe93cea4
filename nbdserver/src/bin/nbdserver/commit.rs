//! `nbdserver commit NAME -o NEW.flist`: the export's current content as a
//! new image flist, uploading only the chunks that changed.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use zosfs_nbdserver::commit::{CommitInput, commit};
use zosfs_nbdserver::server::Opener;
use zosfs_store::StoreUrl;
use zosfs_store::engine::shared_engine;

use crate::settings::DeviceArgs;

#[derive(clap::Args, Debug)]
pub struct CommitArgs {
    #[command(flatten)]
    pub devices: DeviceArgs,
    /// The export to commit.
    pub name: String,
    /// Where to write the new flist.
    #[arg(short, long, value_name = "NEW.flist")]
    pub output: PathBuf,
}

pub fn run(a: CommitArgs) -> Result<()> {
    let settings = a.devices.resolve()?;
    let Some(spec) = settings.specs.iter().find(|s| s.name == a.name).cloned() else {
        bail!("no export named {:?} in the given --export/--config", a.name);
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let engine = shared_engine(a.devices.engine).context("open the I/O engine")?;
        let opener = Opener::new(&settings.cache_dir, settings.stores.clone(), engine);
        let export = opener
            .open(&spec)
            .await
            .with_context(|| format!("open export {} (is a server using it?)", spec.name))?;
        let store = match &export.store {
            Some(s) => s.clone(),
            None => bail!("commit needs a store to upload to: give --store URL"),
        };
        // Routes recorded in the flist: the stores used, without passwords.
        let urls = if settings.stores.is_empty() {
            export.image.as_ref().map(|i| i.header.routes.clone()).unwrap_or_default()
        } else {
            settings.stores.clone()
        };
        let routes = urls
            .iter()
            .map(|u| u.parse::<StoreUrl>().map(|u| u.redacted()))
            .collect::<zosfs_store::Result<Vec<_>>>()?;
        let input = CommitInput {
            device: &export.device,
            base: export.image.as_ref().map(|i| i.origins.as_slice()),
            header: export.image.as_ref().map(|i| i.header.clone()),
            file_path: spec.device.file_path(),
            store,
            routes,
        };
        let r = commit(input, &a.output).await?;
        println!(
            "committed {} ({} bytes, {} chunks): {} uploaded ({} bytes), {} reused, {} zero -> {}",
            spec.name,
            r.size,
            r.chunks,
            r.uploaded,
            r.uploaded_bytes,
            r.reused,
            r.zero,
            a.output.display()
        );
        let lazy = export.device.lazy().clone();
        drop(export);
        lazy.close().await?;
        Ok(())
    })
}
