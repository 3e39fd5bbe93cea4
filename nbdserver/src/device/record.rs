//! The export record: `CACHE_DIR/NAME/export`, what an export's cache was
//! opened for, so `nbdserver commit NAME` works offline without the
//! `--export` flag again. Format (docs/formats/nbd-export-record.md):
//!
//! ```text
//! zosfs-nbd-export 1
//! export NAME=DEVICE        (or export-ro NAME=DEVICE)
//! ```
//!
//! An image's flist path is recorded absolute. The record is replaced
//! atomically (temp file, rename) each time the export is opened.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::spec::{DeviceSpec, ExportSpec};
use crate::error::{Error, Result, invalid};

const MAGIC: &str = "zosfs-nbd-export 1";

/// `CACHE_DIR/NAME/export`.
pub fn path(cache_dir: &Path, name: &str) -> PathBuf {
    cache_dir.join(name).join("export")
}

/// Record `spec` for its cache under `cache_dir`.
pub fn write(cache_dir: &Path, spec: &ExportSpec) -> Result<()> {
    let device = match &spec.device {
        DeviceSpec::Image { flist, path } => DeviceSpec::Image {
            flist: std::path::absolute(flist)
                .map_err(|e| Error::io(format!("resolve {}", flist.display()), e))?,
            path: path.clone(),
        },
        d => d.clone(),
    };
    let flag = if spec.read_only { "export-ro" } else { "export" };
    let text = format!("{MAGIC}\n{flag} {}={device}\n", spec.name);
    let dst = path(cache_dir, &spec.name);
    let tmp = dst.with_extension("tmp");
    let io = |what: &str, e| Error::io(format!("{what} {}", tmp.display()), e);
    let mut f = std::fs::File::create(&tmp).map_err(|e| io("create", e))?;
    f.write_all(text.as_bytes()).map_err(|e| io("write", e))?;
    f.sync_all().map_err(|e| io("sync", e))?;
    std::fs::rename(&tmp, &dst).map_err(|e| io("rename", e))
}

/// The spec recorded for export `name`, if any.
pub fn read(cache_dir: &Path, name: &str) -> Result<Option<ExportSpec>> {
    let p = path(cache_dir, name);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("read {}", p.display()), e)),
    };
    parse(&text).map(Some).map_err(|e| e.context_prefix(p.display()))
}

fn parse(text: &str) -> Result<ExportSpec> {
    let mut lines = text.lines();
    match lines.next() {
        Some(MAGIC) => {}
        Some(l) if l.starts_with("zosfs-nbd-export ") => {
            return Err(invalid(format!("{l:?}: made by a newer nbdserver (this one reads 1)")));
        }
        _ => return Err(invalid("not an nbdserver export record")),
    }
    let line = lines.next().ok_or_else(|| invalid("export record without its export line"))?;
    match line.split_once(' ') {
        Some(("export", s)) => ExportSpec::parse(s, false),
        Some(("export-ro", s)) => ExportSpec::parse(s, true),
        _ => Err(invalid(format!("export record line {line:?}: want `export NAME=DEVICE`"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed golden record reads back as the spec it names.
    #[test]
    fn golden_record_reads_back() {
        let text = include_str!("../../tests/golden/export-record-v1");
        let spec = parse(text).expect("golden record");
        assert_eq!(spec.name, "vm1");
        assert!(!spec.read_only);
        assert_eq!(spec.device.to_string(), "/images/ubuntu.flist:/disk.raw");
    }

    #[test]
    fn write_then_read_round_trips_and_newer_versions_are_named() {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(t.path().join("scratch")).expect("mkdir");
        let spec = ExportSpec::parse("scratch=blank:64M", true).expect("spec");
        write(t.path(), &spec).expect("write");
        assert_eq!(read(t.path(), "scratch").expect("read"), Some(spec));
        assert_eq!(read(t.path(), "absent").expect("read"), None);
        let e = parse("zosfs-nbd-export 2\nexport a=blank:1M\n").unwrap_err();
        assert!(e.to_string().contains("newer nbdserver"), "{e}");
    }
}
