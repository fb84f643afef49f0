//! 2×2 max-pooling with stride 2 (PyTorch's `MaxPool2d(2)`, floor mode), forward and adjoint,
//! because candle's `max_pool2d` backward scales every gradient by the fraction of maxima in its
//! window (a unique maximum gets a quarter of its gradient; PyTorch gives it all).
//!
//! Like PyTorch, the gradient of a window goes to its first maximum in row-major order, and a
//! NaN counts as the maximum.

use rayon::prelude::*;

/// `(B·C planes of H × W)` in, `(H/2 × W/2)` out (rounded down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolShape {
    /// `B·C`.
    pub planes: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
}

impl PoolShape {
    /// Output height.
    pub fn h_out(&self) -> usize {
        self.h / 2
    }

    /// Output width.
    pub fn w_out(&self) -> usize {
        self.w / 2
    }
}

/// Index (0..4, row-major) and value of the maximum of one window.
#[inline(always)]
fn window_max(v: [f32; 4]) -> (usize, f32) {
    let mut best = (0, v[0]);
    for (i, &x) in v.iter().enumerate().skip(1) {
        if x > best.1 || x.is_nan() {
            best = (i, x);
        }
    }
    best
}

/// The window of output `(i, j)` in a plane of width `w`: its four input offsets.
#[inline(always)]
fn window(w: usize, i: usize, j: usize) -> [usize; 4] {
    let top = 2 * i * w + 2 * j;
    [top, top + 1, top + w, top + w + 1]
}

/// `y = maxpool2x2(x)`.
///
/// # Shapes
/// `x`: `planes × H × W` → `y`: `planes × H/2 × W/2`, every element written.
pub fn max_pool2x2_forward(shape: &PoolShape, x: &[f32], y: &mut [f32]) {
    let (h, w, ho, wo) = (shape.h, shape.w, shape.h_out(), shape.w_out());
    assert!(x.len() == shape.planes * h * w && y.len() == shape.planes * ho * wo);
    if ho * wo == 0 {
        return;
    }
    y.par_chunks_mut(ho * wo)
        .zip(x.par_chunks(h * w))
        .for_each(|(yp, xp)| {
            for i in 0..ho {
                for j in 0..wo {
                    yp[i * wo + j] = window_max(window(w, i, j).map(|o| xp[o])).1;
                }
            }
        });
}

/// `dx` of [`max_pool2x2_forward`] from `gy`: each window's gradient at its first maximum.
///
/// # Shapes
/// `x`, `dx`: `planes × H × W`; `gy`: `planes × H/2 × W/2`. Every element of `dx` is written.
pub fn max_pool2x2_backward(shape: &PoolShape, x: &[f32], gy: &[f32], dx: &mut [f32]) {
    route(shape, x, gy, dx, false)
}

/// [`max_pool2x2_backward`] added to `dx` (a gradient that already holds another consumer's
/// contribution, such as a skip connection's).
pub fn max_pool2x2_backward_add(shape: &PoolShape, x: &[f32], gy: &[f32], dx: &mut [f32]) {
    route(shape, x, gy, dx, true)
}

fn route(shape: &PoolShape, x: &[f32], gy: &[f32], dx: &mut [f32], add: bool) {
    let (h, w, ho, wo) = (shape.h, shape.w, shape.h_out(), shape.w_out());
    assert!(x.len() == shape.planes * h * w && dx.len() == x.len());
    assert_eq!(gy.len(), shape.planes * ho * wo);
    if h * w == 0 {
        return;
    }
    dx.par_chunks_mut(h * w)
        .zip(x.par_chunks(h * w))
        .enumerate()
        .for_each(|(p, (dp, xp))| {
            if !add {
                // Rows and columns past the last whole window (odd sizes) get no gradient.
                dp.fill(0.0);
            }
            for i in 0..ho {
                for j in 0..wo {
                    let at = window(w, i, j);
                    let (k, _) = window_max(at.map(|o| xp[o]));
                    dp[at[k]] += gy[(p * ho + i) * wo + j];
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_routes_the_whole_gradient_to_the_first_maximum() {
        // One 3x5 plane: two whole windows (the last row and column are dropped).
        let x = [
            1.0, 5.0, 2.0, 2.0, 9.0, //
            3.0, 4.0, 0.0, 1.0, 9.0, //
            7.0, 7.0, 7.0, 7.0, 7.0,
        ];
        let s = PoolShape {
            planes: 1,
            h: 3,
            w: 5,
        };
        let mut y = [f32::NAN; 2];
        max_pool2x2_forward(&s, &x, &mut y);
        assert_eq!(y, [5.0, 2.0]);
        let mut dx = [f32::NAN; 15];
        max_pool2x2_backward(&s, &x, &[10.0, 100.0], &mut dx);
        let mut want = [0.0; 15];
        want[1] = 10.0; // the 5
        want[2] = 100.0; // the first of the tied 2s
        assert_eq!(dx, want);
        let mut acc = [1.0; 15];
        max_pool2x2_backward_add(&s, &x, &[10.0, 100.0], &mut acc);
        assert_eq!(acc, want.map(|v| v + 1.0));
    }
}
