//! Turns native-size slices into fixed-size network inputs: random (optionally
//! foreground-seeking, optionally flipped) training patches, zero-padded when a slice is smaller
//! than the patch, and whole-slice validation batches padded to a common size and cropped back.

use crate::data::batcher::to_nchw;
use crate::data::SliceSample;
use crate::rng::SplitMix64;
use candle_core::{Device, Tensor};

/// Draws one `patch` x `patch` training crop from a slice.
///
/// A dimension smaller than the patch is zero-padded at the bottom/right (what the notebook's
/// `np.pad(((0, pad_h), (0, pad_w)))` meant to do; the notebook actually dropped such slices).
/// A larger dimension is cropped at a random offset; with probability `fg_crop` the window is
/// placed around a random foreground pixel, so it contains at least one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PatchSampler {
    /// Patch side in pixels.
    pub patch: usize,
    /// Probability that a crop is chosen to contain foreground (when the slice has any).
    pub fg_crop: f64,
    /// Random horizontal and vertical flips, each with probability 0.5.
    pub flips: bool,
}

impl Default for PatchSampler {
    fn default() -> Self {
        Self {
            patch: 128,
            fg_crop: 0.5,
            flips: true,
        }
    }
}

impl PatchSampler {
    /// Pixels in one patch.
    pub fn plane(&self) -> usize {
        self.patch * self.patch
    }

    /// Writes one crop of `s` into `img_out` and `mask_out` (each `patch * patch`, row-major).
    ///
    /// # Panics
    /// When an output buffer is not `patch * patch` long or the sample's planes are not
    /// `height * width` (the loader guarantees the latter).
    pub fn sample(
        &self,
        s: &SliceSample,
        rng: &mut SplitMix64,
        img_out: &mut [f32],
        mask_out: &mut [u8],
    ) {
        let p = self.patch;
        assert_eq!(img_out.len(), p * p, "image patch buffer");
        assert_eq!(mask_out.len(), p * p, "mask patch buffer");
        let seek = rng.chance(self.fg_crop);
        let target = if seek { foreground_pixel(s, rng) } else { None };
        let top = offset(s.height, p, target.map(|t| t.0), rng);
        let left = offset(s.width, p, target.map(|t| t.1), rng);
        copy_window(s, top, left, p, p, img_out, mask_out);
        if self.flips {
            if rng.chance(0.5) {
                flip_horizontal(img_out, p);
                flip_horizontal(mask_out, p);
            }
            if rng.chance(0.5) {
                flip_vertical(img_out, p);
                flip_vertical(mask_out, p);
            }
        }
    }
}

/// A random foreground pixel (row, column), uniform over foreground pixels.
fn foreground_pixel(s: &SliceSample, rng: &mut SplitMix64) -> Option<(usize, usize)> {
    let count = s.mask.iter().filter(|&&m| m != 0).count();
    if count == 0 {
        return None;
    }
    let k = rng.below(count);
    let i = s
        .mask
        .iter()
        .enumerate()
        .filter(|(_, &m)| m != 0)
        .nth(k)
        .map(|(i, _)| i)?;
    Some((i / s.width, i % s.width))
}

/// The window start along an axis of length `n`: 0 when the patch covers it, else uniform, or
/// uniform among the windows containing `at`.
fn offset(n: usize, p: usize, at: Option<usize>, rng: &mut SplitMix64) -> usize {
    if n <= p {
        return 0;
    }
    let last = n - p;
    let (lo, hi) = match at {
        Some(a) => ((a + 1).saturating_sub(p), a.min(last)),
        None => (0, last),
    };
    lo + rng.below(hi - lo + 1)
}

/// Copies the window at (`top`, `left`) of at most `out_h` x `out_w` pixels into zeroed outputs
/// of that size; what lies beyond the slice stays zero (bottom/right padding).
fn copy_window(
    s: &SliceSample,
    top: usize,
    left: usize,
    out_h: usize,
    out_w: usize,
    img_out: &mut [f32],
    mask_out: &mut [u8],
) {
    img_out.fill(0.0);
    mask_out.fill(0);
    let rows = s.height.saturating_sub(top).min(out_h);
    let cols = s.width.saturating_sub(left).min(out_w);
    for y in 0..rows {
        let src = (top + y) * s.width + left;
        let dst = y * out_w;
        img_out[dst..dst + cols].copy_from_slice(&s.image[src..src + cols]);
        mask_out[dst..dst + cols].copy_from_slice(&s.mask[src..src + cols]);
    }
}

fn flip_horizontal<T>(plane: &mut [T], width: usize) {
    for row in plane.chunks_exact_mut(width) {
        row.reverse();
    }
}

fn flip_vertical<T>(plane: &mut [T], width: usize) {
    let height = plane.len() / width;
    for y in 0..height / 2 {
        let (upper, lower) = plane.split_at_mut((height - 1 - y) * width);
        upper[y * width..(y + 1) * width].swap_with_slice(&mut lower[..width]);
    }
}

/// `(height, width)` each rounded up to a multiple of `multiple` (at least 1).
pub fn padded_size(height: usize, width: usize, multiple: usize) -> (usize, usize) {
    let m = multiple.max(1);
    (height.div_ceil(m) * m, width.div_ceil(m) * m)
}

/// Writes `s` at native size into the top-left of `height` x `width` outputs, zero elsewhere.
///
/// # Panics
/// When the outputs are not `height * width` long or the slice does not fit.
pub fn pad_into(
    s: &SliceSample,
    height: usize,
    width: usize,
    img_out: &mut [f32],
    mask_out: &mut [u8],
) {
    assert!(
        s.height <= height && s.width <= width,
        "slice larger than pad size"
    );
    assert_eq!(img_out.len(), height * width, "image buffer");
    assert_eq!(mask_out.len(), height * width, "mask buffer");
    copy_window(s, 0, 0, height, width, img_out, mask_out);
}

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

    /// Cuts `probs`, one padded `height * width` prediction plane for slice `i`, back to that
    /// slice's native size.
    ///
    /// # Panics
    /// When `i` is out of range or `probs` is not one padded plane.
    pub fn crop_back(&self, i: usize, probs: &[f32]) -> Vec<f32> {
        assert_eq!(probs.len(), self.plane(), "prediction plane size");
        let (h, w) = self.dims[i];
        probs
            .chunks_exact(self.width)
            .take(h)
            .flat_map(|row| row[..w].iter().copied())
            .collect()
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
        SliceSample {
            slice_id: format!("s{h}x{w}"),
            patient_id: "P".into(),
            height: h,
            width: w,
            image: (0..h * w).map(|i| i as f32 + 1.0).collect(),
            mask: vec![0; h * w],
        }
    }

    fn no_aug(patch: usize) -> PatchSampler {
        PatchSampler {
            patch,
            fg_crop: 0.0,
            flips: false,
        }
    }

    #[test]
    fn small_slices_are_padded_bottom_right() {
        let s = slice(100, 90);
        let p = 128;
        let (mut img, mut mask) = (vec![-1.0; p * p], vec![7; p * p]);
        no_aug(p).sample(&s, &mut SplitMix64::new(1), &mut img, &mut mask);
        for y in 0..p {
            for x in 0..p {
                let v = img[y * p + x];
                if y < 100 && x < 90 {
                    assert_eq!(v, s.image[y * 90 + x]);
                } else {
                    assert_eq!(v, 0.0, "({y},{x})");
                }
                assert_eq!(mask[y * p + x], 0);
            }
        }
        // Mixed: taller than the patch but narrower.
        let s = slice(200, 50);
        no_aug(p).sample(&s, &mut SplitMix64::new(2), &mut img, &mut mask);
        let top = (s.image.iter().position(|&v| v == img[0]).unwrap()) / 50;
        for y in 0..p {
            assert_eq!(
                &img[y * p..y * p + 50],
                &s.image[(top + y) * 50..(top + y + 1) * 50]
            );
            assert!(img[y * p + 50..(y + 1) * p].iter().all(|&v| v == 0.0));
        }
    }

    #[test]
    fn large_slices_are_cropped_to_a_real_subwindow() {
        let s = slice(200, 160);
        let p = 128;
        let (mut img, mut mask) = (vec![0.0; p * p], vec![0; p * p]);
        let mut rng = SplitMix64::new(5);
        let mut corners = std::collections::HashSet::new();
        for _ in 0..50 {
            no_aug(p).sample(&s, &mut rng, &mut img, &mut mask);
            // image value = index + 1, so the corner locates the window.
            let first = img[0] as usize - 1;
            let (top, left) = (first / 160, first % 160);
            assert!(top + p <= 200 && left + p <= 160);
            for y in 0..p {
                let src = (top + y) * 160 + left;
                assert_eq!(&img[y * p..(y + 1) * p], &s.image[src..src + p]);
            }
            corners.insert((top, left));
        }
        assert!(corners.len() > 10, "offsets vary: {}", corners.len());
    }

    #[test]
    fn foreground_crops_always_contain_the_single_foreground_pixel() {
        let mut s = slice(300, 250);
        let (fy, fx) = (271, 7);
        s.mask[fy * 250 + fx] = 1;
        let p = 64;
        let sampler = PatchSampler {
            patch: p,
            fg_crop: 1.0,
            flips: true,
        };
        let (mut img, mut mask) = (vec![0.0; p * p], vec![0; p * p]);
        let mut rng = SplitMix64::new(9);
        for _ in 0..200 {
            sampler.sample(&s, &mut rng, &mut img, &mut mask);
            assert_eq!(mask.iter().filter(|&&m| m == 1).count(), 1);
            let at = mask.iter().position(|&m| m == 1).unwrap();
            assert_eq!(
                img[at],
                s.image[fy * 250 + fx],
                "image and mask move together"
            );
        }
        // A slice without foreground falls back to a uniform crop.
        let empty = slice(300, 250);
        sampler.sample(&empty, &mut rng, &mut img, &mut mask);
        assert!(mask.iter().all(|&m| m == 0));
    }

    #[test]
    fn flips_off_is_a_pure_function_of_the_rng() {
        let mut s = slice(150, 140);
        s.mask[3000] = 1;
        let sampler = PatchSampler {
            patch: 64,
            fg_crop: 0.5,
            flips: false,
        };
        let draw = |seed| {
            let (mut img, mut mask) = (vec![0.0; 64 * 64], vec![0; 64 * 64]);
            let mut rng = SplitMix64::new(seed);
            let mut out = Vec::new();
            for _ in 0..10 {
                sampler.sample(&s, &mut rng, &mut img, &mut mask);
                out.push((img.clone(), mask.clone()));
            }
            out
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn flips_mirror_rows_and_columns() {
        let mut plane: Vec<u8> = (0..12).collect();
        flip_horizontal(&mut plane, 4);
        assert_eq!(plane, vec![3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8]);
        let mut plane: Vec<u8> = (0..12).collect();
        flip_vertical(&mut plane, 4);
        assert_eq!(plane, vec![8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3]);
        let mut plane: Vec<u8> = (0..16).collect();
        flip_vertical(&mut plane, 4);
        assert_eq!(&plane[..4], &[12, 13, 14, 15]);
        assert_eq!(&plane[4..8], &[8, 9, 10, 11]);
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
            let plane = &batch.images[i * batch.plane()..(i + 1) * batch.plane()];
            assert_eq!(batch.crop_back(i, plane), s.image);
            // Padding is zero: the sum of the padded plane equals the native sum.
            let sum: f32 = plane.iter().sum();
            assert_eq!(sum, s.image.iter().sum::<f32>());
        }
        assert_eq!(batch.masks[5], 1);
        assert_eq!(batch.masks.iter().map(|&m| m as usize).sum::<usize>(), 1);
        let (x, y) = batch.to_tensors(&Device::Cpu).unwrap();
        assert_eq!(x.dims(), &[2, 1, 12, 16]);
        assert_eq!(y.dims(), &[2, 1, 12, 16]);
        assert_eq!(padded_size(12, 13, 4), (12, 16));
        assert_eq!(padded_size(3, 3, 0), (3, 3));
        assert!(WholeSliceBatch::from_samples(Vec::new(), 4).is_empty());
    }
}
