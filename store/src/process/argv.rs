//! Hiding passwords in the process's own command line.
//!
//! A password given as an argument (`--admin PW`, `--admin=PW`, a store
//! URL `zdb://:PW@host/ns`) is readable in `/proc/PID/cmdline` by every
//! local user for as long as the process lives — a daemon lives long, and
//! `-d` forks without re-executing, so it keeps the parent's arguments.
//! After parsing them, a program overwrites each such password in its
//! argument block with `*` of the same length. The block's layout (where
//! each argument starts, where its NUL is) does not change, so anything
//! still pointing into it reads whole, masked strings.

use crate::error::{Error, Result};

/// Mask every occurrence of `secrets` in this process's arguments (see the
/// module documentation); returns how many were masked.
///
/// # Safety
///
/// No other thread may read the process's arguments (`std::env::args`)
/// while this runs: call it before starting threads.
pub unsafe fn hide_secrets(secrets: &[&str]) -> Result<usize> {
    let secrets: Vec<&str> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    if secrets.is_empty() {
        return Ok(0);
    }
    let (start, end) = arg_block()?;
    if start == 0 || end <= start {
        return Ok(0);
    }
    // SAFETY: [start, end) is this process's argument block as the kernel
    // reports it: mapped, writable (the initial stack) and never freed.
    // Rust holds no reference into it (std keeps raw pointers and reads
    // them only in env::args, which the caller promises not to race).
    let block = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, end - start) };
    Ok(mask(block, &secrets))
}

/// `arg_start` and `arg_end` from `/proc/self/stat` (fields 48 and 49).
fn arg_block() -> Result<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat")
        .map_err(|e| Error::io("read /proc/self/stat", e))?;
    // The command name (field 2) may hold spaces and parentheses: count
    // fields from after its closing parenthesis, where field 3 starts.
    let tail = stat.rsplit_once(')').map_or("", |(_, t)| t);
    let fields: Vec<&str> = tail.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<usize>().ok());
    match (field(48), field(49)) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(crate::error::invalid("/proc/self/stat has no argument block fields")),
    }
}

/// Mask the secrets in a NUL-separated argument block: whole arguments,
/// `--flag=SECRET` values and `:SECRET@` URL passwords.
fn mask(block: &mut [u8], secrets: &[&str]) -> usize {
    let mut masked = 0;
    let mut start = 0;
    while start < block.len() {
        let len = block[start..].iter().position(|&b| b == 0).unwrap_or(block.len() - start);
        let arg = &mut block[start..start + len];
        for s in secrets {
            masked += mask_arg(arg, s.as_bytes());
        }
        start += len + 1;
    }
    masked
}

fn mask_arg(arg: &mut [u8], secret: &[u8]) -> usize {
    let star = |b: &mut [u8]| b.iter_mut().for_each(|c| *c = b'*');
    if arg == secret {
        star(arg);
        return 1;
    }
    let n = secret.len();
    let mut masked = 0;
    if arg.len() > n && arg.ends_with(secret) && arg[arg.len() - n - 1] == b'=' {
        let at = arg.len() - n;
        star(&mut arg[at..]);
        masked += 1;
    }
    let mut i = 0;
    while i + n + 2 <= arg.len() {
        if arg[i] == b':' && &arg[i + 1..i + 1 + n] == secret && arg[i + 1 + n] == b'@' {
            star(&mut arg[i + 1..i + 1 + n]);
            masked += 1;
            i += n + 2;
        } else {
            i += 1;
        }
    }
    masked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_arguments_flags_and_url_passwords() {
        let mut b = b"prog\0--admin\0pw1\0--admin=pw1\0zdb://:pw2@h:1/ns\0pw1x\0".to_vec();
        assert_eq!(mask(&mut b, &["pw1", "pw2"]), 3);
        assert_eq!(&b[..], &b"prog\0--admin\0***\0--admin=***\0zdb://:***@h:1/ns\0pw1x\0"[..]);
    }

    #[test]
    fn block_without_final_nul() {
        let mut b = b"a\0secret".to_vec();
        assert_eq!(mask(&mut b, &["secret"]), 1);
        assert_eq!(&b[..], b"a\0******");
    }

    #[test]
    fn own_block_is_found() {
        let (start, end) = arg_block().unwrap();
        assert!(end > start && start > 0);
        // Nothing to hide: nothing touched.
        // SAFETY: the test harness does not read arguments concurrently here.
        assert_eq!(unsafe { hide_secrets(&["\u{1}never-an-argument\u{1}"]) }.unwrap(), 0);
    }
}
