//! Tunes glibc's allocator for `prepare`, whose threads allocate ~100 KiB of columns per slice
//! and free them on another thread a batch later: keep freed memory for reuse, grow heaps in big
//! steps, and let the kernel use huge pages for them.
//!
//! With glibc's defaults (trim above 128 KiB of free memory, mmap blocks above 128 KiB), each
//! freed batch is returned with `madvise`/`munmap` and the next batch takes fresh zeroed pages:
//! `perf` showed ~20% of prepare's time in page faults. Raising both thresholds keeps the freed
//! pages for reuse; peak RSS grows by at most one batch. Heaps then grow in 32 MiB steps rather
//! than with one `mprotect` per few pages, and huge pages cut the faults of the first touch.

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

/// glibc gives every thread's arena a heap reserved as one aligned block of this size (on 64-bit
/// targets), so rounding any address the thread's malloc returned down to it finds the heap.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENA_HEAP_SPAN: usize = 64 << 20;

/// Lets the kernel back the calling thread's malloc heap with transparent huge pages, where the
/// system allows them on request (`/sys/kernel/mm/transparent_hugepage/enabled` = `madvise`, the
/// usual default). prepare's decoding and writing threads first-touch tens of MB of fresh heap:
/// ~12,000 page faults per 2,000 slices, ~5% of its CPU on a VM; with huge pages ~2,400.
///
/// Only ever a hint: `madvise(MADV_HUGEPAGE)` changes which page size the kernel may use for
/// memory that is already mapped, never its contents, and an address range that is not (all)
/// the heap is left as it was or merely marked the same way. A no-op off glibc.
pub fn huge_pages_for_this_thread() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let probe = vec![0u8; 4096];
        let heap = probe.as_ptr() as usize & !(ARENA_HEAP_SPAN - 1);
        // SAFETY: MADV_HUGEPAGE only sets a flag on the mappings in the range; it does not
        // change, move or free any memory, and an error (a partly unmapped range) is harmless.
        unsafe {
            libc::madvise(
                heap as *mut libc::c_void,
                ARENA_HEAP_SPAN,
                libc::MADV_HUGEPAGE,
            );
        }
        drop(probe);
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// The `VmFlags` line of the mapping in /proc/self/smaps that holds `addr`.
    fn vm_flags_at(addr: usize) -> Option<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((lo, hi)) = range.split_once('-') {
                    if let (Ok(lo), Ok(hi)) =
                        (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                    {
                        inside = (lo..hi).contains(&addr);
                        continue;
                    }
                }
            }
            if inside {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return Some(flags.to_string());
                }
            }
        }
        None
    }

    #[test]
    fn a_threads_heap_is_marked_for_huge_pages() {
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
            return; // a kernel without transparent huge pages: nothing to mark
        }
        let flags = std::thread::spawn(|| {
            huge_pages_for_this_thread();
            let block = vec![1u8; 100_000];
            let flags = vm_flags_at(block.as_ptr() as usize);
            drop(block);
            flags
        })
        .join()
        .unwrap()
        .expect("the heap block is in some mapping");
        assert!(
            flags.split_whitespace().any(|f| f == "hg"),
            "VmFlags:{flags}"
        );
    }
}
