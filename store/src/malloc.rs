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
