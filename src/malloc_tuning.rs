//! Stops glibc's allocator from handing freed memory back to the kernel between `prepare`'s
//! batches, which otherwise re-faults every page of every slice buffer.
//!
//! `prepare` allocates ~100 KiB of columns per slice on the decoding threads and frees them on
//! the writer thread a batch later. With glibc's defaults (trim above 128 KiB of free memory,
//! mmap blocks above 128 KiB), each freed batch is returned with `madvise`/`munmap` and the next
//! batch takes fresh zeroed pages: `perf` showed ~20% of prepare's time in page faults. Raising
//! both thresholds keeps the freed pages for reuse; peak RSS grows by at most one batch.

/// Keep up to this much freed memory instead of trimming it (and serve blocks up to this size
/// from the heap rather than fresh mappings).
const RETAIN_BYTES: i32 = 256 << 20;

/// Grow a heap by at least this much at a time. The decoding threads' heaps grow with
/// `mprotect`, one call per few pages by default (~1,600 calls per 2,000 slices), and each call
/// interrupts the other core to flush its TLB.
const GROW_BYTES: i32 = 32 << 20;

/// Applies the thresholds. Process-wide, idempotent, and a no-op off glibc.
pub fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; both are documented, valid parameters, and
    // changing them while other threads allocate is supported by glibc (it takes the arena lock).
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, RETAIN_BYTES);
        libc::mallopt(libc::M_MMAP_THRESHOLD, RETAIN_BYTES);
        libc::mallopt(libc::M_TOP_PAD, GROW_BYTES);
    }
}
