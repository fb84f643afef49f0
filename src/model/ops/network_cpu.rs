//! The U-Net's training pass on the CPU: [`NetKernels`] over lungseg's CPU kernels, with
//! buffers from the step-to-step [`BufferPool`].

use super::network::NetKernels;
use crate::model::cpu::bn_relu::{bn_relu_backward, bn_relu_train_forward, BatchStats, BnShape};
use crate::model::cpu::buffers::BufferPool;
use crate::model::cpu::conv::{
    conv2d_backward_input, conv2d_backward_weight, conv2d_forward, ConvShape, Epilogue,
};
use crate::model::cpu::pool::{max_pool2x2_backward_add, max_pool2x2_forward, PoolShape};
use crate::model::cpu::simd::Isa;
use crate::model::cpu::upsample::{upsample_cat_backward_low, upsample_cat_forward, UpCatShape};
use candle_core::Result;
use std::ops::Range;

/// The CPU kernels, at the best instruction set this machine has.
pub(crate) struct CpuNet {
    pool: BufferPool,
    isa: Isa,
}

impl CpuNet {
    pub(crate) fn new(pool: BufferPool) -> Self {
        Self {
            pool,
            isa: Isa::best(),
        }
    }
}

/// `p[r]` split after `first` elements: a weight and its bias, or gamma and beta.
fn halves(p: &[f32], r: Range<usize>, first: usize) -> (&[f32], &[f32]) {
    p[r].split_at(first)
}

fn halves_mut(p: &mut [f32], r: Range<usize>, first: usize) -> (&mut [f32], &mut [f32]) {
    p[r].split_at_mut(first)
}

impl NetKernels for CpuNet {
    type Slice = [f32];
    type Buf = Vec<f32>;
    type Stats = BatchStats;

    fn take(&self, len: usize) -> Result<Vec<f32>> {
        Ok(self.pool.take(len))
    }

    fn give(&self, buf: Vec<f32>) {
        self.pool.give(buf)
    }

    fn conv_forward(
        &self,
        s: &ConvShape,
        x: &[f32],
        p: &[f32],
        wb: Range<usize>,
        y: &mut [f32],
    ) -> Result<()> {
        let (w, b) = halves(p, wb, s.w_len());
        conv2d_forward(self.isa, s, x, w, Epilogue::Bias(b), y);
        Ok(())
    }

    fn conv_backward_input(
        &self,
        s: &ConvShape,
        dy: &[f32],
        p: &[f32],
        wb: Range<usize>,
        dx: &mut [f32],
    ) -> Result<()> {
        let (w, _b) = halves(p, wb, s.w_len());
        conv2d_backward_input(self.isa, s, dy, w, dx);
        Ok(())
    }

    fn conv_backward_weight(
        &self,
        s: &ConvShape,
        x: &[f32],
        dy: &[f32],
        dp: &mut [f32],
        wb: Range<usize>,
    ) -> Result<()> {
        let (dw, db) = halves_mut(dp, wb, s.w_len());
        conv2d_backward_weight(self.isa, s, x, dy, dw, db);
        Ok(())
    }

    fn bn_relu_forward(
        &self,
        s: &BnShape,
        y: &[f32],
        p: &[f32],
        affine: Range<usize>,
        eps: f64,
        z: &mut [f32],
    ) -> Result<BatchStats> {
        let (gamma, beta) = halves(p, affine, s.channels);
        Ok(bn_relu_train_forward(self.isa, s, y, gamma, beta, eps, z))
    }

    fn bn_relu_backward(
        &self,
        s: &BnShape,
        y: &[f32],
        dz: &[f32],
        p: &[f32],
        affine: Range<usize>,
        stats: &BatchStats,
        dy: &mut [f32],
        dp: &mut [f32],
    ) -> Result<()> {
        let (gamma, beta) = halves(p, affine.clone(), s.channels);
        let (dgamma, dbeta) = halves_mut(dp, affine, s.channels);
        bn_relu_backward(self.isa, s, y, dz, gamma, beta, stats, dy, dgamma, dbeta);
        Ok(())
    }

    fn bn_relu_eval(
        &self,
        s: &BnShape,
        y: &[f32],
        p: &[f32],
        affine: Range<usize>,
        running: &[f32],
        stats: Range<usize>,
        eps: f64,
        z: &mut [f32],
    ) -> Result<()> {
        let (gamma, beta) = halves(p, affine, s.channels);
        let (mean, var) = halves(running, stats, s.channels);
        let plane = s.plane;
        for (i, (zp, yp)) in z.chunks_mut(plane).zip(y.chunks(plane)).enumerate() {
            let c = i % s.channels;
            let scale = f64::from(gamma[c]) / (f64::from(var[c]) + eps).sqrt();
            let shift = (f64::from(beta[c]) - f64::from(mean[c]) * scale) as f32;
            let scale = scale as f32;
            for (zv, &yv) in zp.iter_mut().zip(yp) {
                *zv = yv.mul_add(scale, shift).max(0.0);
            }
        }
        Ok(())
    }

    fn max_pool_forward(&self, s: &PoolShape, x: &[f32], y: &mut [f32]) -> Result<()> {
        max_pool2x2_forward(s, x, y);
        Ok(())
    }

    fn max_pool_backward_add(
        &self,
        s: &PoolShape,
        x: &[f32],
        dy: &[f32],
        dx: &mut [f32],
    ) -> Result<()> {
        max_pool2x2_backward_add(s, x, dy, dx);
        Ok(())
    }

    fn up_cat_forward(
        &self,
        s: &UpCatShape,
        low: &[f32],
        skip: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
        upsample_cat_forward(s, low, skip, out);
        Ok(())
    }

    fn up_cat_backward(
        &self,
        s: &UpCatShape,
        g: &[f32],
        d_low: &mut [f32],
        d_skip: &mut [f32],
    ) -> Result<()> {
        upsample_cat_backward_low(s, g, d_low);
        let plane = 4 * s.h * s.w;
        let per_image = (s.c_low + s.c_skip) * plane;
        for (b, dst) in d_skip.chunks_exact_mut(s.c_skip * plane).enumerate() {
            dst.copy_from_slice(&g[b * per_image + s.c_low * plane..][..s.c_skip * plane]);
        }
        Ok(())
    }
}
