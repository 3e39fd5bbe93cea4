//! Tar source: a tar file or stream (GNU, ustar or PAX; `docker export`,
//! OCI/docker layers). Members are taken in order, later ones replacing
//! earlier ones; parents a stream never describes become 0755 root
//! directories. Names with `..`, absolute names and members below a symlink
//! are refused: an flist never describes anything outside its root.

use std::io::Read;

use super::builder::{Attrs, Builder};
use super::pipeline::Pipeline;
use crate::error::{Error, ErrorKind, Result, invalid};
use crate::model::{Kind, Xattr};
use crate::names::show;

/// Split a member name into names, refusing escapes.
fn member_names(raw: &[u8]) -> Result<Vec<&[u8]>> {
    if raw.starts_with(b"/") {
        return Err(Error::new(
            ErrorKind::Escape,
            format!("tar member {} has an absolute name", show(raw)),
        ));
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(Error::new(
                    ErrorKind::Escape,
                    format!("tar member {} contains ..", show(raw)),
                ));
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// The header's mtime in nanoseconds; a time past what i64 nanoseconds
/// hold (year 2262; base-256 fields can claim far more) is refused.
fn header_mtime_ns(h: &::tar::Header) -> std::result::Result<i64, String> {
    let secs = h.mtime().map_err(|e| format!("bad mtime field: {e}"))?;
    i64::try_from(secs)
        .ok()
        .and_then(|s| s.checked_mul(1_000_000_000))
        .ok_or_else(|| format!("mtime {secs} s is out of range (at most year 2262)"))
}

/// A uid or gid of the header, which must fit 32 bits.
fn header_id(v: std::io::Result<u64>, what: &str) -> std::result::Result<u32, String> {
    let v = v.map_err(|e| format!("bad {what} field: {e}"))?;
    u32::try_from(v).map_err(|_| format!("{what} {v} does not fit 32 bits"))
}

fn parse_pax_time(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nanos: i64 = digits.parse().ok()?;
    let t = secs.checked_mul(1_000_000_000)?.checked_add(nanos)?;
    Some(if neg { -t } else { t })
}

pub(super) fn read_tar_source(
    r: Box<dyn Read + Send>,
    pipe: &Pipeline,
) -> Result<(Builder, usize)> {
    let mut archive = ::tar::Archive::new(r);
    let mut b = Builder::new();
    let mut contents = 0usize;
    let sink = pipe.sink();
    let entries = archive
        .entries()
        .map_err(|e| Error::with_source(ErrorKind::InvalidInput, "read tar stream", e))?;
    for entry in entries {
        let mut entry = entry
            .map_err(|e| Error::with_source(ErrorKind::InvalidInput, "damaged tar stream", e))?;
        let raw = entry.path_bytes().into_owned();
        let ctx = |what: &str| format!("tar member {}: {what}", show(&raw));
        let names = member_names(&raw)?;
        let h = entry.header().clone();
        let mut mtime_ns = header_mtime_ns(&h).map_err(|why| invalid(ctx(&why)))?;
        let mut uid = header_id(h.uid(), "uid").map_err(|why| invalid(ctx(&why)))?;
        let mut gid = header_id(h.gid(), "gid").map_err(|why| invalid(ctx(&why)))?;
        let mut xattrs = Vec::new();
        if let Some(pax) = entry
            .pax_extensions()
            .map_err(|e| Error::with_source(ErrorKind::InvalidInput, ctx("PAX header"), e))?
        {
            for ext in pax {
                let ext =
                    ext.map_err(|e| Error::with_source(ErrorKind::InvalidInput, ctx("PAX"), e))?;
                let key = ext.key_bytes();
                let v = ext.value_bytes();
                match key {
                    b"mtime" => {
                        mtime_ns = parse_pax_time(v).ok_or_else(|| {
                            invalid(ctx(&format!(
                                "PAX mtime {:?} is not a time in nanoseconds an i64 holds",
                                String::from_utf8_lossy(v)
                            )))
                        })?
                    }
                    b"uid" => {
                        uid =
                            std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()).unwrap_or(uid)
                    }
                    b"gid" => {
                        gid =
                            std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()).unwrap_or(gid)
                    }
                    _ => {
                        if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                            xattrs.push(Xattr { name: name.to_vec(), value: v.to_vec() });
                        }
                    }
                }
            }
        }
        xattrs.sort();
        xattrs.dedup_by(|a, b| a.name == b.name);
        let ty = h.entry_type();
        let kind = match ty {
            ::tar::EntryType::Regular | ::tar::EntryType::Continuous => Kind::File,
            ::tar::EntryType::Directory => Kind::Dir,
            ::tar::EntryType::Symlink => Kind::Symlink,
            ::tar::EntryType::Char => Kind::CharDev,
            ::tar::EntryType::Block => Kind::BlockDev,
            ::tar::EntryType::Fifo => Kind::Fifo,
            ::tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| {
                        Error::new(ErrorKind::InvalidInput, ctx("hardlink without target"))
                    })?
                    .into_owned();
                let tnames = member_names(&target)?;
                let node = b.find(&tnames).ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidInput,
                        ctx(&format!("hardlink to {} which is not in the archive", show(&target))),
                    )
                })?;
                b.link_node(&names, node, &raw)?;
                continue;
            }
            other => {
                tracing::warn!("skipping tar member {} of type {:?}", show(&raw), other);
                continue;
            }
        };
        let rdev = match kind {
            Kind::CharDev | Kind::BlockDev => {
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                libc::makedev(major, minor)
            }
            _ => 0,
        };
        let target = if kind == Kind::Symlink {
            entry
                .link_name_bytes()
                .ok_or_else(|| Error::new(ErrorKind::InvalidInput, ctx("symlink without target")))?
                .into_owned()
        } else {
            Vec::new()
        };
        let attrs = Attrs {
            kind,
            perm: h
                .mode()
                .map_err(|e| Error::with_source(ErrorKind::InvalidInput, ctx("mode"), e))?
                & 0o7777,
            uid,
            gid,
            mtime_ns,
            rdev,
            target,
            xattrs,
        };
        if names.is_empty() {
            if kind != Kind::Dir {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    ctx("the root is not a directory"),
                ));
            }
            b.set_root(attrs)?;
            continue;
        }
        let content = (kind == Kind::File).then_some(contents);
        b.insert(&names, attrs, content, &raw)?;
        if kind == Kind::File {
            sink.chunk_reader(contents, &mut entry).map_err(|e| e.context_prefix(ctx("read")))?;
            contents += 1;
        }
    }
    Ok((b, contents))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_refuse_escapes() {
        assert_eq!(member_names(b"./a//b/").unwrap(), vec![&b"a"[..], b"b"]);
        assert!(member_names(b"./").unwrap().is_empty());
        assert_eq!(member_names(b"/etc/passwd").unwrap_err().kind(), ErrorKind::Escape);
        assert_eq!(member_names(b"a/../../x").unwrap_err().kind(), ErrorKind::Escape);
    }

    #[test]
    fn header_times_and_ids_out_of_range_are_refused() {
        let mut h = ::tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        assert_eq!(header_mtime_ns(&h).unwrap(), 1_700_000_000_000_000_000);
        // Base-256 fields hold any u64: far past what i64 nanoseconds hold.
        for secs in [u64::MAX, i64::MAX as u64, 9_223_372_037] {
            h.set_mtime(secs);
            let e = header_mtime_ns(&h).unwrap_err();
            assert!(e.contains("out of range"), "{secs}: {e}");
        }
        assert_eq!(header_id(Ok(7), "uid"), Ok(7));
        assert!(header_id(Ok(1 << 32), "uid").unwrap_err().contains("32 bits"));
        assert_eq!(parse_pax_time(b"99999999999999999999"), None);
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"12.5"), Some(12_500_000_000));
        assert_eq!(parse_pax_time(b"1700000000.123456789123"), Some(1_700_000_000_123_456_789));
        assert_eq!(parse_pax_time(b"7"), Some(7_000_000_000));
        assert_eq!(parse_pax_time(b"x"), None);
    }
}
