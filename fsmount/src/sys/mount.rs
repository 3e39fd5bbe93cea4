//! mount(2) / umount2(2) and /proc/self/mountinfo.
//!
//! Every management decision ("is the overlay still there?", "is the volume
//! mounted?") is taken from mountinfo, never from our own records alone, so
//! a teardown after a crash undoes exactly what is still in place.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, invalid};

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| invalid(format!("path {} contains a NUL byte", p.display())))
}

/// mount(2). `data` is the filesystem's option string.
pub fn mount(
    source: &Path,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<()> {
    let src = cstr(source)?;
    let tgt = cstr(target)?;
    let fs = CString::new(fstype).map_err(|_| invalid("fstype with NUL"))?;
    let data_c = CString::new(data).map_err(|_| invalid("mount options with NUL"))?;
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(src.as_ptr(), tgt.as_ptr(), fs.as_ptr(), flags, data_c.as_ptr().cast())
    };
    if rc != 0 {
        return Err(Error::last_os(format!(
            "mount {fstype} {} on {} ({data})",
            source.display(),
            target.display()
        )));
    }
    Ok(())
}

/// umount2(2). `lazy` detaches a busy mount (MNT_DETACH).
pub fn umount(target: &Path, lazy: bool) -> Result<()> {
    let tgt = cstr(target)?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: tgt is a valid NUL-terminated path for the duration of the call.
    let rc = unsafe { libc::umount2(tgt.as_ptr(), flags) };
    if rc != 0 {
        return Err(Error::last_os(format!("unmount {}", target.display())));
    }
    Ok(())
}

/// One line of /proc/self/mountinfo (the fields we use).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_id: u32,
    pub major: u32,
    pub minor: u32,
    /// Root of the mount within its filesystem (a subvolume path for btrfs).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
    pub super_options: String,
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = (oct[0] - b'0') * 64 + (oct[1] - b'0') * 8 + (oct[2] - b'0');
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn path_of(s: &str) -> PathBuf {
    PathBuf::from(std::ffi::OsStr::from_bytes(&unescape(s)))
}

fn parse_line(line: &str) -> Option<MountEntry> {
    // id parent major:minor root mountpoint opts [optional...] - fstype source superopts
    let (left, right) = line.split_once(" - ")?;
    let l: Vec<&str> = left.split(' ').collect();
    let r: Vec<&str> = right.split(' ').collect();
    if l.len() < 6 || r.len() < 3 {
        return None;
    }
    let (major, minor) = l[2].split_once(':')?;
    Some(MountEntry {
        mount_id: l[0].parse().ok()?,
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        root: path_of(l[3]),
        mount_point: path_of(l[4]),
        fstype: r[0].to_string(),
        source: String::from_utf8_lossy(&unescape(r[1])).into_owned(),
        super_options: r[2].to_string(),
    })
}

/// All mounts of this process's mount namespace, in mount order.
pub fn mounts() -> Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io("read /proc/self/mountinfo", e))?;
    Ok(text.lines().filter_map(parse_line).collect())
}

/// The topmost mount at exactly `path`, if any.
pub fn mounted_at(path: &Path) -> Result<Option<MountEntry>> {
    Ok(mounts()?.into_iter().rev().find(|m| m.mount_point == path))
}

/// Every mount stacked at `path` (bottom first).
pub fn all_mounted_at(path: &Path) -> Result<Vec<MountEntry>> {
    Ok(mounts()?.into_iter().filter(|m| m.mount_point == path).collect())
}

/// Escape a path for an overlayfs option (`,` `:` `\` are separators there).
pub fn escape_overlay_path(p: &Path) -> Result<String> {
    let s =
        p.to_str().ok_or_else(|| invalid(format!("overlay path {} is not UTF-8", p.display())))?;
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, ',' | ':' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines() {
        let l = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - btrfs /dev/loop3 rw,space_cache=v2";
        let m = parse_line(l).unwrap();
        assert_eq!(m.mount_id, 36);
        assert_eq!((m.major, m.minor), (98, 0));
        assert_eq!(m.mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(m.root, PathBuf::from("/mnt1"));
        assert_eq!(m.fstype, "btrfs");
        assert_eq!(m.source, "/dev/loop3");
        assert!(parse_line("garbage").is_none());
    }

    #[test]
    fn escapes_overlay_separators() {
        assert_eq!(escape_overlay_path(Path::new("/a,b:c\\d")).unwrap(), "/a\\,b\\:c\\\\d");
    }

    #[test]
    fn own_root_is_listed() {
        assert!(mounts().unwrap().iter().any(|m| m.mount_point == Path::new("/")));
    }
}
