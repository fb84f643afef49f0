//! Runs the CUDA kernels' own source (`kernels.cu`, compiled as C by build.rs, one "thread"
//! walking each grid-stride loop) against lungseg's CPU kernels, so that a machine without a GPU
//! still checks every kernel's arithmetic, indexing and coverage.
//!
//! Every output buffer starts as NaN, so an element a kernel fails to write fails its test
//! (except the per-channel sums, which the moment kernels add into, and the buffers updated in
//! place: pooling's gradient, the running statistics, Adam's). Each test covers several shapes,
//! odd planes (5x7, 3x5), one image and one channel among them.
//! Tolerances, as `max|a - b| / max|b|` unless said otherwise:
//! - bit-exact where both sides do the same f32 operations in the same order: the channel bias,
//!   max pooling (forward and backward), the upsampling forward and the skip part of its
//!   backward, the running-statistics update and Adam;
//! - 1e-6 for the upsampling adjoint (the kernel gathers each input's taps, the CPU scatters
//!   them: same terms, another order);
//! - 1e-5 for BatchNorm statistics, gradients and outputs, and for the channel sums: the kernels
//!   sum in f64, the CPU kernels in f32 vector lanes flushed to f64, so the f32 rounding of the
//!   derived scale and shift may differ by an ulp (see `bn_relu_forward_matches_cpu` for the
//!   output of a channel whose mean dwarfs its spread).

use crate::model::cpu::adam::{adam_update as cpu_adam_update, AdamStep};
use crate::model::cpu::bn_relu::{bn_relu_backward, bn_relu_train_forward, BatchStats, BnShape};
use crate::model::cpu::conv::{conv2d_backward_weight, ConvShape};
use crate::model::cpu::pool::{max_pool2x2_backward_add, max_pool2x2_forward, PoolShape};
use crate::model::cpu::simd::Isa;
use crate::model::cpu::upsample::{upsample_cat_backward_low, upsample_cat_forward, UpCatShape};
use crate::rng::SplitMix64;

// The kernels of `kernels.cu` as its C build exports them.
extern "C" {
    fn lungseg_add_channel_bias(y: *mut f32, bias: *const f32, channels: u32, plane: u32, n: u32);
    fn lungseg_channel_moments(
        x: *const f32,
        sums: *mut f64,
        batch: u32,
        channels: u32,
        plane: u32,
        parts: u32,
        shifted: i32,
    );
    fn lungseg_channel_totals(sums: *const f64, out: *mut f32, channels: u32);
    fn lungseg_bn_forward_stats(
        sums: *const f64,
        x: *const f32,
        gamma_beta: *const f32,
        stats: *mut f32,
        batch: u32,
        channels: u32,
        plane: u32,
        eps: f64,
    );
    fn lungseg_bn_relu_apply(
        x: *const f32,
        stats: *const f32,
        z: *mut f32,
        channels: u32,
        plane: u32,
        n: u32,
    );
    fn lungseg_bn_backward_moments(
        x: *const f32,
        gz: *const f32,
        stats: *const f32,
        sums: *mut f64,
        batch: u32,
        channels: u32,
        plane: u32,
        parts: u32,
    );
    fn lungseg_bn_backward_coefficients(
        sums: *const f64,
        stats: *const f32,
        gamma_beta: *const f32,
        coef: *mut f32,
        dgamma_dbeta: *mut f32,
        batch: u32,
        channels: u32,
        plane: u32,
    );
    fn lungseg_bn_backward_apply(
        x: *const f32,
        gz: *const f32,
        stats: *const f32,
        coef: *const f32,
        dx: *mut f32,
        channels: u32,
        plane: u32,
        n: u32,
    );
    fn lungseg_bn_running_update(
        running: *mut f32,
        batch_stat: *const f32,
        channels: u32,
        momentum: f64,
        factor: f64,
    );
    fn lungseg_bn_eval_stats(
        gamma_beta: *const f32,
        running: *const f32,
        stats: *mut f32,
        channels: u32,
        eps: f64,
    );
    fn lungseg_max_pool_forward(x: *const f32, y: *mut f32, h: u32, w: u32, n_out: u32);
    fn lungseg_max_pool_backward_add(
        x: *const f32,
        gy: *const f32,
        dx: *mut f32,
        h: u32,
        w: u32,
        n_out: u32,
    );
    fn lungseg_upsample_cat_forward(
        low: *const f32,
        skip: *const f32,
        out: *mut f32,
        c_low: u32,
        c_skip: u32,
        h: u32,
        w: u32,
        n_out: u32,
    );
    fn lungseg_upsample_cat_backward(
        g: *const f32,
        d_low: *mut f32,
        d_skip: *mut f32,
        c_low: u32,
        c_skip: u32,
        h: u32,
        w: u32,
        n_low: u32,
        n_skip: u32,
    );
    fn lungseg_adam_update(
        theta: *mut f32,
        g: *const f32,
        mv: *mut f32,
        n: u32,
        beta1: f32,
        one_minus_beta1: f32,
        beta2: f32,
        one_minus_beta2: f32,
        inv_bias1: f32,
        inv_bias2: f32,
        eps: f32,
        lr: f32,
        decay: f32,
    );
    fn lungseg_fill(x: *mut f32, v: f32, n: u32);
}

// ---------------------------------------------------------------------------------------------
// Checked wrappers: each asserts every length the kernel indexes, so the unsafe calls stay in
// bounds.

/// `n` as the kernels' 32-bit index (they refuse 2^31 elements or more).
fn idx(n: usize) -> u32 {
    assert!(
        n < 1 << 31,
        "{n} elements overflow the kernels' 32-bit indices"
    );
    n as u32
}

fn bn_len(s: &BnShape) -> usize {
    s.batch * s.channels * s.plane
}

/// Statistics layout: mean, var, inv_std, scale, shift, each `C` floats.
const STATS: usize = 5;

fn add_channel_bias(y: &mut [f32], bias: &[f32], plane: usize) {
    let channels = bias.len();
    assert!(channels * plane > 0 && y.len().is_multiple_of(channels * plane));
    // SAFETY: every index `i < y.len()` reads `bias[(i / plane) % channels]`, in bounds.
    unsafe {
        lungseg_add_channel_bias(
            y.as_mut_ptr(),
            bias.as_ptr(),
            idx(channels),
            idx(plane),
            idx(y.len()),
        )
    }
}

/// Threads per channel of the moment kernels: on the GPU a multiple of 32, so that a warp's
/// shuffle-and-atomic sum never spans two channels (the host build adds any count correctly,
/// so the wrappers hold the tests to the device's rule).
fn check_parts(parts: usize) {
    assert!(
        parts > 0 && parts.is_multiple_of(32),
        "parts {parts}: a positive multiple of 32"
    );
}

/// Adds `(Σ (x - K), Σ (x - K)²)` of each channel into `sums[2c..2c + 2]` (zeroed by the
/// caller), `K` the channel's first value when `shifted`, else 0.
fn channel_moments(s: &BnShape, x: &[f32], parts: usize, shifted: bool, sums: &mut [f64]) {
    check_parts(parts);
    assert!(x.len() == bn_len(s) && sums.len() == 2 * s.channels);
    // The shifted sums read each channel's first value.
    assert!(!shifted || s.batch * s.plane > 0);
    idx(x.len().max(s.channels * parts));
    // SAFETY: reads `x` at channel offsets below `bn_len(s)` (and `x[c·plane]`, the first
    // value, only when shifted: checked non-empty above); adds into `2·C` doubles.
    unsafe {
        lungseg_channel_moments(
            x.as_ptr(),
            sums.as_mut_ptr(),
            idx(s.batch),
            idx(s.channels),
            idx(s.plane),
            idx(parts),
            i32::from(shifted),
        )
    }
}

/// `out[c] = sums[2c]` as f32.
fn channel_totals(sums: &[f64], out: &mut [f32]) {
    assert_eq!(sums.len(), 2 * out.len());
    // SAFETY: reads `2·C` doubles, writes `C` floats.
    unsafe { lungseg_channel_totals(sums.as_ptr(), out.as_mut_ptr(), idx(out.len())) }
}

fn bn_forward_stats(
    s: &BnShape,
    sums: &[f64],
    x: &[f32],
    gamma_beta: &[f32],
    stats: &mut [f32],
    eps: f64,
) {
    let c = s.channels;
    assert!(s.batch * s.plane > 0 && x.len() == bn_len(s));
    assert!(sums.len() == 2 * c && gamma_beta.len() == 2 * c && stats.len() == STATS * c);
    // SAFETY: reads `2·C` doubles, `x[c·plane]` (inside `x`: batch and plane are positive)
    // and `2·C` floats of gamma_beta; writes `5·C` floats.
    unsafe {
        lungseg_bn_forward_stats(
            sums.as_ptr(),
            x.as_ptr(),
            gamma_beta.as_ptr(),
            stats.as_mut_ptr(),
            idx(s.batch),
            idx(c),
            idx(s.plane),
            eps,
        )
    }
}

fn bn_relu_apply(s: &BnShape, x: &[f32], stats: &[f32], z: &mut [f32]) {
    assert!(x.len() == bn_len(s) && z.len() == x.len() && stats.len() == STATS * s.channels);
    // SAFETY: index `i < n` reads `x[i]` and `stats[k·C + (i / plane) % C]`, writes `z[i]`.
    unsafe {
        lungseg_bn_relu_apply(
            x.as_ptr(),
            stats.as_ptr(),
            z.as_mut_ptr(),
            idx(s.channels),
            idx(s.plane),
            idx(x.len()),
        )
    }
}

/// Adds `(Σ dy, Σ dy·(x - mean))` of each channel into `sums` (zeroed by the caller).
fn bn_backward_moments(
    s: &BnShape,
    x: &[f32],
    gz: &[f32],
    stats: &[f32],
    parts: usize,
    sums: &mut [f64],
) {
    check_parts(parts);
    assert!(x.len() == bn_len(s) && gz.len() == x.len());
    assert!(stats.len() == STATS * s.channels && sums.len() == 2 * s.channels);
    idx(x.len().max(s.channels * parts));
    // SAFETY: reads `x`, `gz` at channel offsets below `bn_len(s)` and `5·C` stats; adds into
    // `2·C` doubles.
    unsafe {
        lungseg_bn_backward_moments(
            x.as_ptr(),
            gz.as_ptr(),
            stats.as_ptr(),
            sums.as_mut_ptr(),
            idx(s.batch),
            idx(s.channels),
            idx(s.plane),
            idx(parts),
        )
    }
}

/// Fills `coef` (`a, b, c0`, each `C`) and `dgamma_dbeta`.
fn bn_backward_coefficients(
    s: &BnShape,
    sums: &[f64],
    stats: &[f32],
    gamma_beta: &[f32],
    coef: &mut [f32],
    dgamma_dbeta: &mut [f32],
) {
    let c = s.channels;
    assert!(sums.len() == 2 * c && stats.len() == STATS * c && gamma_beta.len() == 2 * c);
    assert!(coef.len() == 3 * c && dgamma_dbeta.len() == 2 * c);
    // SAFETY: reads `2·C` doubles, `5·C` stats and `2·C` gamma_beta; writes `3·C` coef and
    // `2·C` gradients.
    unsafe {
        lungseg_bn_backward_coefficients(
            sums.as_ptr(),
            stats.as_ptr(),
            gamma_beta.as_ptr(),
            coef.as_mut_ptr(),
            dgamma_dbeta.as_mut_ptr(),
            idx(s.batch),
            idx(c),
            idx(s.plane),
        )
    }
}

fn bn_backward_apply(
    s: &BnShape,
    x: &[f32],
    gz: &[f32],
    stats: &[f32],
    coef: &[f32],
    dx: &mut [f32],
) {
    assert!(x.len() == bn_len(s) && gz.len() == x.len() && dx.len() == x.len());
    assert!(stats.len() == STATS * s.channels && coef.len() == 3 * s.channels);
    // SAFETY: index `i < n` reads `x[i]`, `gz[i]`, stats and coef of channel
    // `(i / plane) % C`, and writes `dx[i]`.
    unsafe {
        lungseg_bn_backward_apply(
            x.as_ptr(),
            gz.as_ptr(),
            stats.as_ptr(),
            coef.as_ptr(),
            dx.as_mut_ptr(),
            idx(s.channels),
            idx(s.plane),
            idx(x.len()),
        )
    }
}

fn bn_running_update(running: &mut [f32], batch_stat: &[f32], momentum: f64, factor: f64) {
    assert_eq!(running.len(), batch_stat.len());
    // SAFETY: both hold `channels` floats.
    unsafe {
        lungseg_bn_running_update(
            running.as_mut_ptr(),
            batch_stat.as_ptr(),
            idx(running.len()),
            momentum,
            factor,
        )
    }
}

fn bn_eval_stats(gamma_beta: &[f32], running: &[f32], eps: f64, stats: &mut [f32]) {
    let channels = running.len() / 2;
    assert!(gamma_beta.len() == 2 * channels && stats.len() == 5 * channels);
    // SAFETY: gamma_beta and running hold 2·C floats, stats 5·C.
    unsafe {
        lungseg_bn_eval_stats(
            gamma_beta.as_ptr(),
            running.as_ptr(),
            stats.as_mut_ptr(),
            idx(channels),
            eps,
        )
    }
}

fn pool_lens(s: &PoolShape) -> (usize, usize) {
    (s.planes * s.h * s.w, s.planes * s.h_out() * s.w_out())
}

fn max_pool_forward(s: &PoolShape, x: &[f32], y: &mut [f32]) {
    assert_eq!((x.len(), y.len()), pool_lens(s));
    // SAFETY: output `o < n_out` reads the four inputs of its window, inside plane
    // `o / (h/2 · w/2) < planes` of `x`; writes `y[o]`.
    unsafe {
        lungseg_max_pool_forward(x.as_ptr(), y.as_mut_ptr(), idx(s.h), idx(s.w), idx(y.len()))
    }
}

fn max_pool_backward_add(s: &PoolShape, x: &[f32], gy: &[f32], dx: &mut [f32]) {
    assert_eq!((x.len(), gy.len()), pool_lens(s));
    assert_eq!(dx.len(), x.len());
    // SAFETY: as `max_pool_forward`, and `dx` has `x`'s length.
    unsafe {
        lungseg_max_pool_backward_add(
            x.as_ptr(),
            gy.as_ptr(),
            dx.as_mut_ptr(),
            idx(s.h),
            idx(s.w),
            idx(gy.len()),
        )
    }
}

/// `(low, skip)` lengths.
fn upcat_lens(s: &UpCatShape) -> (usize, usize) {
    (
        s.batch * s.c_low * s.h * s.w,
        s.batch * s.c_skip * 4 * s.h * s.w,
    )
}

fn upsample_cat_forward_kernel(s: &UpCatShape, low: &[f32], skip: &[f32], out: &mut [f32]) {
    assert_eq!((low.len(), skip.len()), upcat_lens(s));
    assert_eq!(out.len(), s.out_len());
    // SAFETY: output `i` reads its skip element or four taps of its low plane, all inside
    // `low` and `skip` by the lengths above; writes `out[i]`.
    unsafe {
        lungseg_upsample_cat_forward(
            low.as_ptr(),
            skip.as_ptr(),
            out.as_mut_ptr(),
            idx(s.c_low),
            idx(s.c_skip),
            idx(s.h),
            idx(s.w),
            idx(out.len()),
        )
    }
}

fn upsample_cat_backward_kernel(s: &UpCatShape, g: &[f32], d_low: &mut [f32], d_skip: &mut [f32]) {
    assert_eq!((d_low.len(), d_skip.len()), upcat_lens(s));
    assert_eq!(g.len(), s.out_len());
    idx(d_low.len() + d_skip.len());
    // SAFETY: index `i` writes `d_low[i]` or `d_skip[i - n_low]` and reads `g` inside its
    // `(B, C_low + C_skip, 2h, 2w)` length.
    unsafe {
        lungseg_upsample_cat_backward(
            g.as_ptr(),
            d_low.as_mut_ptr(),
            d_skip.as_mut_ptr(),
            idx(s.c_low),
            idx(s.c_skip),
            idx(s.h),
            idx(s.w),
            idx(d_low.len()),
            idx(d_skip.len()),
        )
    }
}

/// One Adam step in place; `mv` holds m then v.
fn adam_update_kernel(step: &AdamStep, theta: &mut [f32], g: &[f32], mv: &mut [f32]) {
    assert!(g.len() == theta.len() && mv.len() == 2 * theta.len());
    // The constants in the kernel's argument order, as the CUDA optimizer passes them.
    let [beta1, one_minus_beta1, beta2, one_minus_beta2, inv_bias1, inv_bias2, eps, lr, decay] =
        step.as_f32s();
    // SAFETY: index `i < n` touches `theta[i]`, `g[i]`, `mv[i]` and `mv[n + i]`.
    unsafe {
        lungseg_adam_update(
            theta.as_mut_ptr(),
            g.as_ptr(),
            mv.as_mut_ptr(),
            idx(theta.len()),
            beta1,
            one_minus_beta1,
            beta2,
            one_minus_beta2,
            inv_bias1,
            inv_bias2,
            eps,
            lr,
            decay,
        )
    }
}

fn fill(x: &mut [f32], v: f32) {
    // SAFETY: writes `x[i]` for `i < x.len()`.
    unsafe { lungseg_fill(x.as_mut_ptr(), v, idx(x.len())) }
}

// ---------------------------------------------------------------------------------------------
// Test helpers.

/// `n` draws of `offset + spread·N(0, 1)`.
fn random(n: usize, seed: u64, offset: f32, spread: f32) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| offset + spread * rng.normal() as f32)
        .collect()
}

/// An `(B, C, H·W)` activation whose channel `c` is `N(offset, spread²)`, `(offset, spread)`
/// cycling through `per_channel`.
fn bn_input(s: &BnShape, seed: u64, per_channel: &[(f32, f32)]) -> Vec<f32> {
    let mut x = random(bn_len(s), seed, 0.0, 1.0);
    for (i, v) in x.iter_mut().enumerate() {
        let (offset, spread) = per_channel[(i / s.plane) % s.channels % per_channel.len()];
        *v = offset + spread * *v;
    }
    x
}

/// The kernels' ReLU: `v > 0 ? v : 0` (+0 for -0 and NaN).
fn relu(v: f32) -> f32 {
    if v > 0.0 {
        v
    } else {
        0.0
    }
}

fn nan_f32(n: usize) -> Vec<f32> {
    vec![f32::NAN; n]
}

/// `max|got - want| / max|want|` (0 for two all-zero slices); infinite when a difference is NaN
/// (an unwritten, poisoned output).
fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f64, |m, &w| m.max(f64::from(w).abs()));
    let mut worst = 0f64;
    for (&g, &w) in got.iter().zip(want) {
        let d = (f64::from(g) - f64::from(w)).abs();
        if d.is_nan() {
            return f64::INFINITY;
        }
        worst = worst.max(d);
    }
    if worst == 0.0 {
        0.0
    } else {
        worst / scale // infinite when `want` is all zeros
    }
}

#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f64) {
    let err = rel_err(got, want);
    if err >= tol || err.is_nan() {
        let diff = |i: usize| (f64::from(got[i]) - f64::from(want[i])).abs();
        let i = (0..got.len()).max_by(|&a, &b| diff(a).total_cmp(&diff(b)));
        let i = i.unwrap_or(0);
        panic!(
            "{what}: relative error {err:.2e} over {tol:.0e}; worst [{i}]: {} vs {}",
            got[i], want[i]
        );
    }
}

/// Same bits (NaNs included, payloads too).
#[track_caller]
fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{what}[{i}]: {} vs {} (not bit-exact)", got[i], want[i]);
    }
}

/// The BatchNorm test shapes: `(batch, channels, H, W)`, odd planes and 1-element planes
/// included.
const BN_SHAPES: [(usize, usize, usize, usize); 5] = [
    (1, 1, 5, 7),
    (2, 3, 5, 7),
    (1, 3, 1, 1),
    (2, 3, 3, 3),
    (3, 3, 8, 8),
];

/// Threads per channel of the moment kernels (multiples of 32): fewer than the values of most
/// shapes, about as many, and more than any shape's (threads with nothing to add).
const PARTS: [usize; 3] = [32, 64, 256];

const EPS: f64 = 1e-5;

fn bn_shape((batch, channels, h, w): (usize, usize, usize, usize)) -> BnShape {
    BnShape {
        batch,
        channels,
        plane: h * w,
    }
}

fn gamma_beta(channels: usize, seed: u64) -> Vec<f32> {
    let mut gb = random(channels, seed, 1.0, 0.5);
    gb.extend(random(channels, seed + 1, 0.0, 0.5));
    gb
}

/// The kernels' training forward: `(z, stats)`.
fn emulated_bn_forward(
    s: &BnShape,
    x: &[f32],
    gamma_beta: &[f32],
    parts: usize,
) -> (Vec<f32>, Vec<f32>) {
    let mut sums = vec![0.0; 2 * s.channels];
    channel_moments(s, x, parts, true, &mut sums);
    let mut stats = nan_f32(STATS * s.channels);
    bn_forward_stats(s, &sums, x, gamma_beta, &mut stats, EPS);
    let mut z = nan_f32(x.len());
    bn_relu_apply(s, x, &stats, &mut z);
    (z, stats)
}

// ---------------------------------------------------------------------------------------------
// Tests.

/// Mean, variance and inverse deviation within 1e-5 of the CPU kernel's, each channel relative
/// to its own size (the mean to its spread: an error on a mean near zero says nothing).
/// `z` within 1e-5 per channel, plus the conditioning of the folded affine: z = x·scale + shift
/// in f32 with |x·scale| ≈ |shift| ≈ |mean|/std times the channel's |z|, so an ulp of
/// difference in the f32 scale or shift (the two sides' sums differ in the last bits) moves z
/// by about ε·|mean|/std of its size. And `z` bit-exact against `max(0, fma(x, scale, shift))`
/// with the kernel's own scale and shift, which checks the apply step at any conditioning.
/// Channel 0 (mean 100, spread 0.01: mean/std 1e4, where E[x²] - E[x]² in f32 would lose every
/// digit) checks that the shifted sums keep its variance to 1e-5.
#[test]
fn bn_relu_forward_matches_cpu() {
    const CHANNELS: [(f32, f32); 3] = [(100.0, 0.01), (3.0, 2.0), (-5.0, 1.0)];
    for (seed, &dims) in (10..).zip(&BN_SHAPES) {
        let s = bn_shape(dims);
        let x = bn_input(&s, seed, &CHANNELS);
        let gb = gamma_beta(s.channels, seed + 100);
        let (gamma, beta) = gb.split_at(s.channels);
        let mut z_cpu = nan_f32(x.len());
        let cpu = bn_relu_train_forward(Isa::best(), &s, &x, gamma, beta, EPS, &mut z_cpu);
        for parts in PARTS {
            let (z, stats) = emulated_bn_forward(&s, &x, &gb, parts);
            let what = format!("{s:?} parts {parts}");
            let c_all = s.channels;
            for c in 0..c_all {
                let (mean, var, inv_std) = (stats[c], stats[c_all + c], stats[2 * c_all + c]);
                let std = cpu.var[c].sqrt();
                let mean_err = f64::from((mean - cpu.mean[c]).abs() / cpu.mean[c].abs().max(std));
                assert!(
                    mean_err < 1e-5,
                    "{what} mean[{c}]: {mean} vs {}",
                    cpu.mean[c]
                );
                assert_close(&format!("{what} var[{c}]"), &[var], &[cpu.var[c]], 1e-5);
                let inv = &[cpu.inv_std[c]];
                assert_close(&format!("{what} inv_std[{c}]"), &[inv_std], inv, 1e-5);
                let cond = f64::from(cpu.mean[c].abs() * cpu.inv_std[c]);
                let tol = 1e-5 + 4.0 * f64::from(f32::EPSILON) * cond;
                let planes = |v: &[f32]| -> Vec<f32> {
                    (0..s.batch)
                        .flat_map(|b| v[(b * c_all + c) * s.plane..][..s.plane].to_vec())
                        .collect()
                };
                assert_close(
                    &format!("{what} z of channel {c}"),
                    &planes(&z),
                    &planes(&z_cpu),
                    tol,
                );
            }
            let (scale, shift) = (&stats[3 * c_all..4 * c_all], &stats[4 * c_all..]);
            let z_own: Vec<f32> = (0..x.len())
                .map(|i| {
                    let c = (i / s.plane) % c_all;
                    relu(x[i].mul_add(scale[c], shift[c]))
                })
                .collect();
            assert_bits(&format!("{what} z from its scale and shift"), &z, &z_own);
        }
    }
}

/// `dx`, `dgamma`, `dbeta` within 1e-5 (relative to each tensor's largest value) of the CPU
/// kernel's, each path from its own forward statistics; `dx` also bit-exact against
/// `fma(a, dy, fma(b, x, c0))` from the kernel's own coefficients and mask. The channels are
/// well conditioned (mean/std up to 15): at a mean/std of 1e4, as in the forward test, two
/// correct implementations would disagree on the ReLU mask itself wherever the pre-activation
/// is within their rounding difference of zero.
#[test]
fn bn_relu_backward_matches_cpu() {
    const CHANNELS: [(f32, f32); 3] = [(0.0, 1.0), (30.0, 2.0), (-5.0, 0.5)];
    for (seed, &dims) in (20..).zip(&BN_SHAPES) {
        let s = bn_shape(dims);
        let (c_all, n) = (s.channels, bn_len(&s));
        let x = bn_input(&s, seed, &CHANNELS);
        let gz = random(n, seed + 50, 0.0, 1.0);
        let gb = gamma_beta(c_all, seed + 100);
        let (gamma, beta) = gb.split_at(c_all);
        let mut z_cpu = nan_f32(n);
        let cpu_stats: BatchStats =
            bn_relu_train_forward(Isa::best(), &s, &x, gamma, beta, EPS, &mut z_cpu);
        let (mut dx_cpu, mut dg_cpu, mut db_cpu) = (nan_f32(n), nan_f32(c_all), nan_f32(c_all));
        bn_relu_backward(
            Isa::best(),
            &s,
            &x,
            &gz,
            gamma,
            beta,
            &cpu_stats,
            &mut dx_cpu,
            &mut dg_cpu,
            &mut db_cpu,
        );
        for parts in PARTS {
            let what = format!("{s:?} parts {parts}");
            let (_, stats) = emulated_bn_forward(&s, &x, &gb, parts);
            let mut sums = vec![0.0; 2 * c_all];
            bn_backward_moments(&s, &x, &gz, &stats, parts, &mut sums);
            let (mut coef, mut dgb) = (nan_f32(3 * c_all), nan_f32(2 * c_all));
            bn_backward_coefficients(&s, &sums, &stats, &gb, &mut coef, &mut dgb);
            let mut dx = nan_f32(n);
            bn_backward_apply(&s, &x, &gz, &stats, &coef, &mut dx);
            assert_close(&format!("{what} dx"), &dx, &dx_cpu, 1e-5);
            assert_close(&format!("{what} dgamma"), &dgb[..c_all], &dg_cpu, 1e-5);
            assert_close(&format!("{what} dbeta"), &dgb[c_all..], &db_cpu, 1e-5);
            let dx_own: Vec<f32> = (0..n)
                .map(|i| {
                    let c = (i / s.plane) % c_all;
                    let pre = x[i].mul_add(stats[3 * c_all + c], stats[4 * c_all + c]);
                    let dy = if pre > 0.0 { gz[i] } else { 0.0 };
                    let (a, b, c0) = (coef[c], coef[c_all + c], coef[2 * c_all + c]);
                    a.mul_add(dy, b.mul_add(x[i], c0))
                })
                .collect();
            assert_bits(&format!("{what} dx from its coefficients"), &dx, &dx_own);
        }
    }
}

/// A convolution's bias gradient: the unshifted channel sums within 1e-5 of the CPU weight
/// gradient kernel's `db` (summed in f32 lanes), and within 1e-6 of an f64 sum.
#[test]
fn channel_sums_match_conv_bias_gradient() {
    // (batch, c_in, h, w, c_out): c_out 32 takes the CPU kernel's channel-vector path.
    for (seed, (batch, c_in, h, w, c_out)) in (30..).zip([
        (1, 1, 5, 7, 1),
        (2, 2, 5, 7, 3),
        (3, 1, 4, 4, 3),
        (2, 3, 4, 6, 32),
    ]) {
        let cs = ConvShape {
            batch,
            c_in,
            h,
            w,
            c_out,
            k: 3,
            pad: 1,
        };
        let x = random(cs.x_len(), seed, 0.0, 1.0);
        let gy = random(cs.y_len(), seed + 1, 0.5, 1.0);
        let (mut dw, mut db_cpu) = (nan_f32(cs.w_len()), nan_f32(c_out));
        conv2d_backward_weight(Isa::best(), &cs, &x, &gy, &mut dw, &mut db_cpu);
        let s = BnShape {
            batch,
            channels: c_out,
            plane: cs.h_out() * cs.w_out(),
        };
        let exact: Vec<f32> = (0..c_out)
            .map(|c| {
                let planes = (0..batch).map(|b| &gy[(b * c_out + c) * s.plane..][..s.plane]);
                planes.flatten().map(|&v| f64::from(v)).sum::<f64>() as f32
            })
            .collect();
        for parts in PARTS {
            let what = format!("{cs:?} parts {parts}");
            let mut sums = vec![0.0; 2 * c_out];
            channel_moments(&s, &gy, parts, false, &mut sums);
            let mut db = nan_f32(c_out);
            channel_totals(&sums, &mut db);
            assert_close(&format!("{what} vs conv db"), &db, &db_cpu, 1e-5);
            assert_close(&format!("{what} vs f64 sum"), &db, &exact, 1e-6);
        }
    }
}

/// Every element set, bit for bit (NaN included: the GPU tests poison buffers with it).
#[test]
fn fill_sets_every_element() {
    for (seed, n) in (90..).zip([1, 7, 1000]) {
        for v in [0.0, -2.5, f32::NAN] {
            let mut x = random(n, seed, 0.0, 1.0);
            fill(&mut x, v);
            assert_bits(&format!("fill {n} with {v}"), &x, &vec![v; n]);
        }
    }
}

/// Bit-exact: one f32 addition per element.
#[test]
fn add_channel_bias_matches_loop() {
    for (seed, (batch, channels, plane)) in (40..).zip([(1, 1, 35), (2, 3, 35), (3, 5, 1)]) {
        let y = random(batch * channels * plane, seed, 0.0, 1.0);
        let bias = random(channels, seed + 1, 0.0, 1.0);
        let want: Vec<f32> = (0..y.len())
            .map(|i| y[i] + bias[(i / plane) % channels])
            .collect();
        let mut got = y.clone();
        add_channel_bias(&mut got, &bias, plane);
        assert_bits(&format!("bias {batch}x{channels}x{plane}"), &got, &want);
    }
}

/// Bit-exact against the CPU pooling, forward and backward, on values rounded to integers (so
/// most windows hold ties: the first maximum takes the gradient) with a NaN planted in the
/// first window (it is the maximum); rows and columns past the last whole window of an odd
/// size keep their gradient untouched.
#[test]
fn max_pool_matches_cpu() {
    let nan = f32::from_bits(0x7fc0_1234); // not f32::NAN's bits: the poison stays recognisable
    for (seed, (planes, h, w)) in
        (50..).zip([(1, 5, 7), (3, 4, 4), (2, 3, 5), (2, 1, 3), (2, 2, 1)])
    {
        let s = PoolShape { planes, h, w };
        let (n_in, n_out) = pool_lens(&s);
        let mut x: Vec<f32> = random(n_in, seed, 0.0, 1.0)
            .iter()
            .map(|v| v.round())
            .collect();
        if n_out > 0 {
            x[w + 1] = nan;
        }
        let what = format!("{s:?}");
        let (mut y, mut y_cpu) = (nan_f32(n_out), nan_f32(n_out));
        max_pool_forward(&s, &x, &mut y);
        max_pool2x2_forward(&s, &x, &mut y_cpu);
        assert_bits(&format!("{what} forward"), &y, &y_cpu);
        if n_out > 0 {
            assert_eq!(
                y[0].to_bits(),
                nan.to_bits(),
                "{what}: the NaN is the maximum"
            );
        }

        let gy = random(n_out, seed + 1, 0.0, 1.0);
        let before = random(n_in, seed + 2, 0.0, 1.0);
        let (mut dx, mut dx_cpu) = (before.clone(), before.clone());
        max_pool_backward_add(&s, &x, &gy, &mut dx);
        max_pool2x2_backward_add(&s, &x, &gy, &mut dx_cpu);
        assert_bits(&format!("{what} backward"), &dx, &dx_cpu);
        for (i, (&d, &b)) in dx.iter().zip(&before).enumerate() {
            let (r, col) = ((i / w) % h, i % w);
            if r >= 2 * s.h_out() || col >= 2 * s.w_out() {
                assert_eq!(
                    d.to_bits(),
                    b.to_bits(),
                    "{what}: dx[{i}] outside the windows"
                );
            }
        }
    }
}

/// Forward bit-exact (the same two horizontal then one vertical blend); backward: `d_low`
/// within 1e-6 of the CPU adjoint (another summation order), `d_skip` bit-exact copies of `g`'s
/// skip channels. Planes of 1 row or column, odd sizes and no skip channels included.
#[test]
fn upsample_cat_matches_cpu() {
    for (seed, (batch, c_low, c_skip, h, w)) in (60..).zip([
        (1, 1, 1, 1, 1),
        (2, 3, 1, 3, 5),
        (1, 1, 3, 1, 4),
        (2, 2, 2, 5, 1),
        (1, 3, 2, 4, 4),
        (2, 2, 0, 3, 3),
    ]) {
        let s = UpCatShape {
            batch,
            c_low,
            c_skip,
            h,
            w,
        };
        let what = format!("{s:?}");
        let (n_low, n_skip) = upcat_lens(&s);
        let low = random(n_low, seed, 0.0, 1.0);
        let skip = random(n_skip, seed + 1, 0.0, 1.0);
        let (mut out, mut out_cpu) = (nan_f32(s.out_len()), nan_f32(s.out_len()));
        upsample_cat_forward_kernel(&s, &low, &skip, &mut out);
        upsample_cat_forward(&s, &low, &skip, &mut out_cpu);
        assert_bits(&format!("{what} forward"), &out, &out_cpu);

        let g = random(s.out_len(), seed + 2, 0.0, 1.0);
        let (mut d_low, mut d_skip, mut d_low_cpu) =
            (nan_f32(n_low), nan_f32(n_skip), nan_f32(n_low));
        upsample_cat_backward_kernel(&s, &g, &mut d_low, &mut d_skip);
        upsample_cat_backward_low(&s, &g, &mut d_low_cpu);
        assert_close(&format!("{what} d_low"), &d_low, &d_low_cpu, 1e-6);
        let plane = 4 * h * w;
        let skip_of_g: Vec<f32> = (0..batch)
            .flat_map(|b| g[(b * (c_low + c_skip) + c_low) * plane..][..c_skip * plane].to_vec())
            .collect();
        assert_bits(&format!("{what} d_skip"), &d_skip, &skip_of_g);
    }
}

/// Bit-exact against `model::ops::bn_relu::update_running_stats`' formula,
/// `((1 - m)·r + m·factor·b)` in f64 rounded to f32, for the mean (factor 1) and the unbiased
/// variance (`n / (n - 1)`).
#[test]
fn bn_running_update_matches_formula() {
    for (seed, channels) in (70..).zip([1, 3, 5]) {
        for (momentum, factor) in [(0.1, 1.0), (0.1, 35.0 / 34.0), (0.01, 2.0)] {
            let running = random(channels, seed, 0.5, 1.0);
            let batch = random(channels, seed + 1, 0.0, 2.0);
            let want: Vec<f32> = running
                .iter()
                .zip(&batch)
                .map(|(&r, &b)| {
                    ((1.0 - momentum) * f64::from(r) + momentum * factor * f64::from(b)) as f32
                })
                .collect();
            let mut got = running.clone();
            bn_running_update(&mut got, &batch, momentum, factor);
            assert_bits(
                &format!("{channels} channels m {momentum} f {factor}"),
                &got,
                &want,
            );
        }
    }
}

/// Evaluation mode (CUDA's `bn_relu_eval`): the running statistics' scale and shift, applied
/// by the training kernel, bit-exact against the CPU's formula (`ops::network_cpu`):
/// `scale = γ / sqrt(var + ε)`, `shift = β - mean·scale` in f64, then `max(0, fma(x, s, t))`.
#[test]
fn bn_eval_matches_cpu_formula() {
    let eps = 1e-5;
    for (seed, dims) in (90..).zip([(1, 1, 1, 1), (2, 3, 5, 7), (3, 4, 2, 2)]) {
        let s = bn_shape(dims);
        let c = s.channels;
        let x = random(bn_len(&s), seed, 0.3, 2.0);
        let gb = gamma_beta(c, seed + 1);
        let mut running = random(c, seed + 2, 0.0, 1.0);
        running.extend(random(c, seed + 3, 1.5, 1.0).iter().map(|v| v.abs()));
        let mut stats = nan_f32(5 * c);
        bn_eval_stats(&gb, &running, eps, &mut stats);
        let mut got = nan_f32(x.len());
        bn_relu_apply(&s, &x, &stats, &mut got);
        let want: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let ch = (i / s.plane) % c;
                let scale = f64::from(gb[ch]) / (f64::from(running[c + ch]) + eps).sqrt();
                let shift = (f64::from(gb[c + ch]) - f64::from(running[ch]) * scale) as f32;
                v.mul_add(scale as f32, shift).max(0.0)
            })
            .collect();
        assert_bits(&format!("eval {dims:?}"), &got, &want);
    }
}

/// Bit-exact against the CPU Adam over three steps, with and without weight decay: the same f32
/// constants and the same operations in the same order (a decay of 1 without weight decay
/// multiplies exactly).
#[test]
fn adam_update_matches_cpu() {
    let (lr, beta1, beta2, eps) = (1e-3, 0.9, 0.999, 1e-8);
    for (seed, n) in (80..).zip([1, 7, 1000]) {
        for weight_decay in [0.0, 1e-2] {
            let mut theta_cpu = random(n, seed, 0.0, 1.0);
            let mut theta = theta_cpu.clone();
            let (mut m_cpu, mut v_cpu) = (vec![0.0; n], vec![0.0; n]);
            let mut mv = vec![0.0; 2 * n];
            for t in 1..=3 {
                let what = format!("n {n} wd {weight_decay} step {t}");
                let g = random(n, seed * 10 + t as u64, 0.0, 0.1);
                let step = AdamStep::new(lr, beta1, beta2, eps, weight_decay, t);
                cpu_adam_update(&step, &mut theta_cpu, &mut m_cpu, &mut v_cpu, &g);
                adam_update_kernel(&step, &mut theta, &g, &mut mv);
                assert_bits(&format!("{what} theta"), &theta, &theta_cpu);
                assert_bits(&format!("{what} m"), &mv[..n], &m_cpu);
                assert_bits(&format!("{what} v"), &mv[n..], &v_cpu);
            }
        }
    }
}
