//! A progress bar for `pack` on a terminal: files, bytes, chunks, dedup
//! ratio and throughput, redrawn from the pipeline's counters.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use zosfs_flist::pack::Counters;

/// Draws until dropped (nothing when stderr is not a terminal).
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    pub fn start(counters: Arc<Counters>, enabled: bool) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        if !enabled || !std::io::stderr().is_terminal() {
            return Progress { stop, thread: None };
        }
        let s = stop.clone();
        let thread = std::thread::spawn(move || draw(counters, s));
        Progress { stop, thread: Some(thread) }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn draw(c: Arc<Counters>, stop: Arc<AtomicBool>) {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    while !stop.load(Relaxed) {
        let read = c.bytes_read.load(Relaxed);
        bar.set_length(c.bytes_total.load(Relaxed).max(read));
        bar.set_position(read);
        let secs = start.elapsed().as_secs_f64().max(0.001);
        bar.set_message(format!(
            "files {}/{}  chunks {} ({} new, {} up)  dedup {:.2}x  {:.1} MB/s",
            c.files_done.load(Relaxed),
            c.files_total.load(Relaxed),
            c.chunks.load(Relaxed),
            c.chunks_unique.load(Relaxed),
            c.chunks_uploaded.load(Relaxed),
            c.dedup_ratio(),
            read as f64 / secs / 1e6,
        ));
        // A display refresh, not synchronisation.
        std::thread::sleep(Duration::from_millis(100));
    }
    bar.finish_and_clear();
}
