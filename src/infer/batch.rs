//! Whole slices at native size, padded bottom/right to one common size (a multiple of the
//! network's downsampling factor) so they stack into one batch, and cut back afterwards.

use crate::data::batcher::{mask_nchw, to_nchw};
use crate::data::patch::{pad_into, padded_size};
use crate::data::SliceSample;
use candle_core::{Device, Tensor};

/// Whole validation slices at native size, padded bottom/right to one common size (a multiple of
/// the network's downsampling factor) so they stack into one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct WholeSliceBatch {
    /// `len * height * width` intensities.
    pub images: Vec<f32>,
    /// `len * height * width` 0/1 mask bytes.
    pub masks: Vec<u8>,
    /// Padded height.
    pub height: usize,
    /// Padded width.
    pub width: usize,
    /// Native (height, width) of each slice.
    pub dims: Vec<(usize, usize)>,
    /// Slice ids, in batch order.
    pub slice_ids: Vec<String>,
    /// Patient ids, in batch order.
    pub patient_ids: Vec<String>,
}

impl WholeSliceBatch {
    /// Stacks `samples`, padding them to the largest height and width rounded up to `multiple`.
    pub fn from_samples(samples: Vec<SliceSample>, multiple: usize) -> Self {
        let max_h = samples.iter().map(|s| s.height).max().unwrap_or(0);
        let max_w = samples.iter().map(|s| s.width).max().unwrap_or(0);
        let (height, width) = padded_size(max_h, max_w, multiple);
        let plane = height * width;
        let mut images = vec![0.0; samples.len() * plane];
        let mut masks = vec![0; samples.len() * plane];
        let mut dims = Vec::with_capacity(samples.len());
        let mut slice_ids = Vec::with_capacity(samples.len());
        let mut patient_ids = Vec::with_capacity(samples.len());
        for (i, s) in samples.into_iter().enumerate() {
            let range = i * plane..(i + 1) * plane;
            pad_into(
                &s,
                height,
                width,
                &mut images[range.clone()],
                &mut masks[range],
            );
            dims.push((s.height, s.width));
            slice_ids.push(s.slice_id);
            patient_ids.push(s.patient_id);
        }
        Self {
            images,
            masks,
            height,
            width,
            dims,
            slice_ids,
            patient_ids,
        }
    }

    /// Number of slices.
    pub fn len(&self) -> usize {
        self.dims.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.dims.is_empty()
    }

    /// Pixels in one padded plane.
    pub fn plane(&self) -> usize {
        self.height * self.width
    }

    /// Cuts `plane`, one padded `height * width` plane of slice `i` (probabilities, the image or
    /// the mask), back to that slice's native size: the one crop every caller uses.
    ///
    /// # Panics
    /// When `i` is out of range or `plane` is not one padded plane.
    pub fn crop_back<T: Copy>(&self, i: usize, plane: &[T]) -> Vec<T> {
        assert_eq!(plane.len(), self.plane(), "padded plane size");
        let (h, w) = self.dims[i];
        plane
            .chunks_exact(self.width)
            .take(h)
            .flat_map(|row| row[..w].iter().copied())
            .collect()
    }

    /// Slice `i`'s padded image plane.
    pub fn padded_image(&self, i: usize) -> &[f32] {
        &self.images[i * self.plane()..(i + 1) * self.plane()]
    }

    /// Slice `i`'s padded mask plane.
    pub fn padded_mask(&self, i: usize) -> &[u8] {
        &self.masks[i * self.plane()..(i + 1) * self.plane()]
    }

    /// The padded masks as a (B, 1, H, W) f32 tensor of 0.0/1.0, the target of a loss.
    pub fn mask_tensor(&self, device: &Device) -> candle_core::Result<Tensor> {
        mask_nchw(&self.masks, (self.len(), self.height, self.width), device)
    }

    /// The padded images and masks as (B, 1, H, W) f32 tensors (masks 0.0/1.0).
    pub fn to_tensors(&self, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
        to_nchw(
            &self.images,
            &self.masks,
            (self.len(), self.height, self.width),
            device,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(h: usize, w: usize) -> SliceSample {
        SliceSample::numbered(h, w)
    }

    #[test]
    fn whole_slice_batches_pad_to_a_multiple_and_crop_back() {
        let mut a = slice(10, 7);
        a.mask[5] = 1;
        let b = slice(5, 13);
        let batch = WholeSliceBatch::from_samples(vec![a.clone(), b.clone()], 4);
        assert_eq!((batch.height, batch.width), (12, 16));
        assert_eq!(batch.len(), 2);
        assert_eq!(batch.dims, vec![(10, 7), (5, 13)]);
        assert_eq!(batch.slice_ids, vec!["s10x7", "s5x13"]);
        for (i, s) in [&a, &b].into_iter().enumerate() {
            let plane = batch.padded_image(i);
            assert_eq!(batch.crop_back(i, plane), s.image);
            // Padding is zero: the sum of the padded plane equals the native sum.
            let sum: f32 = plane.iter().sum();
            assert_eq!(sum, s.image.iter().sum::<f32>());
        }
        assert_eq!(batch.masks[5], 1);
        assert_eq!(batch.crop_back(0, batch.padded_mask(0)), a.mask);
        assert_eq!(batch.masks.iter().map(|&m| m as usize).sum::<usize>(), 1);
        let (x, y) = batch.to_tensors(&Device::Cpu).unwrap();
        assert_eq!(x.dims(), &[2, 1, 12, 16]);
        assert_eq!(y.dims(), &[2, 1, 12, 16]);
        assert_eq!(padded_size(12, 13, 4), (12, 16));
        assert_eq!(padded_size(3, 3, 0), (3, 3));
        assert!(WholeSliceBatch::from_samples(Vec::new(), 4).is_empty());
    }
}
