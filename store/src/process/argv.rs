//! Hide secrets in this process's own command line.
//!
//! `/proc/PID/cmdline` is readable by every local user, and it is the
//! process's own argument memory (`arg_start..arg_end` of its mm), not a
//! copy taken at exec. So once the arguments are parsed, overwriting the
//! secret bytes there in place hides them from `ps` for the rest of the
//! process's life (a daemon forked by `fsmount -d` included). The window
//! between exec and this call remains: `ZOSFS_STORE`, `--store-file` and
//! `--admin-file` avoid it altogether.
//!
//! What counts as a secret: the userinfo of every `scheme://userinfo@host`
//! URL (all that the store URL parser would take as a password), and the
//! value of each flag named by the caller (`--admin PW`, `--admin=PW`).
//! Lengths and the NUL separators stay, so nothing else moves.

/// Overwrite secrets in this process's argument memory with `*`. Call
/// early in `main`, after parsing and before starting threads (nothing
/// else may read the raw argument memory concurrently). Best effort: a
/// failure to locate the memory changes nothing.
pub fn hide_secrets(secret_flags: &[&str]) {
    let Some((start, end)) = arg_area() else { return };
    if end <= start {
        return;
    }
    // SAFETY: [arg_start, arg_end) is this process's argument area on the
    // main thread's stack: mapped, writable, and owned by no Rust object
    // (std copies arguments out when `args()` is called). We only replace
    // bytes in place, keeping every NUL, so the area stays well formed.
    let area = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, end - start) };
    scrub(area, secret_flags);
}

/// `arg_start` and `arg_end` from /proc/self/stat (fields 48 and 49).
fn arg_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces and parentheses: count
    // fields from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3.
    let start = fields.get(48 - 3)?.parse().ok()?;
    let end = fields.get(49 - 3)?.parse().ok()?;
    Some((start, end))
}

/// Scrub a NUL-separated argument area in place (pure: tested directly).
fn scrub(area: &mut [u8], secret_flags: &[&str]) {
    let mut hide_next = false;
    let mut pos = 0;
    while pos < area.len() {
        let len = area[pos..].iter().position(|&b| b == 0).unwrap_or(area.len() - pos);
        let arg = &mut area[pos..pos + len];
        if hide_next {
            arg.fill(b'*');
            hide_next = false;
        } else {
            hide_next = scrub_arg(arg, secret_flags);
        }
        pos += len + 1;
    }
}

/// Scrub one argument; returns true when the next argument is a secret.
fn scrub_arg(arg: &mut [u8], secret_flags: &[&str]) -> bool {
    for flag in secret_flags {
        let flag = flag.as_bytes();
        if arg == flag {
            return true;
        }
        if arg.len() > flag.len() && arg.starts_with(flag) && arg[flag.len()] == b'=' {
            arg[flag.len() + 1..].fill(b'*');
            return false;
        }
    }
    hide_userinfo(arg);
    false
}

/// `scheme://userinfo@rest` → `scheme://********@rest`, for every URL in
/// the argument (a comma list or `--flag=URL` included).
fn hide_userinfo(arg: &mut [u8]) {
    let mut from = 0;
    while let Some(i) = find(&arg[from..], b"://") {
        let start = from + i + 3;
        // Like the URL parser, the userinfo is everything up to the first
        // '@' (a password may hold '/' or '?'); looking no further than the
        // next URL of a list. Hiding a path's '@' too is harmless.
        let next = find(&arg[start..], b"://").map_or(arg.len(), |j| start + j);
        if let Some(at) = arg[start..next].iter().position(|&b| b == b'@') {
            arg[start..start + at].fill(b'*');
        }
        from = start;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrubbed(args: &[&str], flags: &[&str]) -> Vec<String> {
        let mut area = args.join("\0").into_bytes();
        area.push(0);
        scrub(&mut area, flags);
        let text = String::from_utf8(area).expect("utf8 kept");
        text.trim_end_matches('\0').split('\0').map(str::to_string).collect()
    }

    #[test]
    fn passwords_in_urls_and_flag_values_become_stars() {
        let out = scrubbed(
            &[
                "nbdserver",
                "--store",
                "zdb://:hunter2@hub:9900/images",
                "--store=redis://user:pw@h:6379/0",
                "zdb+unix://:s3cret@/run/zdb.sock?ns=x",
                "00-7f=zdb://:a@h1:1/n,zdb://:b@h2:2/n",
                "--admin",
                "topsecret",
                "--admin=also",
                "local:///var/lib/zosfs/store",
                "/path/with@sign",
                "zdb://:pa/ss?x@h:1/n",
            ],
            &["--admin"],
        );
        assert_eq!(
            out,
            [
                "nbdserver",
                "--store",
                "zdb://********@hub:9900/images",
                "--store=redis://*******@h:6379/0",
                "zdb+unix://*******@/run/zdb.sock?ns=x",
                "00-7f=zdb://**@h1:1/n,zdb://**@h2:2/n",
                "--admin",
                "*********",
                "--admin=****",
                "local:///var/lib/zosfs/store",
                "/path/with@sign",
                "zdb://********@h:1/n",
            ]
        );
    }

    #[test]
    fn the_live_command_line_loses_its_secrets() {
        // This test binary's own argument area: scrubbing it must keep
        // /proc/self/cmdline readable and of the same length.
        let before = std::fs::read("/proc/self/cmdline").expect("cmdline");
        hide_secrets(&["--never-passed"]);
        let after = std::fs::read("/proc/self/cmdline").expect("cmdline");
        assert_eq!(before.len(), after.len());
    }
}
