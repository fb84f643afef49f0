//! How the CPU kernels split work across rayon's threads: tasks of whole output rows, and a
//! pointer that lets tasks write disjoint parts of one output slice.

/// A raw pointer into an output slice that rayon tasks may share because each task writes a
/// disjoint set of elements (every user states which).
#[derive(Clone, Copy)]
pub struct SharedOut(*mut f32);

// SAFETY: the pointer is only dereferenced by tasks writing disjoint elements of a slice that
// outlives the parallel loop (each `SharedOut::new` call site documents its partition).
unsafe impl Send for SharedOut {}
// SAFETY: as above; no element is read or written by two tasks.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// Wraps the start of `out`.
    pub fn new(out: &mut [f32]) -> Self {
        Self(out.as_mut_ptr())
    }

    /// The pointer `offset` floats from the start.
    ///
    /// # Safety
    /// `offset` must lie inside the wrapped slice, and the caller must be the only task that
    /// touches the elements it accesses through the result.
    #[inline(always)]
    pub unsafe fn at(self, offset: usize) -> *mut f32 {
        self.0.add(offset)
    }
}

/// A band of output rows `rows` of image `image`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowTask {
    /// The image (batch index).
    pub image: usize,
    /// First output row.
    pub start: usize,
    /// One past the last output row.
    pub end: usize,
}

impl RowTask {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// True for an empty band.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// Splits `batch` images of `rows` output rows into bands: whole images when there are at least
/// four per thread (each task then pads its input once), otherwise equal bands of each image so
/// that there are about four tasks per thread (work stealing evens out a busy core).
pub fn row_tasks(batch: usize, rows: usize) -> Vec<RowTask> {
    let want = 4 * rayon::current_num_threads();
    let per_image = want.div_ceil(batch.max(1)).clamp(1, rows.max(1));
    let band = rows.div_ceil(per_image).max(1);
    let mut tasks = Vec::with_capacity(batch * per_image);
    for image in 0..batch {
        let mut start = 0;
        while start < rows {
            let end = (start + band).min(rows);
            tasks.push(RowTask { image, start, end });
            start = end;
        }
    }
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_tasks_cover_every_row_once() {
        for (batch, rows) in [(8, 128), (1, 128), (3, 5), (1, 1), (2, 7)] {
            let tasks = row_tasks(batch, rows);
            let mut seen = vec![0u8; batch * rows];
            for t in &tasks {
                assert!(!t.is_empty());
                for r in t.start..t.end {
                    seen[t.image * rows + r] += 1;
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "{batch}x{rows}: {tasks:?}");
        }
    }
}
