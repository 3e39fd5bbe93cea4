//! Allocator settings for the long-running servers.
//!
//! The servers allocate and free chunk-sized buffers (64 KiB to 4 MiB)
//! at a high rate from many threads. glibc's defaults hand such memory
//! back to the kernel as soon as a thread's heap top passes twice the
//! largest buffer freed so far (`madvise(MADV_DONTNEED)`), and the next
//! buffer faults every page in again: 256 page faults per 1 MiB NBD read
//! reply, measured as a third of the time of a warm 1 MiB read. Keeping up
//! to `TRIM` bytes of free memory per heap avoids that; memory beyond it
//! still goes back.

/// Free memory a heap keeps before trimming.
const TRIM: libc::c_int = 64 << 20;
/// Allocations from this size on are mmapped (and unmapped when freed).
const MMAP: libc::c_int = 8 << 20;

/// Apply the settings. Call once, early in `main`, before threads start.
pub fn tune_for_servers() {
    // SAFETY: mallopt only changes allocator parameters; called before
    // other threads exist. A refused setting (returns 0) is harmless.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP);
    }
}

/// Settings for fsmount's serving process: only a fixed mmap threshold.
///
/// Each FUSE worker thread (8 per mount) callocs a 16 MiB read buffer.
/// With glibc's dynamic threshold, the first such buffer freed (a mount
/// going away) raises the threshold past 16 MiB, so later buffers come
/// from the arenas: calloc then writes all 16 MiB (128 MiB resident per
/// mount, idle or not) and arenas keep it after the mount is gone. Fixed
/// at [`MMAP`], they stay fresh mmaps (untouched pages cost nothing) and
/// are unmapped when freed; the trim threshold keeps its small default.
pub fn tune_for_mounts() {
    // SAFETY: as in tune_for_servers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP);
    }
}

/// Hand free heap memory back to the kernel now. glibc keeps what a
/// thread freed in that thread's arena (up to the trim threshold, per
/// arena, and arenas outlive their threads): a server whose mounts come
/// and go, each with its own threads, otherwise grows to the sum of those
/// leftovers (measured in fsmount: 92 MB after one local:// mount/umount
/// cycle, 291 MB after six). Call after something big went away.
pub fn give_back() {
    // SAFETY: malloc_trim only releases free memory; callable any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
