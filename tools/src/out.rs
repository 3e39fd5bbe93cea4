//! Standard output of the `flist` and `chunkstore` commands.
//!
//! `println!` panics when the reader of stdout has gone (`flist ls | head`).
//! Ignoring SIGPIPE is Rust's default and must stay: a node store client
//! writing to a dead owner's socket needs EPIPE as an error to fail over,
//! not a signal that kills it. So output goes through [`line`], which ends
//! the process quietly on a broken stdout pipe: the output nobody reads is
//! the only thing lost (what a command must not lose it has done already,
//! or does before printing its summary).

use std::io::Write;

/// Write one line to stdout; exit 0 quietly if stdout's reader is gone.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        exit_if_broken_pipe(&e);
        panic!("write to stdout: {e}");
    }
}

/// Exit 0 quietly when `e` says stdout's reader is gone.
pub fn exit_if_broken_pipe(e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
}

/// Whether an error, or any error it wraps, is a broken pipe: a command
/// whose output pipe closed (`flist ls -R | head`) exits quietly.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `println!` through [`line`].
#[macro_export]
macro_rules! outln {
    () => { $crate::out::line(format_args!("")) };
    ($($arg:tt)*) => { $crate::out::line(format_args!($($arg)*)) };
}
