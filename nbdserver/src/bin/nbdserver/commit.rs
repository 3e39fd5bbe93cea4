//! `nbdserver commit NAME -o NEW.flist`: the export's current content as a
//! new image flist, uploading only the chunks that changed.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use zosfs_nbdserver::device::record;
use zosfs_nbdserver::server::Opener;
use zosfs_nbdserver::server::control::{control_path, query};
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
    /// Ask the server serving the export (through its control socket in
    /// the cache dir) to commit it now: clients stay connected, their
    /// writes wait while the commit runs.
    #[arg(long)]
    pub live: bool,
}

fn live(a: &CommitArgs, settings: &crate::settings::Settings) -> Result<()> {
    let out = std::path::absolute(&a.output)
        .with_context(|| format!("resolve {}", a.output.display()))?;
    let socket = control_path(&settings.cache_dir);
    let answer =
        query(&socket, &format!("commit {} {}", a.name, out.display())).with_context(|| {
            format!("is a server running with cache dir {}?", settings.cache_dir.display())
        })?;
    if let Some(err) = answer.trim().strip_prefix("error: ") {
        bail!("{err}");
    }
    print!("{answer}");
    Ok(())
}

pub fn run(a: CommitArgs) -> Result<()> {
    let settings = a.devices.resolve()?;
    if a.live {
        return live(&a, &settings);
    }
    // The flags first, else what the export's cache recorded when served.
    let given = settings.specs.iter().find(|s| s.name == a.name).cloned();
    let spec = match given {
        Some(s) => s,
        None => record::read(&settings.cache_dir, &a.name)?.with_context(|| {
            format!(
                "no export named {:?} in --export/--config, and no record of it in {}",
                a.name,
                record::path(&settings.cache_dir, &a.name).display()
            )
        })?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let engine = shared_engine(a.devices.engine).context("open the I/O engine")?;
        let opener = Opener::new(&settings.cache_dir, settings.stores.clone(), engine);
        let export = opener
            .open(&spec)
            .await
            .with_context(|| format!("open export {} (is a server using it?)", spec.name))?;
        let r = export.commit(&a.output).await?;
        println!("committed {} ({r}) -> {}", spec.name, a.output.display());
        let lazy = export.device.lazy().clone();
        drop(export);
        lazy.close().await?;
        Ok(())
    })
}
