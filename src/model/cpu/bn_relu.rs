//! Training-mode BatchNorm followed by ReLU, forward and backward, each in two sweeps over the
//! activations, in parallel over channels; candle-nn's composition makes about 20 whole-tensor
//! passes forward and 70 backward. (The eval-mode BatchNorm and ReLU fold into the preceding
//! convolution's epilogue, see [`super::conv::Epilogue`].)
//!
//! Forward: one sweep gathers each channel's sums of `x - K` and `(x - K)²` around the
//! channel's first value `K` (shifted sums keep the variance accurate when the mean is large
//! compared to the spread), one writes `z = max(0, x·s + t)`. Backward: one sweep gathers
//! `Σ dy` and `Σ dy·(x - mean)`, one writes `dx = A·dy + B·x + C`, where the ReLU mask
//! `dy = gz·[x·s + t > 0]` is recomputed from `x` instead of read from `z` (PyTorch's
//! `result > 0` condition, one stream less).

use super::par::SharedOut;
use super::simd::{self, Isa, Kernel, Simd};
use rayon::prelude::*;

/// `(B, C, H·W)`: the layout of an NCHW activation seen per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BnShape {
    /// Images.
    pub batch: usize,
    /// Channels.
    pub channels: usize,
    /// `H·W`.
    pub plane: usize,
}

impl BnShape {
    fn len(&self) -> usize {
        self.batch * self.channels * self.plane
    }

    /// Values per channel.
    fn count(&self) -> usize {
        self.batch * self.plane
    }

    /// The planes of channel `c`, one per image.
    fn planes(&self, c: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.batch).map(move |b| (b * self.channels + c) * self.plane)
    }
}

/// Per-channel batch statistics of a training forward.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchStats {
    /// Mean.
    pub mean: Vec<f32>,
    /// Biased variance (what the normalisation divides by).
    pub var: Vec<f32>,
    /// `1 / sqrt(var + eps)`.
    pub inv_std: Vec<f32>,
}

/// `z = relu((x - mean) / sqrt(var + eps) · gamma + beta)` with the batch's own statistics.
///
/// # Shapes
/// `x`, `z`: `(B, C, H, W)`; `gamma`, `beta`: `(C)`. Every element of `z` is written.
pub fn bn_relu_train_forward(
    isa: Isa,
    shape: &BnShape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    z: &mut [f32],
) -> BatchStats {
    assert!(
        x.len() == shape.len() && z.len() == shape.len(),
        "bn-relu: lengths"
    );
    assert!(gamma.len() == shape.channels && beta.len() == shape.channels);
    let n = shape.count() as f64;
    let out = SharedOut::new(z);
    let per_channel: Vec<(f32, f32, f32)> = (0..shape.channels)
        .into_par_iter()
        .map(|c| {
            let (s1, s2, k) = simd::run_on(isa, ShiftedSums { shape, x, c });
            let m = s1 / n;
            let var = (s2 / n - m * m).max(0.0);
            let mean = k + m;
            let inv_std = 1.0 / (var + eps).sqrt();
            let scale = f64::from(gamma[c]) * inv_std;
            let shift = f64::from(beta[c]) - mean * scale;
            simd::run_on(
                isa,
                Affine {
                    shape,
                    c,
                    src: x,
                    scale: scale as f32,
                    shift: shift as f32,
                    relu: true,
                    out,
                },
            );
            (mean as f32, var as f32, inv_std as f32)
        })
        .collect();
    BatchStats {
        mean: per_channel.iter().map(|p| p.0).collect(),
        var: per_channel.iter().map(|p| p.1).collect(),
        inv_std: per_channel.iter().map(|p| p.2).collect(),
    }
}

/// Gradients of [`bn_relu_train_forward`] from `gz = ∂L/∂z`: `(dx, dgamma, dbeta)`.
///
/// # Shapes
/// `x`, `gz`, `dx`: `(B, C, H, W)`; `gamma`, `beta`, `dgamma`, `dbeta`: `(C)`; all written.
#[allow(clippy::too_many_arguments)]
pub fn bn_relu_backward(
    isa: Isa,
    shape: &BnShape,
    x: &[f32],
    gz: &[f32],
    gamma: &[f32],
    beta: &[f32],
    stats: &BatchStats,
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    assert!(x.len() == shape.len() && gz.len() == shape.len() && dx.len() == shape.len());
    assert!(dgamma.len() == shape.channels && dbeta.len() == shape.channels);
    let n = shape.count() as f64;
    let out = SharedOut::new(dx);
    let sums: Vec<(f64, f64)> = (0..shape.channels)
        .into_par_iter()
        .map(|c| {
            let inv_std = f64::from(stats.inv_std[c]);
            let mean = stats.mean[c];
            let scale = f64::from(gamma[c]) * inv_std;
            let shift = (f64::from(beta[c]) - f64::from(mean) * scale) as f32;
            let (s1, s2) = simd::run_on(
                isa,
                GradSums {
                    shape,
                    c,
                    x,
                    gz,
                    mean,
                    scale: scale as f32,
                    shift,
                },
            );
            // dx = γ·σ⁻¹·(dy - S1/n - x̂·σ⁻¹·S2/n) with x̂ = (x - mean)·σ⁻¹.
            let a = scale;
            let b = -scale * inv_std * inv_std * s2 / n;
            let c0 = -a * s1 / n - b * f64::from(mean);
            simd::run_on(
                isa,
                GradApply {
                    shape,
                    c,
                    x,
                    gz,
                    mask: (scale as f32, shift),
                    coef: (a as f32, b as f32, c0 as f32),
                    out,
                },
            );
            (s1, s2 * inv_std)
        })
        .collect();
    for (c, (s1, s2)) in sums.into_iter().enumerate() {
        dbeta[c] = s1 as f32;
        dgamma[c] = s2 as f32;
    }
}

/// The vectors of one channel's planes: `(offset, lanes)`, with `lanes` below `width` only for
/// a plane's last one. (An iterator, not a callback: a closure's body is compiled outside the
/// kernels' feature-enabled functions unless the inliner happens to pull it in.)
#[inline(always)]
fn vectors(shape: &BnShape, c: usize, width: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
    shape.planes(c).flat_map(move |start| {
        (0..shape.plane)
            .step_by(width)
            .map(move |i| (start + i, width.min(shape.plane - i)))
    })
}

/// Loads `lanes` floats (the rest zero).
///
/// # Safety
/// `p` must start `lanes` readable floats.
#[inline(always)]
unsafe fn load<S: Simd>(p: *const f32, lanes: usize) -> S::V {
    if lanes == S::LANES {
        S::load(p)
    } else {
        S::load_first(p, lanes)
    }
}

/// Stores `lanes` floats.
///
/// # Safety
/// `p` must start `lanes` writable floats.
#[inline(always)]
unsafe fn store<S: Simd>(p: *mut f32, v: S::V, lanes: usize) {
    if lanes == S::LANES {
        S::store(p, v)
    } else {
        S::store_first(p, v, lanes)
    }
}

/// Two sums in vector lanes, `Σ a` and `Σ b·c`, flushed into f64 every 64 vectors so that no
/// f32 lane adds up more than 64 terms.
struct TwoSums<S: Simd> {
    lanes: [S::V; 2],
    count: usize,
    total: (f64, f64),
}

impl<S: Simd> TwoSums<S> {
    /// # Safety
    /// As every [`Simd`] method: the CPU must have `S`'s instruction set.
    #[inline(always)]
    unsafe fn new() -> Self {
        Self {
            lanes: [S::zero(); 2],
            count: 0,
            total: (0.0, 0.0),
        }
    }

    /// Adds `a` to the first sum and `b·c` to the second.
    ///
    /// # Safety
    /// As [`TwoSums::new`].
    #[inline(always)]
    unsafe fn add(&mut self, a: S::V, b: S::V, c: S::V) {
        self.lanes = [S::add(self.lanes[0], a), S::mul_add(b, c, self.lanes[1])];
        self.count += 1;
        if self.count == 64 {
            self.flush();
        }
    }

    #[inline(always)]
    unsafe fn flush(&mut self) {
        self.total.0 += f64::from(S::sum(self.lanes[0]));
        self.total.1 += f64::from(S::sum(self.lanes[1]));
        self.lanes = [S::zero(); 2];
        self.count = 0;
    }

    /// # Safety
    /// As [`TwoSums::new`].
    #[inline(always)]
    unsafe fn finish(mut self) -> (f64, f64) {
        self.flush();
        self.total
    }
}

/// `(Σ (x - K), Σ (x - K)², K)` over channel `c`, with `K` its first value.
struct ShiftedSums<'a> {
    shape: &'a BnShape,
    x: &'a [f32],
    c: usize,
}

impl Kernel for ShiftedSums<'_> {
    type Output = (f64, f64, f64);

    #[inline(always)]
    fn run<S: Simd>(self) -> (f64, f64, f64) {
        let Some(first) = self.shape.planes(self.c).next() else {
            return (0.0, 0.0, 0.0);
        };
        let k = self.x.get(first).copied().unwrap_or(0.0);
        // SAFETY: every vector lies inside a plane of `x` (`vectors`' contract).
        let (s1, s2) = unsafe {
            let kv = S::splat(k);
            let mut sums = TwoSums::<S>::new();
            for (at, lanes) in vectors(self.shape, self.c, S::LANES) {
                // Zeroed lanes of a partial vector would add (0 - K): mask them via `load`.
                let v = load::<S>(self.x.as_ptr().add(at), lanes);
                let d = if lanes == S::LANES {
                    S::sub(v, kv)
                } else {
                    S::sub(v, load::<S>([k; 16].as_ptr(), lanes))
                };
                sums.add(d, d, d);
            }
            sums.finish()
        };
        (s1, s2, f64::from(k))
    }
}

/// `out = src·scale + shift` over channel `c`, clamped at zero with `relu`; writes only that
/// channel's planes.
struct Affine<'a> {
    shape: &'a BnShape,
    c: usize,
    src: &'a [f32],
    scale: f32,
    shift: f32,
    relu: bool,
    out: SharedOut,
}

impl Kernel for Affine<'_> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd>(self) {
        // SAFETY: each vector lies in a plane of channel `c`, inside `src` and `out` (same
        // length); no other task writes channel `c`.
        unsafe {
            let (scale, shift) = (S::splat(self.scale), S::splat(self.shift));
            for (at, lanes) in vectors(self.shape, self.c, S::LANES) {
                let v = S::mul_add(load::<S>(self.src.as_ptr().add(at), lanes), scale, shift);
                let v = if self.relu { S::max(v, S::zero()) } else { v };
                store::<S>(self.out.at(at), v, lanes);
            }
        }
    }
}

/// `(Σ dy, Σ dy·(x - mean))` over channel `c`, `dy = gz·[x·scale + shift > 0]`.
struct GradSums<'a> {
    shape: &'a BnShape,
    c: usize,
    x: &'a [f32],
    gz: &'a [f32],
    mean: f32,
    scale: f32,
    shift: f32,
}

impl Kernel for GradSums<'_> {
    type Output = (f64, f64);

    #[inline(always)]
    fn run<S: Simd>(self) -> (f64, f64) {
        // SAFETY: each vector lies in a plane of channel `c`, inside `x` and `gz`.
        unsafe {
            let (scale, shift, mean) = (
                S::splat(self.scale),
                S::splat(self.shift),
                S::splat(self.mean),
            );
            let mut sums = TwoSums::<S>::new();
            for (at, lanes) in vectors(self.shape, self.c, S::LANES) {
                let x = load::<S>(self.x.as_ptr().add(at), lanes);
                let g = load::<S>(self.gz.as_ptr().add(at), lanes);
                // Zeroed lanes have g = 0, so they add nothing.
                let dy = S::where_positive(S::mul_add(x, scale, shift), g);
                sums.add(dy, dy, S::sub(x, mean));
            }
            sums.finish()
        }
    }
}

/// `out = a·dy + b·x + c0` over channel `c`, `dy = gz·[x·mask.0 + mask.1 > 0]`.
struct GradApply<'a> {
    shape: &'a BnShape,
    c: usize,
    x: &'a [f32],
    gz: &'a [f32],
    mask: (f32, f32),
    coef: (f32, f32, f32),
    out: SharedOut,
}

impl Kernel for GradApply<'_> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd>(self) {
        // SAFETY: as in `Affine`: channel `c`'s planes, written by this task only.
        unsafe {
            let (ms, mt) = (S::splat(self.mask.0), S::splat(self.mask.1));
            let (a, b, c0) = (
                S::splat(self.coef.0),
                S::splat(self.coef.1),
                S::splat(self.coef.2),
            );
            for (at, lanes) in vectors(self.shape, self.c, S::LANES) {
                let x = load::<S>(self.x.as_ptr().add(at), lanes);
                let g = load::<S>(self.gz.as_ptr().add(at), lanes);
                let dy = S::where_positive(S::mul_add(x, ms, mt), g);
                let v = S::mul_add(a, dy, S::mul_add(b, x, c0));
                store::<S>(self.out.at(at), v, lanes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64, offset: f32) -> Vec<f32> {
        let mut rng = crate::rng::SplitMix64::new(seed);
        (0..n).map(|_| rng.normal() as f32 * 2.0 + offset).collect()
    }

    /// f64 reference: forward, then the gradients of `Σ z·r`.
    #[allow(clippy::type_complexity)]
    fn reference(
        s: &BnShape,
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        gz: &[f32],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let n = s.count() as f64;
        let mut z = vec![0.0; s.len()];
        let mut dx = vec![0.0; s.len()];
        let (mut dg, mut db, mut var) = (vec![0.0; s.channels], vec![0.0; s.channels], vec![]);
        for c in 0..s.channels {
            let idx: Vec<usize> = s.planes(c).flat_map(|p| p..p + s.plane).collect();
            let mean = idx.iter().map(|&i| f64::from(x[i])).sum::<f64>() / n;
            let v = idx
                .iter()
                .map(|&i| (f64::from(x[i]) - mean).powi(2))
                .sum::<f64>()
                / n;
            var.push(v);
            let inv = 1.0 / (v + 1e-5).sqrt();
            let xh = |i: usize| (f64::from(x[i]) - mean) * inv;
            let pre = |i: usize| xh(i) * f64::from(gamma[c]) + f64::from(beta[c]);
            let dy = |i: usize| if pre(i) > 0.0 { f64::from(gz[i]) } else { 0.0 };
            let s1: f64 = idx.iter().map(|&i| dy(i)).sum();
            let s2: f64 = idx.iter().map(|&i| dy(i) * xh(i)).sum();
            db[c] = s1;
            dg[c] = s2;
            for &i in &idx {
                z[i] = pre(i).max(0.0);
                dx[i] = f64::from(gamma[c]) * inv * (dy(i) - s1 / n - xh(i) * s2 / n);
            }
        }
        (z, dx, dg, db, var)
    }

    fn assert_close(name: &str, got: &[f32], want: &[f64], tol: f64) {
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-12);
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let err = (f64::from(*g) - w).abs() / scale;
            assert!(err < tol, "{name}[{i}]: {g} vs {w} (rel {err:.2e})");
        }
    }

    #[test]
    fn bn_relu_matches_f64_reference() {
        for (batch, channels, plane, offset) in
            [(2, 3, 35, 0.0), (1, 5, 17, 30.0), (3, 2, 64, -4.0)]
        {
            let s = BnShape {
                batch,
                channels,
                plane,
            };
            let x = values(s.len(), 1, offset);
            let gz = values(s.len(), 2, 0.0);
            let gamma = values(channels, 3, 1.0);
            let beta = values(channels, 4, 0.0);
            let (z_ref, dx_ref, dg_ref, db_ref, var_ref) = reference(&s, &x, &gamma, &beta, &gz);
            for isa in Isa::available() {
                let name = format!("{isa:?} {s:?}");
                let mut z = vec![f32::NAN; s.len()];
                let stats = bn_relu_train_forward(isa, &s, &x, &gamma, &beta, 1e-5, &mut z);
                assert_close(&format!("{name} z"), &z, &z_ref, 1e-5);
                assert_close(&format!("{name} var"), &stats.var, &var_ref, 1e-5);
                let mut dx = vec![f32::NAN; s.len()];
                let (mut dg, mut db) = (vec![f32::NAN; channels], vec![f32::NAN; channels]);
                bn_relu_backward(
                    isa, &s, &x, &gz, &gamma, &beta, &stats, &mut dx, &mut dg, &mut db,
                );
                assert_close(&format!("{name} dx"), &dx, &dx_ref, 1e-5);
                assert_close(&format!("{name} dgamma"), &dg, &dg_ref, 1e-5);
                assert_close(&format!("{name} dbeta"), &db, &db_ref, 1e-5);
            }
        }
    }
}
