//! One slice of any size through the network in bounded memory: overlapping tiles whose
//! stitched probabilities equal the whole-slice pass ([`crate::infer::predict`]) exactly.
//!
//! The whole-slice pass pads the slice with zeros to a multiple of 4 (`H'`x`W'`). Here that
//! padded plane is cut into cores of `core`x`core` pixels whose origins are multiples of 4; each
//! core runs through the network inside a window that adds `margin` pixels on every side where
//! the plane goes on (clipped to the plane, so windows start and end on multiples of 4 too), and
//! only the core of each output is kept.
//!
//! Why that is exact. Max-pooling stays aligned, because window origins are multiples of 4, and
//! every other layer computes each output pixel from a fixed neighbourhood with position-free
//! weights (batch-norm runs on its running statistics in evaluation mode). So a window differs
//! from the whole plane only near its cut edges, where a 3x3 convolution reads zero padding
//! instead of the neighbours and bilinear upsampling clamps. Counting, from a cut edge, the band
//! of pixels that can differ, in each level's own pixels: two convolutions at full resolution 2;
//! pooled, 1; two convolutions, 3; pooled, 2; two convolutions, 4; upsampled (`2b + 1`), 9; two
//! convolutions, 11; upsampled, 23; two convolutions, 25; the 1x1 head adds nothing. So outputs
//! 25 or more pixels from every cut edge are exact: [`RECEPTIVE_RADIUS`], rounded up to the
//! multiple of 4 that keeps windows aligned, is [`MARGIN`]. Edges of the padded plane are not cut
//! edges: the window sees there exactly what the whole pass sees. A unit test holds tiled and
//! whole passes bit-identical with small tiles, and shows a margin of 24 is not enough.

use crate::data::patch::padded_size;
use crate::error::{Error, Result};
use crate::infer::SIZE_MULTIPLE;
use crate::model::UNet;
use candle_core::{Device, ModuleT, Tensor};

/// How far, in full-resolution pixels, a cut edge can change the network's output.
pub const RECEPTIVE_RADIUS: usize = 25;

/// The margin around each core: [`RECEPTIVE_RADIUS`] rounded up to a multiple of 4.
pub const MARGIN: usize = RECEPTIVE_RADIUS.div_ceil(SIZE_MULTIPLE) * SIZE_MULTIPLE;

/// Peak bytes a forward pass holds per input pixel and per base channel, measured on the CPU:
/// ~1.2 KiB a pixel at width 4, ~18 KiB at width 64 (the notebook's).
pub const BYTES_PER_PIXEL_CHANNEL: u64 = 300;

/// The default memory budget of one window's forward pass: 1 GiB.
pub const DEFAULT_WINDOW_BYTES: u64 = 1 << 30;

/// How a slice is cut into tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiling {
    /// The largest side of a core, a multiple of 4 (cores are balanced below it, see
    /// [`windows`]).
    pub core: usize,
    /// Pixels of context around a core, a multiple of 4 and at least [`RECEPTIVE_RADIUS`] for
    /// the result to be exact.
    pub margin: usize,
}

impl Tiling {
    /// The tiling of a `height`x`width` slice for a U-Net of `base_channels` whose forward
    /// pass may take `window_bytes` (at [`BYTES_PER_PIXEL_CHANNEL`]): one window, the whole
    /// pass, when the padded slice fits; otherwise the largest square windows that fit, with
    /// cores of at least 4 pixels.
    pub fn within(
        window_bytes: u64,
        base_channels: usize,
        (height, width): (usize, usize),
    ) -> Self {
        let (padded_h, padded_w) = padded_size(height, width, SIZE_MULTIPLE);
        let per_pixel = BYTES_PER_PIXEL_CHANNEL * base_channels.max(1) as u64;
        let window_pixels = window_bytes / per_pixel;
        if (padded_h * padded_w) as u64 <= window_pixels {
            return Self {
                core: padded_h.max(padded_w),
                margin: MARGIN,
            };
        }
        let side = (window_pixels as f64).sqrt() as usize;
        let core = side.saturating_sub(2 * MARGIN) / SIZE_MULTIPLE * SIZE_MULTIPLE;
        Self {
            core: core.max(SIZE_MULTIPLE),
            margin: MARGIN,
        }
    }
}

/// One window: the rows and columns of the padded plane it covers, and the core inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    rows: (usize, usize),
    cols: (usize, usize),
    core_rows: (usize, usize),
    core_cols: (usize, usize),
}

/// The windows covering a padded `height`x`width` plane, row by row. Along each axis the plane
/// is cut into as few cores of at most `t.core` as it takes, of equal sides (rounded up to a
/// multiple of 4) rather than full cores and a sliver.
fn windows(height: usize, width: usize, t: Tiling) -> Vec<Window> {
    let spans = |n: usize| -> Vec<((usize, usize), (usize, usize))> {
        let max_core = t.core.max(SIZE_MULTIPLE);
        let count = n.div_ceil(max_core).max(1);
        let core = n.div_ceil(count).div_ceil(SIZE_MULTIPLE) * SIZE_MULTIPLE;
        (0..n)
            .step_by(core)
            .map(|start| {
                let end = (start + core).min(n);
                (
                    (start.saturating_sub(t.margin), (end + t.margin).min(n)),
                    (start, end),
                )
            })
            .collect()
    };
    let mut out = Vec::new();
    for (rows, core_rows) in spans(height) {
        for (cols, core_cols) in spans(width) {
            out.push(Window {
                rows,
                cols,
                core_rows,
                core_cols,
            });
        }
    }
    out
}

/// The probabilities of `model` on the `height`x`width` slice `image`, at native size, computed
/// tile by tile (one window at a time on `device`).
///
/// # Shapes
/// `image`: `height * width`, row-major → `height * width` probabilities.
pub fn probabilities(
    model: &UNet,
    device: &Device,
    image: &[f32],
    (height, width): (usize, usize),
    tiling: Tiling,
) -> Result<Vec<f32>> {
    if image.len() != height * width {
        return Err(Error::Usage(format!(
            "tiled inference: {} intensities for a {height}x{width} slice",
            image.len()
        )));
    }
    let (padded_h, padded_w) = padded_size(height, width, SIZE_MULTIPLE);
    let mut probs = vec![0f32; height * width];
    let mut input = Vec::new();
    for win in windows(padded_h, padded_w, tiling) {
        let (win_h, win_w) = (win.rows.1 - win.rows.0, win.cols.1 - win.cols.0);
        // The window of the zero-padded plane.
        input.clear();
        input.resize(win_h * win_w, 0.0);
        let native_cols = (win.cols.0.min(width), win.cols.1.min(width));
        for y in win.rows.0..win.rows.1.min(height) {
            let src = &image[y * width + native_cols.0..y * width + native_cols.1];
            let at = (y - win.rows.0) * win_w;
            input[at..at + src.len()].copy_from_slice(src);
        }
        let out = forward_window(model, device, &input, (win_h, win_w))
            .map_err(|e| Error::tensor("tiled inference", e))?;
        // Keep the core, cut back to the native size.
        for y in win.core_rows.0..win.core_rows.1.min(height) {
            let x_end = win.core_cols.1.min(width);
            if win.core_cols.0 >= x_end {
                continue;
            }
            let from = (y - win.rows.0) * win_w + (win.core_cols.0 - win.cols.0);
            probs[y * width + win.core_cols.0..y * width + x_end]
                .copy_from_slice(&out[from..from + (x_end - win.core_cols.0)]);
        }
    }
    Ok(probs)
}

/// Sigmoid of the network's logits on one window, as [`crate::infer::predict`] computes them.
fn forward_window(
    model: &UNet,
    device: &Device,
    input: &[f32],
    (h, w): (usize, usize),
) -> candle_core::Result<Vec<f32>> {
    let x = Tensor::from_slice(input, (1, 1, h, w), device)?; // (1, 1, h, w)
    let logits = model.forward_t(&x, false)?; // (1, 1, h, w)
    candle_nn::ops::sigmoid(&logits)?
        .flatten_all()?
        .to_vec1::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::SliceSample;
    use crate::model::UNetConfig;
    use candle_core::DType;
    use candle_nn::{VarBuilder, VarMap};

    /// A width-4 U-Net with random weights, and non-trivial batch-norm statistics.
    fn random_net() -> (VarMap, UNet) {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let net = UNet::new(&UNetConfig { base_channels: 4 }, vb).unwrap();
        for (name, var) in varmap.data().lock().unwrap().iter() {
            if name.ends_with("running_mean") {
                let n = var.dims()[0];
                var.set(
                    &Tensor::arange(0f32, n as f32, &Device::Cpu)
                        .unwrap()
                        .affine(0.01, -0.02)
                        .unwrap(),
                )
                .unwrap();
            }
        }
        (varmap, net)
    }

    fn image(h: usize, w: usize) -> Vec<f32> {
        let mut rng = crate::rng::SplitMix64::new(3);
        (0..h * w)
            .map(|_| (rng.next_u64() % 1000) as f32 / 1000.0)
            .collect()
    }

    fn whole(net: &UNet, img: &[f32], h: usize, w: usize) -> Vec<f32> {
        let sample = SliceSample {
            slice_id: "s".into(),
            patient_id: "p".into(),
            height: h,
            width: w,
            image: img.to_vec(),
            mask: vec![0; h * w],
        };
        crate::infer::predict(net, &Device::Cpu, vec![sample])
            .unwrap()
            .slice(0)
            .probs
    }

    #[test]
    fn tiles_stitch_to_exactly_the_whole_slice_result() {
        let (_vm, net) = random_net();
        let (h, w) = (75, 101); // odd: padded to 76x104, cut into 8x8 cores (10x13 windows)
        let img = image(h, w);
        let want = whole(&net, &img, h, w);
        for core in [8, 12, 40] {
            let t = Tiling {
                core,
                margin: MARGIN,
            };
            let got = probabilities(&net, &Device::Cpu, &img, (h, w), t).unwrap();
            assert!(got == want, "core {core}: tiled and whole passes differ");
        }
        // One window over everything is the whole pass itself.
        let one = Tiling {
            core: 128,
            margin: MARGIN,
        };
        assert!(probabilities(&net, &Device::Cpu, &img, (h, w), one).unwrap() == want);
        // A margin below the receptive radius is not enough: some core pixels change.
        let short = Tiling {
            core: 8,
            margin: 24,
        };
        let got = probabilities(&net, &Device::Cpu, &img, (h, w), short).unwrap();
        assert!(got != want, "a 24-pixel margin should not be exact");
    }

    #[test]
    fn windows_cover_the_plane_once_on_multiples_of_4() {
        let t = Tiling {
            core: 12,
            margin: 8,
        };
        let ws = windows(40, 28, t);
        let mut hits = vec![0; 40 * 28];
        for w in &ws {
            for v in [w.rows.0, w.rows.1, w.cols.0, w.cols.1] {
                assert_eq!(v % 4, 0, "{w:?}");
            }
            assert!(w.rows.0 + t.margin >= w.core_rows.0 || w.rows.0 == 0);
            for y in w.core_rows.0..w.core_rows.1 {
                for x in w.core_cols.0..w.core_cols.1 {
                    hits[y * 28 + x] += 1;
                }
            }
        }
        assert!(hits.iter().all(|&h| h == 1));
        // 40 rows in cores of at most 12 take four: ceil(40 / 4) = 10, rounded up to 12.
        let rows: Vec<(usize, usize)> = ws.iter().map(|w| w.core_rows).collect();
        assert!(rows.contains(&(36, 40)));
        let cols: Vec<usize> = windows(
            4,
            200,
            Tiling {
                core: 96,
                margin: 8,
            },
        )
        .iter()
        .map(|w| w.core_cols.1 - w.core_cols.0)
        .collect();
        assert_eq!(
            cols,
            [68, 68, 64],
            "200 in three balanced cores, not 96 + 96 + 8"
        );
        // The whole pass when the slice fits; square windows within the budget otherwise.
        let budget = 1 << 30;
        assert_eq!(Tiling::within(budget, 64, (75, 101)).core, 104);
        let t = Tiling::within(budget, 64, (2048, 2048));
        let window = (t.core + 2 * t.margin) as u64;
        assert!(window * window * 64 * BYTES_PER_PIXEL_CHANNEL <= budget);
        assert_eq!((t.core % 4, t.margin), (0, 28));
        assert!(Tiling::within(budget, 4, (4096, 4096)).core > t.core);
        assert_eq!(Tiling::within(1, 64, (4096, 4096)).core, 4);
    }
}
