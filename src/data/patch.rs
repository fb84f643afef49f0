//! Turns native-size slices into fixed-size training inputs: random (optionally
//! foreground-seeking, optionally flipped) patches, zero-padded when a slice is smaller than the
//! patch, batched as `(B, 1, P, P)` tensors; and the bottom/right zero padding that whole-slice
//! inference uses.

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::batcher::Batcher;
    use crate::error::{Error, Result};

    fn slice(h: usize, w: usize) -> SliceSample {
        SliceSample::numbered(h, w)
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

    /// Patch batches drawn from a stream of slices, one patch per slice (what the trainer does
    /// with [`Batcher`] and [`PatchBatch::from_samples`]).
    fn patch_batches<I: Iterator<Item = Result<SliceSample>>>(
        slices: I,
        sampler: PatchSampler,
        mut rng: SplitMix64,
        batch_size: usize,
        drop_last: bool,
    ) -> impl Iterator<Item = Result<PatchBatch>> {
        Batcher::new(slices)
            .batch_size(batch_size)
            .drop_last(drop_last)
            .map(move |b| b.map(|samples| PatchBatch::from_samples(&samples, &sampler, &mut rng)))
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
