//! Export specifications as given on the command line or in the config:
//! `NAME=blank:SIZE` or `NAME=IMAGE.flist:/path/in/flist`. Parsing is
//! strict and every error names what was wrong.

use std::path::PathBuf;

use crate::error::{Result, invalid};

/// What backs an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// A thin empty disk of this many bytes.
    Blank { size: u64 },
    /// A regular file inside an flist, lazily filled from the store.
    Image { flist: PathBuf, path: String },
}

/// `NAME=SPEC`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSpec {
    pub name: String,
    pub device: DeviceSpec,
    pub read_only: bool,
}

/// Export names double as directory names under the cache dir, so they are
/// restricted to `[A-Za-z0-9._-]`, 1–64 bytes, not starting with a dot.
pub fn check_export_name(name: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 64 || name.starts_with('.') || !name.chars().all(ok_char) {
        return Err(invalid(format!(
            "export name {name:?} must be 1-64 characters of [A-Za-z0-9._-], not starting with '.'"
        )));
    }
    Ok(())
}

/// A byte size: an integer with an optional binary suffix
/// (`K`, `M`, `G`, `T`, `P`, optionally followed by `iB` or `B`).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits);
    let bad =
        || invalid(format!("size {s:?}: expected a number with an optional K/M/G/T/P suffix"));
    let n: u64 = num.parse().map_err(|_| bad())?;
    let shift = match suffix.trim_end_matches("iB").trim_end_matches('B') {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        "P" | "p" => 50,
        _ => return Err(bad()),
    };
    let size = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| invalid(format!("size {s:?} does not fit in 64 bits")))?;
    // Offsets are u64 on the wire, but the sparse file's size is an i64.
    if size == 0 || size > i64::MAX as u64 {
        return Err(invalid(format!("size {s:?} must be between 1 byte and 8 EiB")));
    }
    Ok(size)
}

impl DeviceSpec {
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(size) = s.strip_prefix("blank:") {
            return Ok(DeviceSpec::Blank { size: parse_size(size)? });
        }
        // FLIST:/path — the path inside the flist is absolute.
        if let Some((flist, path)) = s.split_once(":/") {
            if !flist.is_empty() && !path.is_empty() && !path.ends_with('/') {
                return Ok(DeviceSpec::Image { flist: flist.into(), path: format!("/{path}") });
            }
        }
        Err(invalid(format!(
            "device {s:?}: expected blank:SIZE (e.g. blank:10G) or IMAGE.flist:/path/in/flist"
        )))
    }

    /// Path of the file inside the flist a commit writes.
    pub fn file_path(&self) -> &str {
        match self {
            DeviceSpec::Blank { .. } => "/disk.raw",
            DeviceSpec::Image { path, .. } => path,
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Blank { size } => write!(f, "blank:{size}"),
            DeviceSpec::Image { flist, path } => write!(f, "{}:{path}", flist.display()),
        }
    }
}

impl ExportSpec {
    /// Parse `NAME=SPEC`.
    pub fn parse(s: &str, read_only: bool) -> Result<Self> {
        let (name, dev) = s
            .split_once('=')
            .ok_or_else(|| invalid(format!("export {s:?}: expected NAME=SPEC")))?;
        check_export_name(name)?;
        Ok(ExportSpec { name: name.to_string(), device: DeviceSpec::parse(dev)?, read_only })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("2kB").unwrap(), 2048);
        for bad in ["", "0", "G", "1X", "-1", "1.5G", "99999999999P"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exports() {
        let e = ExportSpec::parse("disk0=blank:1G", false).unwrap();
        assert_eq!(e.name, "disk0");
        assert_eq!(e.device, DeviceSpec::Blank { size: 1 << 30 });
        let i = ExportSpec::parse("vm=/srv/u.flist:/img/disk.raw", true).unwrap();
        assert!(i.read_only);
        assert_eq!(
            i.device,
            DeviceSpec::Image { flist: "/srv/u.flist".into(), path: "/img/disk.raw".into() }
        );
        assert_eq!(i.device.file_path(), "/img/disk.raw");
        for bad in ["disk", "=blank:1G", "../x=blank:1G", ".d=blank:1G", "d=x.flist", "d=blank:"] {
            assert!(ExportSpec::parse(bad, false).is_err(), "{bad}");
        }
        assert!(ExportSpec::parse("d=:/x", false).is_err());
        assert!(ExportSpec::parse("d=a.flist:/", false).is_err());
    }
}
