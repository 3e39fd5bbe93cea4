//! Process plumbing shared by the long-running programs (`fsmount`,
//! `chunkstore serve`, `nbdserver`); it lives here because the store crate
//! is below all of them.
//!
//! * [`daemon`] — `-d/--daemon` with a readiness pipe, pid and log files
//!   opened without following symlinks, termination signals;
//! * [`argv`] — hiding passwords in the process's own command line;
//! * [`http`] — the `--metrics` HTTP responder (Prometheus text format).

pub mod argv;
pub mod daemon;
pub mod http;
