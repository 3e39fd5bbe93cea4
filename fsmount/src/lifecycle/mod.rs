//! The life of one fsmount mount: set up (volume, rw layer, FUSE, overlay,
//! record, control socket), serve until told to stop, tear down.
//!
//! Stop requests arrive as [`Event`]s on one channel: a termination
//! signal, `fsmount umount` over the control socket, or the FUSE session
//! ending because someone unmounted it from outside. A failed teardown
//! (busy mountpoint) leaves everything mounted and keeps serving.

pub mod teardown;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use crate::daemon::PidFile;
use crate::error::{Error, ErrorKind, Result, invalid};
use crate::fuse::session::{FuseMount, mount_fuse};
use crate::fuse::{FuseFs, FuseOptions};
use crate::overlay::mount_overlay;
use crate::state::{MountRecord, StateDir, now_secs};
use crate::stats::control::{ControlHandler, ControlServer};
use crate::stats::{Counters, Snapshot, http};
use crate::sys::mount;
use crate::tree::Tree;
use crate::volume::{Volume, VolumeSpec, match_root_attrs};
pub use teardown::teardown;

/// What to mount (already validated by the CLI).
#[derive(Clone, Debug)]
pub struct MountSpec {
    /// Shown sources, lowest layer first (for records and `list`).
    pub sources: Vec<String>,
    pub mountpoint: PathBuf,
    pub rw: Option<String>,
    pub read_only: bool,
    /// Required with `rw`.
    pub volume: Option<VolumeSpec>,
    pub quota: Option<u64>,
    pub metrics: Option<SocketAddr>,
    pub fuse: FuseOptions,
    pub threads: usize,
    pub pid_file: Option<PathBuf>,
    pub log_file: Option<PathBuf>,
}

/// Why the serving loop should act.
pub enum Event {
    Signal(i32),
    /// `fsmount umount` asked; the answer goes back on `reply`.
    Shutdown {
        lazy: bool,
        reply: Sender<std::result::Result<(), String>>,
    },
    /// The FUSE session ended (unmounted from outside, or aborted).
    SessionEnded(std::io::Result<()>),
}

/// A set-up mount, ready to serve.
pub struct Mounted {
    state: StateDir,
    record: MountRecord,
    counters: Arc<Counters>,
    events: Receiver<Event>,
    tx: Sender<Event>,
    _fuse: FuseMount,
    control: ControlServer,
    _pid_file: Option<PidFile>,
    metrics: Option<SocketAddr>,
}

struct Handler {
    tx: parking_lot::Mutex<Sender<Event>>,
    counters: Arc<Counters>,
    mountpoint: String,
    passthrough: Arc<std::sync::atomic::AtomicBool>,
}

impl ControlHandler for Handler {
    fn stats(&self) -> Snapshot {
        snapshot(&self.counters, &self.mountpoint, &self.passthrough)
    }

    fn shutdown(&self, lazy: bool) -> std::result::Result<(), String> {
        let (rtx, rrx) = channel();
        self.tx
            .lock()
            .send(Event::Shutdown { lazy, reply: rtx })
            .map_err(|_| "the mount is already stopping".to_string())?;
        rrx.recv().unwrap_or(Ok(()))
    }
}

fn snapshot(c: &Counters, mp: &str, pt: &std::sync::atomic::AtomicBool) -> Snapshot {
    let mut s = c.snapshot();
    s.mountpoint = mp.to_string();
    s.passthrough = pt.load(Ordering::Relaxed);
    s
}

fn check_mountpoint(p: &Path) -> Result<PathBuf> {
    let abs = std::fs::canonicalize(p)
        .map_err(|e| Error::io(format!("mountpoint {}", p.display()), e))?;
    if !abs.is_dir() {
        return Err(invalid(format!("mountpoint {} is not a directory", abs.display())));
    }
    Ok(abs)
}

/// A record left by a process that is gone: clean it before reuse.
fn clean_stale(state: &StateDir, mountpoint: &Path) -> Result<()> {
    if let Some(old) = state.record(mountpoint)? {
        if old.alive() {
            return Err(Error::new(
                ErrorKind::Busy,
                format!("{} is already mounted by fsmount (pid {})", mountpoint.display(), old.pid),
            ));
        }
        tracing::warn!("cleaning the stale mount of pid {} at {}", old.pid, mountpoint.display());
        teardown(state, &old, false).map_err(|e| {
            e.context_prefix(format!(
                "a stale mount is at {}; run `fsmount umount {}`",
                mountpoint.display(),
                mountpoint.display()
            ))
        })?;
    }
    Ok(())
}

/// Set up everything; on error, undo what was done.
pub fn setup(
    state: &StateDir,
    spec: &MountSpec,
    tree: Arc<dyn Tree>,
    counters: Arc<Counters>,
) -> Result<Mounted> {
    let mountpoint = check_mountpoint(&spec.mountpoint)?;
    let (tx, events) = channel();
    let lock = state.lock()?;
    clean_stale(state, &mountpoint)?;

    // The rw layer (volume + subvolume) first: it is the likeliest to fail.
    let layer = match &spec.rw {
        Some(name) => {
            let vol_spec =
                spec.volume.as_ref().ok_or_else(|| invalid("an rw layer needs a volume"))?;
            if let Some(r) = state.records()?.iter().find(|r| {
                r.rw.as_deref() == Some(name)
                    && r.volume.as_ref().is_some_and(|v| v.same_as(vol_spec))
            }) {
                return Err(Error::new(
                    ErrorKind::Busy,
                    format!("rw layer {name:?} is already mounted at {}", r.mountpoint.display()),
                ));
            }
            let vol = Volume::acquire(vol_spec, state)?;
            match vol.open_rw(name, !spec.read_only, spec.quota) {
                Ok(l) => Some(l),
                Err(e) => {
                    let _ = teardown::release_volume_if_unused(state, vol_spec);
                    return Err(e);
                }
            }
        }
        None => None,
    };
    let overlay = layer.is_some();
    let mdir = state.mount_dir(&mountpoint);
    std::fs::create_dir_all(&mdir)
        .map_err(|e| Error::io(format!("create {}", mdir.display()), e))?;
    let lower = if overlay { mdir.join("lower") } else { mountpoint.clone() };
    let record = MountRecord {
        mountpoint: mountpoint.clone(),
        sources: spec.sources.clone(),
        rw: spec.rw.clone(),
        read_only: spec.read_only,
        volume: if overlay { spec.volume.clone() } else { None },
        lower: lower.clone(),
        overlay,
        pid: std::process::id(),
        control: mdir.join("ctl.sock"),
        pid_file: spec.pid_file.clone(),
        log_file: spec.log_file.clone(),
        started: now_secs(),
    };
    // From here on a failure tears down through the record.
    state.write_record(&record)?;
    let undo = |e: Error| -> Error {
        if let Err(t) = teardown(state, &record, true) {
            tracing::error!("undo after failed setup: {t}");
        }
        e
    };

    if overlay {
        std::fs::create_dir_all(&lower)
            .map_err(|e| undo(Error::io(format!("create {}", lower.display()), e)))?;
    }
    let fs = FuseFs::new(tree, counters.clone(), &spec.fuse);
    let etx = tx.clone();
    let fuse = mount_fuse(
        fs,
        &lower,
        "zosfs",
        spec.threads,
        Box::new(move |r| {
            let _ = etx.send(Event::SessionEnded(r));
        }),
    )
    .map_err(undo)?;
    if let Some(l) = &layer {
        if l.created {
            match_root_attrs(&l.upper, &lower).map_err(undo)?;
        }
        mount_overlay(&mountpoint, &lower, l, spec.read_only).map_err(undo)?;
    }
    drop(lock);

    let handler = Arc::new(Handler {
        tx: parking_lot::Mutex::new(tx.clone()),
        counters: counters.clone(),
        mountpoint: mountpoint.display().to_string(),
        passthrough: fuse.passthrough.clone(),
    });
    let finish = |e: Error| -> Error {
        let _lock = state.lock();
        undo(e)
    };
    let control = ControlServer::start(&record.control, handler.clone()).map_err(finish)?;
    let metrics = match spec.metrics {
        Some(addr) => {
            let h = handler.clone();
            Some(http::serve(addr, Arc::new(move || h.stats().prometheus())).map_err(finish)?)
        }
        None => None,
    };
    let pid_file = match &spec.pid_file {
        Some(p) => Some(PidFile::create(p).map_err(finish)?),
        None => None,
    };
    Ok(Mounted {
        state: state.clone(),
        record,
        counters,
        events,
        tx,
        _fuse: fuse,
        control,
        _pid_file: pid_file,
        metrics,
    })
}

impl Mounted {
    pub fn record(&self) -> &MountRecord {
        &self.record
    }

    /// Where `--metrics` listens (the bound port when 0 was asked).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// A sender for events (the signal thread uses it).
    pub fn events(&self) -> Sender<Event> {
        self.tx.clone()
    }

    fn stop(&self, lazy: bool) -> Result<()> {
        let _lock = self.state.lock()?;
        teardown(&self.state, &self.record, lazy)
    }

    /// Wait for the session threads after the FUSE unmount.
    fn wait_session_end(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.events.recv_timeout(left) {
                Ok(Event::SessionEnded(_)) | Err(_) => return,
                Ok(Event::Shutdown { reply, .. }) => {
                    let _ = reply.send(Ok(()));
                }
                Ok(Event::Signal(_)) => {}
            }
        }
    }

    /// Serve until a stop request succeeds or the session ends.
    pub fn run(self) -> Result<()> {
        loop {
            let ev = self
                .events
                .recv()
                .map_err(|_| Error::new(ErrorKind::Io, "event channel closed"))?;
            match ev {
                Event::Signal(sig) => {
                    tracing::info!("signal {sig}: unmounting {}", self.record.mountpoint.display());
                    match self.stop(false) {
                        Ok(()) => break,
                        Err(e) => tracing::error!("cannot unmount: {e}; still serving"),
                    }
                }
                Event::Shutdown { lazy, reply } => match self.stop(lazy) {
                    Ok(()) => {
                        self.wait_session_end();
                        let _ = reply.send(Ok(()));
                        // Let the control thread write the answer before exit.
                        self.control.drain(Duration::from_secs(5));
                        return Ok(());
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                },
                Event::SessionEnded(r) => {
                    tracing::warn!(
                        "FUSE session at {} ended ({r:?}); cleaning up",
                        self.record.lower.display()
                    );
                    // The lower is gone: the overlay above it is useless.
                    let _ = self.stop(true);
                    return Ok(());
                }
            }
        }
        self.wait_session_end();
        Ok(())
    }

    /// Still mounted as recorded (for tests and `list`).
    pub fn is_mounted(&self) -> bool {
        mount::mounted_at(&self.record.mountpoint).ok().flatten().is_some()
    }
}
