//! Byte sizes on the command line: `10G`, `512M`, `1.5GiB`, `4096`
//! (binary multiples: K = 1024).

use crate::error::{Result, invalid};

/// Parse a size; a bare number is bytes.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(invalid(format!("size {s:?}: unknown unit {unit:?} (use K, M, G or T)"))),
    };
    if num.is_empty() {
        return Err(invalid(format!("size {s:?}: no number")));
    }
    let bytes = if num.contains('.') {
        let v: f64 = num.parse().map_err(|_| invalid(format!("size {s:?}: bad number")))?;
        let b = v * mult as f64;
        if !b.is_finite() || b >= u64::MAX as f64 {
            return Err(invalid(format!("size {s:?} is too large")));
        }
        b as u64
    } else {
        let v: u64 = num.parse().map_err(|_| invalid(format!("size {s:?}: bad number")))?;
        v.checked_mul(mult).ok_or_else(|| invalid(format!("size {s:?} is too large")))?
    };
    Ok(bytes)
}

/// Human form for messages and tables (`1.5 GiB`).
pub fn format_size(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{b} B") } else { format!("{v:.1} {}", UNITS[i]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn formats() {
        assert_eq!(format_size(10), "10 B");
        assert_eq!(format_size(1536), "1.5 KiB");
    }
}
