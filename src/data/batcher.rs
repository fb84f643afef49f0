//! Groups a stream of fallible items into batches, in the shape of candle-datasets' `Batcher`
//! (which we do not depend on: it pulls ~105 crates for a 171-line type), and stacks planes into
//! `(B, 1, H, W)` tensors.

use candle_core::{Device, Tensor};

/// Default batch size, as in candle-datasets.
pub const DEFAULT_BATCH_SIZE: usize = 16;

/// Batches of `batch_size` items from an iterator of `Result<T, E>`.
///
/// An item error is yielded as the batch's error (the items gathered for that batch are
/// dropped, as in candle-datasets); iteration may continue after it. The last, partial batch is
/// kept unless `drop_last(true)`.
#[derive(Debug, Clone)]
pub struct Batcher<I> {
    inner: I,
    batch_size: usize,
    drop_last: bool,
}

impl<I> Batcher<I> {
    /// Batches of [`DEFAULT_BATCH_SIZE`], keeping the last partial batch.
    pub fn new(inner: I) -> Self {
        Self {
            inner,
            batch_size: DEFAULT_BATCH_SIZE,
            drop_last: false,
        }
    }

    /// Sets the batch size (at least 1).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// Whether to drop a last batch smaller than the batch size.
    pub fn drop_last(mut self, drop: bool) -> Self {
        self.drop_last = drop;
        self
    }
}

impl<I, T, E> Iterator for Batcher<I>
where
    I: Iterator<Item = std::result::Result<T, E>>,
{
    type Item = std::result::Result<Vec<T>, E>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut items = Vec::with_capacity(self.batch_size);
        while items.len() < self.batch_size {
            match self.inner.next() {
                Some(Ok(item)) => items.push(item),
                Some(Err(e)) => return Some(Err(e)),
                None => break,
            }
        }
        let full = items.len() == self.batch_size;
        (full || (!items.is_empty() && !self.drop_last)).then_some(Ok(items))
    }
}

/// (B, 1, H, W) f32 tensors from stacked image planes and 0/1 mask planes.
pub fn to_nchw(
    images: &[f32],
    masks: &[u8],
    (b, h, w): (usize, usize, usize),
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let x = Tensor::from_slice(images, (b, 1, h, w), device)?;
    Ok((x, mask_nchw(masks, (b, h, w), device)?))
}

/// A (B, 1, H, W) f32 tensor of 0.0/1.0 from stacked 0/1 mask planes.
pub fn mask_nchw(
    masks: &[u8],
    (b, h, w): (usize, usize, usize),
    device: &Device,
) -> candle_core::Result<Tensor> {
    let y: Vec<f32> = masks.iter().map(|&m| f32::from(m.min(1))).collect();
    Tensor::from_vec(y, (b, 1, h, w), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(n: usize, batch: usize, drop_last: bool) -> Vec<usize> {
        let items = (0..n).map(Ok::<_, String>);
        Batcher::new(items)
            .batch_size(batch)
            .drop_last(drop_last)
            .map(|b| b.unwrap().len())
            .collect()
    }

    #[test]
    fn batch_sizes_and_last_partial_batch() {
        assert_eq!(sizes(10, 4, false), vec![4, 4, 2]);
        assert_eq!(sizes(10, 4, true), vec![4, 4]);
        assert_eq!(sizes(8, 4, true), vec![4, 4]);
        assert_eq!(sizes(8, 4, false), vec![4, 4]);
        assert_eq!(sizes(0, 4, false), Vec::<usize>::new());
        assert_eq!(sizes(3, 0, false), vec![1, 1, 1]);
        assert_eq!(sizes(40, DEFAULT_BATCH_SIZE, false), vec![16, 16, 8]);
        let order: Vec<Vec<i32>> = Batcher::new((0..5).map(Ok::<_, ()>))
            .batch_size(2)
            .map(|b| b.unwrap())
            .collect();
        assert_eq!(order, vec![vec![0, 1], vec![2, 3], vec![4]]);
    }

    #[test]
    fn item_errors_are_passed_through() {
        let items = vec![Ok(1), Ok(2), Err("bad"), Ok(3), Ok(4), Ok(5)];
        let out: Vec<_> = Batcher::new(items.into_iter()).batch_size(2).collect();
        assert_eq!(
            out,
            vec![Ok(vec![1, 2]), Err("bad"), Ok(vec![3, 4]), Ok(vec![5])]
        );
        // An error mid-batch drops the items gathered for that batch.
        let items = vec![Ok(1), Err("bad"), Ok(2), Ok(3)];
        let out: Vec<_> = Batcher::new(items.into_iter()).batch_size(2).collect();
        assert_eq!(out, vec![Err("bad"), Ok(vec![2, 3])]);
    }
}
