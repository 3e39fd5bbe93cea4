//! `chunkstore ns`: create, list, show, change and delete the namespaces
//! of a 0-db-compatible server (`chunkstore serve` or a real 0-db).
//!
//! The admin password comes from `--admin-file` or `CHUNKSTORE_ADMIN`,
//! never from the command line (visible to every local user), and is
//! proven with AUTH SECURE: it is not sent. A namespace password comes
//! from `--password-file`, or for `create` from the URL.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use zosfs_store::StoreUrl;
use zosfs_store::remote::admin::{ZdbAdmin, namespace_of};
use zosfs_store::url::{Backend, Secret};

#[derive(clap::Args, Debug)]
pub struct NsArgs {
    #[command(subcommand)]
    pub cmd: NsCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum NsCmd {
    /// Create the namespace of URL (NSNEW), then apply the given settings.
    /// A password in the URL becomes the namespace's password.
    Create {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        props: Props,
    },
    /// Print every namespace of the server of URL, one per line.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Print the NSINFO fields of the namespace of URL (`key: value` lines).
    Info {
        #[command(flatten)]
        target: Target,
    },
    /// Change settings of the namespace of URL (NSSET). The URL's password
    /// is not used here: give a new one with --password-file.
    Set {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        props: Props,
    },
    /// Delete the namespace of URL and every key in it (NSDEL).
    Delete {
        #[command(flatten)]
        target: Target,
    },
}

/// Which server and namespace, and how to become admin.
#[derive(clap::Args, Debug)]
pub struct Target {
    /// zdb://[:password@]host:port/namespace or zdb+unix:///sock?ns=namespace.
    #[arg(value_name = "URL")]
    pub url: String,
    /// File whose first line is the server's admin password (else
    /// CHUNKSTORE_ADMIN; without either, commands run unauthenticated,
    /// which only a server without an admin password accepts).
    #[arg(long, value_name = "PATH")]
    pub admin_file: Option<PathBuf>,
    /// Network timeout per request, in milliseconds.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub timeout_ms: u64,
}

/// Namespace settings, as 0-db's NSSET allows them.
#[derive(clap::Args, Debug, Default)]
pub struct Props {
    /// File whose first line becomes the namespace password.
    #[arg(long, value_name = "PATH", conflicts_with = "no_password")]
    pub password_file: Option<PathBuf>,
    /// Remove the namespace password.
    #[arg(long)]
    pub no_password: bool,
    /// Public: clients without the password may read (not write).
    #[arg(long, value_name = "yes|no", value_parser = yes_no)]
    pub public: Option<bool>,
    /// Most bytes of values the namespace may hold (0: no limit).
    #[arg(long, value_name = "BYTES")]
    pub maxsize: Option<u64>,
    /// Key mode of an empty namespace: user (client keys) or seq (the server
    /// assigns 8-byte ids); a mixed-mode server only.
    #[arg(long, value_name = "user|seq", value_parser = ["user", "seq"])]
    pub mode: Option<String>,
    /// Write-once: existing keys cannot be overwritten or deleted.
    #[arg(long, value_name = "yes|no", value_parser = yes_no)]
    pub worm: Option<bool>,
    /// Read-only for everyone until unlocked (not kept across restarts).
    #[arg(long, value_name = "yes|no", value_parser = yes_no)]
    pub lock: Option<bool>,
    /// No reads nor writes until unfrozen (not kept across restarts).
    #[arg(long, value_name = "yes|no", value_parser = yes_no)]
    pub freeze: Option<bool>,
}

fn yes_no(s: &str) -> std::result::Result<bool, String> {
    match s {
        "yes" | "1" | "true" => Ok(true),
        "no" | "0" | "false" => Ok(false),
        _ => Err(format!("want yes or no, not {s:?}")),
    }
}

fn flag(b: bool) -> String {
    if b { "1" } else { "0" }.to_string()
}

impl Props {
    /// The NSSET (property, value) pairs, in the order they are applied;
    /// `url_password` is the password a `create` URL carries.
    fn changes(&self, url_password: Option<&Secret>) -> Result<Vec<(&'static str, String)>> {
        let mut out = Vec::new();
        // Mode first: the server accepts it only while the namespace is empty.
        if let Some(m) = &self.mode {
            out.push(("mode", m.clone()));
        }
        if let Some(n) = self.maxsize {
            out.push(("maxsize", n.to_string()));
        }
        if let Some(path) = &self.password_file {
            out.push(("password", read_first_line(path, "--password-file")?));
        } else if self.no_password {
            // 0-db's way to clear a password.
            out.push(("password", "*".to_string()));
        } else if let Some(pw) = url_password {
            out.push(("password", pw.expose().to_string()));
        }
        for (name, v) in [
            ("public", self.public),
            ("worm", self.worm),
            ("lock", self.lock),
            ("freeze", self.freeze),
        ] {
            if let Some(b) = v {
                out.push((name, flag(b)));
            }
        }
        Ok(out)
    }
}

/// The first line of a password file; empty is refused.
pub(super) fn read_first_line(path: &Path, flag: &str) -> Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("{flag} {}", path.display()))?;
    let pw = text.lines().next().unwrap_or("").to_string();
    if pw.is_empty() {
        bail!("{flag} {}: the first line (the password) is empty", path.display());
    }
    Ok(pw)
}

impl Target {
    fn admin_password(&self) -> Result<Option<Secret>> {
        if let Some(path) = &self.admin_file {
            return Ok(Some(Secret::new(read_first_line(path, "--admin-file")?)));
        }
        match std::env::var("CHUNKSTORE_ADMIN") {
            Ok(pw) if !pw.is_empty() => Ok(Some(Secret::new(pw))),
            _ => Ok(None),
        }
    }

    fn parse(&self) -> Result<StoreUrl> {
        let url = StoreUrl::parse(&self.url)?;
        namespace_of(&url)?;
        Ok(url)
    }

    async fn connect(&self, url: &StoreUrl) -> Result<ZdbAdmin> {
        if self.timeout_ms == 0 {
            bail!("--timeout-ms must be above zero");
        }
        let timeout = Duration::from_millis(self.timeout_ms);
        Ok(ZdbAdmin::connect(url, self.admin_password()?.as_ref(), timeout).await?)
    }
}

fn url_password(url: &StoreUrl) -> Option<&Secret> {
    match &url.backend {
        Backend::Zdb { password, .. } => password.as_ref(),
        _ => None,
    }
}

async fn apply(
    admin: &mut ZdbAdmin,
    ns: &str,
    changes: &[(&'static str, String)],
) -> zosfs_store::Result<()> {
    for (prop, value) in changes {
        admin.set(ns, prop, value).await?;
    }
    Ok(())
}

pub async fn ns(a: NsArgs) -> Result<ExitCode> {
    match a.cmd {
        NsCmd::Create { target, props } => {
            let url = target.parse()?;
            let ns = namespace_of(&url)?;
            // Read the files before creating anything.
            let changes = props.changes(url_password(&url))?;
            let mut admin = target.connect(&url).await?;
            admin.create(ns).await?;
            if let Err(e) = apply(&mut admin, ns, &changes).await {
                bail!("namespace {ns:?} was created, but setting it up failed: {}", e.chain());
            }
            println!("created namespace {ns} on {}", url.redacted());
        }
        NsCmd::List { target } => {
            let url = target.parse()?;
            for name in target.connect(&url).await?.list().await? {
                println!("{name}");
            }
        }
        NsCmd::Info { target } => {
            let url = target.parse()?;
            let text = target.connect(&url).await?.info(namespace_of(&url)?).await?;
            // The `# namespace` header is not a field.
            for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
                println!("{line}");
            }
        }
        NsCmd::Set { target, props } => {
            let url = target.parse()?;
            let ns = namespace_of(&url)?;
            let changes = props.changes(None)?;
            if changes.is_empty() {
                bail!(
                    "nothing to set: give at least one of --password-file, --no-password, \
                       --public, --maxsize, --mode, --worm, --lock, --freeze"
                );
            }
            apply(&mut target.connect(&url).await?, ns, &changes).await?;
            println!("updated namespace {ns} on {}", url.redacted());
        }
        NsCmd::Delete { target } => {
            let url = target.parse()?;
            let ns = namespace_of(&url)?;
            target.connect(&url).await?.delete(ns).await?;
            println!("deleted namespace {ns} on {}", url.redacted());
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_in_order() {
        let p = Props {
            public: Some(false),
            maxsize: Some(10),
            mode: Some("seq".into()),
            ..Default::default()
        };
        let got = p.changes(Some(&Secret::new("pw"))).unwrap();
        let want = [("mode", "seq"), ("maxsize", "10"), ("password", "pw"), ("public", "0")];
        let want: Vec<_> = want.iter().map(|(k, v)| (*k, v.to_string())).collect();
        assert_eq!(got, want);
        let clear = Props { no_password: true, ..Default::default() };
        assert_eq!(clear.changes(Some(&Secret::new("pw"))).unwrap(), [("password", "*".into())]);
    }
}
