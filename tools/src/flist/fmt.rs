//! Text forms shared by the reading commands: names with unprintable bytes
//! escaped (one entry is always one line), `ls -l` mode strings, UTC dates.

use zosfs_flist::{Inode, Kind};

/// A name for terminal output: valid UTF-8 printable text as is, `\\`,
/// control bytes and invalid UTF-8 as `\n`, `\t`, `\xNN`.
pub fn name(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("\\x{b:02x}"));
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// `drwxr-xr-x` style mode string.
pub fn mode(inode: &Inode) -> String {
    let p = inode.perm;
    let mut s = String::with_capacity(10);
    s.push(inode.kind.letter());
    let bit = |mask: u32, c: char| if p & mask != 0 { c } else { '-' };
    let exec = |x: u32, special: u32, set: char, unset: char| match (p & x != 0, p & special != 0) {
        (true, true) => set,
        (false, true) => unset,
        (true, false) => 'x',
        (false, false) => '-',
    };
    s.push(bit(0o400, 'r'));
    s.push(bit(0o200, 'w'));
    s.push(exec(0o100, 0o4000, 's', 'S'));
    s.push(bit(0o040, 'r'));
    s.push(bit(0o020, 'w'));
    s.push(exec(0o010, 0o2000, 's', 'S'));
    s.push(bit(0o004, 'r'));
    s.push(bit(0o002, 'w'));
    s.push(exec(0o001, 0o1000, 't', 'T'));
    s
}

/// `YYYY-MM-DD HH:MM:SS.nnnnnnnnn` UTC.
pub fn time_ns(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{nanos:09}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Size column of `ls -l`: bytes, or `major, minor` for devices.
pub fn size(inode: &Inode) -> String {
    match inode.kind {
        Kind::CharDev | Kind::BlockDev => {
            let (ma, mi) = inode.rdev_major_minor();
            format!("{ma}, {mi}")
        }
        _ => inode.size.to_string(),
    }
}

/// Bytes as hex if not printable text.
pub fn value(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => format!("{s:?}"),
        _ => format!("0x{}", hex::encode(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_dates() {
        assert_eq!(name(b"a b"), "a b");
        assert_eq!(name(b"a\nb\\\xff"), "a\\nb\\\\\\xff");
        assert_eq!(time_ns(0), "1970-01-01 00:00:00.000000000");
        assert_eq!(time_ns(951_782_400_000_000_001), "2000-02-29 00:00:00.000000001");
        assert_eq!(time_ns(-1_000_000_000), "1969-12-31 23:59:59.000000000");
    }
}
