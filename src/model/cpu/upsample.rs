//! Bilinear ×2 upsampling (PyTorch `align_corners=False`) fused with the decoder's channel
//! concatenation, forward and adjoint: one sweep writes `cat([up(low), skip], 1)`, where
//! candle's composition (`model::bilinear`) takes about 14 whole-tensor ops and `Tensor::cat`
//! another copy.
//!
//! Along each axis output `2k` is `0.75·x[k] + 0.25·x[max(k-1, 0)]` and output `2k+1` is
//! `0.75·x[k] + 0.25·x[min(k+1, n-1)]` (see `model::bilinear`); the adjoint scatters each
//! output's gradient back with the same two weights.

use super::scratch::Scratch;
use rayon::prelude::*;

/// `low`: `(B, C_low, h, w)`, `skip`: `(B, C_skip, 2h, 2w)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpCatShape {
    /// Images.
    pub batch: usize,
    /// Channels of the upsampled input.
    pub c_low: usize,
    /// Channels of the skip connection.
    pub c_skip: usize,
    /// Height of `low`.
    pub h: usize,
    /// Width of `low`.
    pub w: usize,
}

impl UpCatShape {
    fn out_plane(&self) -> usize {
        4 * self.h * self.w
    }

    /// Elements of the output `(B, C_low + C_skip, 2h, 2w)`.
    pub fn out_len(&self) -> usize {
        self.batch * (self.c_low + self.c_skip) * self.out_plane()
    }
}

/// The two source indices and weights of output `o` along an axis of `n` inputs.
#[inline(always)]
fn taps(o: usize, n: usize) -> (usize, usize) {
    let k = o / 2;
    let other = if o.is_multiple_of(2) {
        k.saturating_sub(1)
    } else {
        (k + 1).min(n - 1)
    };
    (k, other)
}

/// Upsamples one `h × w` plane into `out` (`2h × 2w`); `tmp` holds `h × 2w`.
fn upsample_plane(src: &[f32], h: usize, w: usize, tmp: &mut [f32], out: &mut [f32]) {
    for (r, row) in tmp.chunks_exact_mut(2 * w).enumerate() {
        let s = &src[r * w..][..w];
        for (o, v) in row.iter_mut().enumerate() {
            let (k, other) = taps(o, w);
            *v = 0.75 * s[k] + 0.25 * s[other];
        }
    }
    for (o, row) in out.chunks_exact_mut(2 * w).enumerate() {
        let (k, other) = taps(o, h);
        let (a, b) = (&tmp[k * 2 * w..][..2 * w], &tmp[other * 2 * w..][..2 * w]);
        for ((v, &a), &b) in row.iter_mut().zip(a).zip(b) {
            *v = 0.75 * a + 0.25 * b;
        }
    }
}

/// The adjoint of [`upsample_plane`]: `g` (`2h × 2w`) into `dx` (`h × w`); `tmp` holds
/// `h × 2w`.
fn upsample_plane_adjoint(g: &[f32], h: usize, w: usize, tmp: &mut [f32], dx: &mut [f32]) {
    tmp.fill(0.0);
    for (o, row) in g.chunks_exact(2 * w).enumerate() {
        let (k, other) = taps(o, h);
        for (v, &gv) in tmp[k * 2 * w..][..2 * w].iter_mut().zip(row) {
            *v += 0.75 * gv;
        }
        for (v, &gv) in tmp[other * 2 * w..][..2 * w].iter_mut().zip(row) {
            *v += 0.25 * gv;
        }
    }
    dx.fill(0.0);
    for (d, t) in dx.chunks_exact_mut(w).zip(tmp.chunks_exact(2 * w)) {
        for (o, &gv) in t.iter().enumerate() {
            let (k, other) = taps(o, w);
            d[k] += 0.75 * gv;
            d[other] += 0.25 * gv;
        }
    }
}

/// `out = cat([upsample_bilinear2x(low), skip], 1)`.
///
/// # Shapes
/// `low`: `(B, C_low, h, w)`, `skip`: `(B, C_skip, 2h, 2w)` → `out`:
/// `(B, C_low + C_skip, 2h, 2w)`, every element written.
pub fn upsample_cat_forward(shape: &UpCatShape, low: &[f32], skip: &[f32], out: &mut [f32]) {
    let s = *shape;
    let (plane, c_all) = (s.out_plane(), s.c_low + s.c_skip);
    assert_eq!(low.len(), s.batch * s.c_low * s.h * s.w);
    assert_eq!(skip.len(), s.batch * s.c_skip * plane);
    assert_eq!(out.len(), s.out_len());
    if plane == 0 {
        return;
    }
    out.par_chunks_mut(plane).enumerate().for_each(|(p, dst)| {
        let (b, c) = (p / c_all, p % c_all);
        if c < s.c_low {
            let src = &low[(b * s.c_low + c) * s.h * s.w..][..s.h * s.w];
            let mut tmp = Scratch::take(2 * s.h * s.w);
            upsample_plane(src, s.h, s.w, &mut tmp, dst);
        } else {
            dst.copy_from_slice(&skip[(b * s.c_skip + c - s.c_low) * plane..][..plane]);
        }
    });
}

/// `d_low` of [`upsample_cat_forward`] from `g = ∂L/∂out` (the skip's gradient is the other
/// channels of `g` as they are).
///
/// # Shapes
/// `g`: `(B, C_low + C_skip, 2h, 2w)` → `d_low`: `(B, C_low, h, w)`, every element written.
pub fn upsample_cat_backward_low(shape: &UpCatShape, g: &[f32], d_low: &mut [f32]) {
    let s = *shape;
    let (plane, c_all) = (s.out_plane(), s.c_low + s.c_skip);
    assert_eq!(g.len(), s.out_len());
    assert_eq!(d_low.len(), s.batch * s.c_low * s.h * s.w);
    if plane == 0 {
        return;
    }
    d_low
        .par_chunks_mut(s.h * s.w)
        .enumerate()
        .for_each(|(p, dst)| {
            let (b, c) = (p / s.c_low, p % s.c_low);
            let src = &g[(b * c_all + c) * plane..][..plane];
            let mut tmp = Scratch::take(2 * s.h * s.w);
            upsample_plane_adjoint(src, s.h, s.w, &mut tmp, dst);
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 1-D interpolation matrix (2n × n) of PyTorch's formula.
    fn matrix(n: usize) -> Vec<Vec<f64>> {
        let mut m = vec![vec![0.0; n]; 2 * n];
        for (o, row) in m.iter_mut().enumerate() {
            let src = ((o as f64 + 0.5) / 2.0 - 0.5).max(0.0);
            let i0 = src.floor() as usize;
            let i1 = (i0 + 1).min(n - 1);
            let l1 = src - i0 as f64;
            row[i0] += 1.0 - l1;
            row[i1] += l1;
        }
        m
    }

    #[test]
    fn upsample_cat_and_adjoint_match_the_interpolation_matrix() {
        for (h, w) in [(3, 4), (1, 1), (2, 5), (5, 1)] {
            let s = UpCatShape {
                batch: 2,
                c_low: 2,
                c_skip: 1,
                h,
                w,
            };
            let low: Vec<f32> = (0..s.batch * s.c_low * h * w)
                .map(|i| ((i * 7) % 11) as f32 - 3.5)
                .collect();
            let skip: Vec<f32> = (0..s.batch * s.c_skip * 4 * h * w)
                .map(|i| i as f32)
                .collect();
            let mut out = vec![f32::NAN; s.out_len()];
            upsample_cat_forward(&s, &low, &skip, &mut out);
            let g: Vec<f32> = (0..s.out_len())
                .map(|i| ((i * 5) % 13) as f32 - 6.0)
                .collect();
            let mut d_low = vec![f32::NAN; low.len()];
            upsample_cat_backward_low(&s, &g, &mut d_low);
            let (mh, mw) = (matrix(h), matrix(w));
            for b in 0..2 {
                for c in 0..3 {
                    let plane = &out[(b * 3 + c) * 4 * h * w..][..4 * h * w];
                    if c == 2 {
                        assert_eq!(plane, &skip[b * 4 * h * w..][..4 * h * w]);
                        continue;
                    }
                    let x = &low[(b * 2 + c) * h * w..][..h * w];
                    let gp = &g[(b * 3 + c) * 4 * h * w..][..4 * h * w];
                    for o in 0..2 * h {
                        for p in 0..2 * w {
                            let mut want = 0.0;
                            for i in 0..h {
                                for j in 0..w {
                                    want += mh[o][i] * mw[p][j] * f64::from(x[i * w + j]);
                                }
                            }
                            let got = f64::from(plane[o * 2 * w + p]);
                            assert!((got - want).abs() < 1e-5, "{h}x{w} out {o},{p}");
                        }
                    }
                    for i in 0..h {
                        for j in 0..w {
                            let mut want = 0.0;
                            for o in 0..2 * h {
                                for p in 0..2 * w {
                                    want += mh[o][i] * mw[p][j] * f64::from(gp[o * 2 * w + p]);
                                }
                            }
                            let got = f64::from(d_low[(b * 2 + c) * h * w + i * w + j]);
                            assert!((got - want).abs() < 1e-4, "{h}x{w} grad {i},{j}");
                        }
                    }
                }
            }
        }
    }
}
