//! Groups a stream of fallible items into batches, in the shape of candle-datasets' `Batcher`
//! (which we do not depend on: it pulls ~105 crates for a 171-line type), and turns slice batches
//! into fixed-size patch batches and (B, 1, H, W) tensors.

use crate::data::patch::PatchSampler;
use crate::data::SliceSample;
use crate::error::Result;
use crate::rng::SplitMix64;
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

/// A batch of training patches.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchBatch {
    /// `batch * patch * patch` intensities.
    pub images: Vec<f32>,
    /// `batch * patch * patch` 0/1 mask bytes.
    pub masks: Vec<u8>,
    /// Number of patches.
    pub batch: usize,
    /// Patch side.
    pub patch: usize,
    /// Source slice of each patch.
    pub slice_ids: Vec<String>,
    /// Patient of each patch.
    pub patient_ids: Vec<String>,
}

impl PatchBatch {
    /// Draws one patch from each sample.
    pub fn from_samples(
        samples: &[SliceSample],
        sampler: &PatchSampler,
        rng: &mut SplitMix64,
    ) -> Self {
        let plane = sampler.plane();
        let mut images = vec![0.0; samples.len() * plane];
        let mut masks = vec![0; samples.len() * plane];
        for (i, s) in samples.iter().enumerate() {
            let range = i * plane..(i + 1) * plane;
            sampler.sample(s, rng, &mut images[range.clone()], &mut masks[range]);
        }
        Self {
            images,
            masks,
            batch: samples.len(),
            patch: sampler.patch,
            slice_ids: samples.iter().map(|s| s.slice_id.clone()).collect(),
            patient_ids: samples.iter().map(|s| s.patient_id.clone()).collect(),
        }
    }

    /// The images and masks as (B, 1, P, P) f32 tensors (masks 0.0/1.0).
    pub fn to_tensors(&self, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
        to_nchw(
            &self.images,
            &self.masks,
            (self.batch, self.patch, self.patch),
            device,
        )
    }
}

/// (B, 1, H, W) f32 tensors from stacked image planes and 0/1 mask planes.
pub(crate) fn to_nchw(
    images: &[f32],
    masks: &[u8],
    (b, h, w): (usize, usize, usize),
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let x = Tensor::from_slice(images, (b, 1, h, w), device)?;
    let y: Vec<f32> = masks.iter().map(|&m| f32::from(m.min(1))).collect();
    let y = Tensor::from_vec(y, (b, 1, h, w), device)?;
    Ok((x, y))
}

/// Patch batches drawn from a stream of slices: each slice contributes one patch.
pub struct PatchBatches<I> {
    slices: Batcher<I>,
    sampler: PatchSampler,
    rng: SplitMix64,
}

/// Batches `slices` by `batch_size` (keeping or dropping the last partial batch) and draws one
/// patch per slice with `sampler` and `rng`.
pub fn patch_batches<I>(
    slices: I,
    sampler: PatchSampler,
    rng: SplitMix64,
    batch_size: usize,
    drop_last: bool,
) -> PatchBatches<I>
where
    I: Iterator<Item = Result<SliceSample>>,
{
    PatchBatches {
        slices: Batcher::new(slices)
            .batch_size(batch_size)
            .drop_last(drop_last),
        sampler,
        rng,
    }
}

impl<I> PatchBatches<I> {
    /// The generator state after the batches drawn so far (for resuming).
    pub fn rng(&self) -> &SplitMix64 {
        &self.rng
    }
}

impl<I> Iterator for PatchBatches<I>
where
    I: Iterator<Item = Result<SliceSample>>,
{
    type Item = Result<PatchBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        let batch = self.slices.next()?;
        Some(batch.map(|samples| PatchBatch::from_samples(&samples, &self.sampler, &mut self.rng)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

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

    fn sample(i: usize) -> SliceSample {
        SliceSample {
            slice_id: format!("s{i}"),
            patient_id: format!("p{i}"),
            height: 20,
            width: 30,
            image: vec![i as f32 / 10.0; 600],
            mask: (0..600).map(|j| u8::from(j == 77)).collect(),
        }
    }

    #[test]
    fn patch_batches_and_tensor_shapes() {
        let sampler = PatchSampler {
            patch: 16,
            fg_crop: 1.0,
            flips: true,
        };
        let slices = (0..5).map(|i| Ok(sample(i)));
        let batches: Vec<PatchBatch> = patch_batches(slices, sampler, SplitMix64::new(1), 2, false)
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(
            batches.iter().map(|b| b.batch).collect::<Vec<_>>(),
            vec![2, 2, 1]
        );
        let b = &batches[1];
        assert_eq!(b.slice_ids, vec!["s2", "s3"]);
        assert_eq!(b.patient_ids, vec!["p2", "p3"]);
        assert_eq!(b.images.len(), 2 * 16 * 16);
        // fg_crop = 1: each patch holds the one foreground pixel.
        for m in b.masks.chunks_exact(256) {
            assert_eq!(m.iter().filter(|&&v| v == 1).count(), 1);
        }
        let (x, y) = b.to_tensors(&Device::Cpu).unwrap();
        assert_eq!(x.dims(), &[2, 1, 16, 16]);
        assert_eq!(y.dims(), &[2, 1, 16, 16]);
        assert_eq!(y.sum_all().unwrap().to_scalar::<f32>().unwrap(), 2.0);
        let total = x.sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!((total - 256.0 * (0.2 + 0.3)).abs() < 1e-3, "{total}");

        let with_error = vec![Ok(sample(0)), Err(Error::Usage("boom".into()))];
        let mut it = patch_batches(
            with_error.into_iter(),
            sampler,
            SplitMix64::new(1),
            4,
            false,
        );
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
    }
}
