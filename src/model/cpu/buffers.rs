//! A pool of f32 buffers that the fused training pass reuses from step to step, so that its
//! activations and gradients land in memory that is already mapped: a fresh buffer costs a
//! page fault and a page clear per 4 KiB (or a `memset` of recycled heap), about 12 % of a
//! width-8 step in `perf` before the pool.
//!
//! Buffers are matched by exact length: every step of a run asks for the same sizes, so the
//! pool settles at the largest number of each size that one step holds at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Idle buffers by length, and the key of the workload they were sized for.
#[derive(Default)]
struct Idle {
    by_len: HashMap<usize, Vec<Vec<f32>>>,
    key: Vec<usize>,
}

/// A shared pool; clones share the buffers.
#[derive(Clone, Default)]
pub struct BufferPool(Arc<Mutex<Idle>>);

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let floats: usize = idle.by_len.iter().map(|(len, v)| len * v.len()).sum();
        write!(f, "BufferPool({floats} floats idle)")
    }
}

impl BufferPool {
    /// A buffer of `len` floats whose contents are unspecified (a previous user's values, or
    /// zeros): callers must write every element before reading it. Under `cfg(test)` it is
    /// always filled with NaN, so that an element a kernel forgets to write shows up.
    pub fn take(&self, len: usize) -> Vec<f32> {
        let recycled = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_len
            .get_mut(&len)
            .and_then(Vec::pop);
        match recycled {
            Some(mut buf) => {
                if cfg!(test) {
                    buf.fill(f32::NAN);
                }
                buf
            }
            None if cfg!(test) => vec![f32::NAN; len],
            None => vec![0.0; len],
        }
    }

    /// Frees every idle buffer unless the pool was last sized for `key` (say, an input's
    /// shape): a caller whose sizes change from call to call keeps one workload's buffers at a
    /// time instead of collecting every size it has seen.
    pub fn reserve_for(&self, key: &[usize]) {
        let mut idle = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.key != key {
            idle.by_len.clear();
            idle.key = key.to_vec();
        }
    }

    /// Returns a buffer for reuse.
    pub fn give(&self, buf: Vec<f32>) {
        if buf.is_empty() {
            return;
        }
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_len
            .entry(buf.len())
            .or_default()
            .push(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_by_length_and_poisoned_in_tests() {
        let pool = BufferPool::default();
        let a = pool.take(5);
        let ptr = a.as_ptr();
        assert!(a.iter().all(|v| v.is_nan()));
        pool.give(a);
        let b = pool.take(5);
        assert_eq!(b.as_ptr(), ptr);
        assert!(b.iter().all(|v| v.is_nan()));
        assert_eq!(pool.take(6).len(), 6);
        pool.give(b);
        assert_eq!(format!("{pool:?}"), "BufferPool(5 floats idle)");
        pool.reserve_for(&[1, 2]);
        assert_eq!(format!("{pool:?}"), "BufferPool(0 floats idle)");
    }
}
