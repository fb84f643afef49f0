//! The U-Net's whole training pass, forward and backward, as one candle op over the CPU
//! kernels, so that no activation gradient goes through candle's `GradStore`: there, every
//! autograd edge costs a zero-filled tensor plus an add (run on candle's own spinning thread
//! pool, which competes with rayon's for the cores), and a tensor with two consumers one more
//! add. Inside the op the skip connections' gradients are summed by the kernels themselves
//! (the pooling adjoint adds into the skip's share). The saved activations live as long as the
//! op, as every candle node keeps its inputs (a graph may be differentiated more than once).
//!
//! The 42 trainable tensors travel as one packed vector (`Tensor::cat` of the flattened
//! parameters, in [`param_sizes`] order), so that their gradients reach candle as one tensor
//! that `cat`'s own backward splits.

use super::{cpu_tensor, output, slice_of, with_f32};
use crate::model::cpu::bn_relu::{bn_relu_backward, bn_relu_train_forward, BatchStats, BnShape};
use crate::model::cpu::buffers::BufferPool;
use crate::model::cpu::conv::{
    conv2d_backward_input, conv2d_backward_weight, conv2d_forward, ConvShape, Epilogue,
};
use crate::model::cpu::pool::{max_pool2x2_backward_add, max_pool2x2_forward, PoolShape};
use crate::model::cpu::simd::Isa;
use crate::model::cpu::upsample::{upsample_cat_backward_low, upsample_cat_forward, UpCatShape};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use std::sync::{Arc, Mutex, PoisonError};

const NAME: &str = "lungseg-unet";

/// Parameters per `DoubleConv`: conv weight and bias, batch-norm weight and bias, twice.
const BLOCK_PARAMS: usize = 8;
/// The five `DoubleConv`s in network order: `d1, d2, d3, u1, u2`.
pub(crate) const BLOCKS: usize = 5;

/// The network's sizes for one batch: base width `c` and input `(B, 1, H, W)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetShape {
    /// Images.
    pub batch: usize,
    /// Channels of the first level.
    pub base: usize,
    /// Input height (a multiple of 4).
    pub h: usize,
    /// Input width (a multiple of 4).
    pub w: usize,
}

/// One `DoubleConv` at its level.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockShape {
    batch: usize,
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
}

impl BlockShape {
    pub(crate) fn conv1(&self) -> ConvShape {
        ConvShape {
            batch: self.batch,
            c_in: self.c_in,
            h: self.h,
            w: self.w,
            c_out: self.c_out,
            k: 3,
            pad: 1,
        }
    }

    pub(crate) fn conv2(&self) -> ConvShape {
        ConvShape {
            c_in: self.c_out,
            ..self.conv1()
        }
    }

    fn bn(&self) -> BnShape {
        BnShape {
            batch: self.batch,
            channels: self.c_out,
            plane: self.h * self.w,
        }
    }

    fn out_len(&self) -> usize {
        self.batch * self.c_out * self.h * self.w
    }

    fn param_sizes(&self) -> [usize; BLOCK_PARAMS] {
        let (i, o) = (self.c_in, self.c_out);
        [o * i * 9, o, o, o, o * o * 9, o, o, o]
    }
}

impl NetShape {
    pub(crate) fn blocks(&self) -> [BlockShape; BLOCKS] {
        let c = self.base;
        let level = |c_in, c_out, div: usize| BlockShape {
            batch: self.batch,
            c_in,
            c_out,
            h: self.h / div,
            w: self.w / div,
        };
        [
            level(1, c, 1),
            level(c, 2 * c, 2),
            level(2 * c, 4 * c, 4),
            level(6 * c, 2 * c, 2),
            level(3 * c, c, 1),
        ]
    }

    /// The 1×1 output convolution.
    pub(crate) fn head(&self) -> ConvShape {
        ConvShape {
            batch: self.batch,
            c_in: self.base,
            h: self.h,
            w: self.w,
            c_out: 1,
            k: 1,
            pad: 0,
        }
    }

    pub(crate) fn pool(&self, div: usize, channels: usize) -> PoolShape {
        PoolShape {
            planes: self.batch * channels,
            h: self.h / div,
            w: self.w / div,
        }
    }

    /// `cat([up(low), skip])` where `low` has `c_low` channels at `1/div` of the input size.
    pub(crate) fn up_cat(&self, div: usize, c_low: usize, c_skip: usize) -> UpCatShape {
        UpCatShape {
            batch: self.batch,
            c_low,
            c_skip,
            h: self.h / div,
            w: self.w / div,
        }
    }

    fn input_len(&self) -> usize {
        self.batch * self.h * self.w
    }
}

/// The length of every trainable tensor in packing order: for `d1, d2, d3, u1, u2` conv 1
/// weight and bias, batch-norm 1 weight and bias, the same for conv 2 and batch-norm 2; then
/// the output convolution's weight and bias.
pub fn param_sizes(shape: &NetShape) -> Vec<usize> {
    let mut sizes: Vec<usize> = shape
        .blocks()
        .iter()
        .flat_map(|b| b.param_sizes())
        .collect();
    sizes.extend([shape.base, 1]);
    sizes
}

/// Splits `packed` into the [`param_sizes`] pieces.
fn split<'a>(packed: &'a [f32], sizes: &[usize]) -> Vec<&'a [f32]> {
    let mut rest = packed;
    sizes
        .iter()
        .map(|&n| {
            let (head, tail) = rest.split_at(n);
            rest = tail;
            head
        })
        .collect()
}

/// Splits `packed` into the [`param_sizes`] pieces, mutably.
fn split_mut<'a>(packed: &'a mut [f32], sizes: &[usize]) -> Vec<&'a mut [f32]> {
    let mut rest = packed;
    sizes
        .iter()
        .map(|&n| {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(n);
            rest = tail;
            head
        })
        .collect()
}

/// What a `DoubleConv`'s backward needs from its forward (its input is kept by the caller).
struct BlockSaved {
    /// Conv 1 output (batch-norm 1 input).
    y1: Vec<f32>,
    /// Batch-norm 1 + ReLU output (conv 2 input).
    z1: Vec<f32>,
    /// Conv 2 output (batch-norm 2 input).
    y2: Vec<f32>,
    /// The block's output.
    out: Vec<f32>,
    stats: [BatchStats; 2],
}

impl BlockSaved {
    fn recycle(self, pool: &BufferPool) {
        for buf in [self.y1, self.z1, self.y2, self.out] {
            pool.give(buf);
        }
    }
}

fn block_forward(
    pool: &BufferPool,
    b: &BlockShape,
    p: &[&[f32]],
    input: &[f32],
    eps: f64,
) -> BlockSaved {
    let (isa, c1, c2, bn) = (Isa::best(), b.conv1(), b.conv2(), b.bn());
    let mut y1 = pool.take(c1.y_len());
    conv2d_forward(isa, &c1, input, p[0], Epilogue::Bias(p[1]), &mut y1);
    let mut z1 = pool.take(c1.y_len());
    let s1 = bn_relu_train_forward(isa, &bn, &y1, p[2], p[3], eps, &mut z1);
    let mut y2 = pool.take(c2.y_len());
    conv2d_forward(isa, &c2, &z1, p[4], Epilogue::Bias(p[5]), &mut y2);
    let mut out = pool.take(c2.y_len());
    let s2 = bn_relu_train_forward(isa, &bn, &y2, p[6], p[7], eps, &mut out);
    BlockSaved {
        y1,
        z1,
        y2,
        out,
        stats: [s1, s2],
    }
}

/// The block's parameter gradients into `g` (8 pieces) and, with `need_dx`, its input's.
#[allow(clippy::too_many_arguments)]
fn block_backward(
    pool: &BufferPool,
    b: &BlockShape,
    p: &[&[f32]],
    input: &[f32],
    saved: &BlockSaved,
    d_out: &[f32],
    g: &mut [&mut [f32]],
    need_dx: bool,
) -> Result<Option<Vec<f32>>> {
    let (isa, c1, c2, bn) = (Isa::best(), b.conv1(), b.conv2(), b.bn());
    let BlockSaved {
        y1,
        z1,
        y2,
        stats: [s1, s2],
        ..
    } = saved;
    let [dw1, db1, dg1, dbe1, dw2, db2, dg2, dbe2] = g else {
        candle_core::bail!("{NAME}: a block has {BLOCK_PARAMS} parameter gradients")
    };
    let mut dy = pool.take(b.out_len());
    bn_relu_backward(isa, &bn, y2, d_out, p[6], p[7], s2, &mut dy, dg2, dbe2);
    conv2d_backward_weight(isa, &c2, z1, &dy, dw2, db2);
    let mut dz = pool.take(b.out_len());
    conv2d_backward_input(isa, &c2, &dy, p[4], &mut dz);
    bn_relu_backward(isa, &bn, y1, &dz, p[2], p[3], s1, &mut dy, dg1, dbe1);
    pool.give(dz);
    conv2d_backward_weight(isa, &c1, input, &dy, dw1, db1);
    let dx = need_dx.then(|| {
        let mut dx = pool.take(c1.x_len());
        conv2d_backward_input(isa, &c1, &dy, p[0], &mut dx);
        dx
    });
    pool.give(dy);
    Ok(dx)
}

/// Everything the backward needs.
struct Saved {
    /// `d1 .. u2`.
    blocks: [BlockSaved; BLOCKS],
    /// The inputs of `d2, d3, u1, u2` (pooled and concatenated tensors); `d1`'s is the op's.
    inputs: [Vec<f32>; BLOCKS - 1],
}

impl Saved {
    fn recycle(self, pool: &BufferPool) {
        for block in self.blocks {
            block.recycle(pool);
        }
        for buf in self.inputs {
            pool.give(buf);
        }
    }
}

/// The op. The forward leaves the saved state, and the batch statistics of the ten
/// batch-norms (in network order) in `stats` for the running-statistics update.
struct UNetTrain {
    shape: NetShape,
    eps: f64,
    pool: BufferPool,
    saved: Mutex<Option<Saved>>,
    stats: Arc<Mutex<Vec<BatchStats>>>,
}

impl Drop for UNetTrain {
    /// The graph is gone: its saved activations serve the next step.
    fn drop(&mut self) {
        let saved = self
            .saved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(saved) = saved {
            saved.recycle(&self.pool);
        }
    }
}

impl UNetTrain {
    fn check(&self, x: usize, packed: usize) -> Result<()> {
        let want: usize = param_sizes(&self.shape).iter().sum();
        if x != self.shape.input_len() || packed != want {
            candle_core::bail!(
                "{NAME}: input of {x} and {packed} parameters for {:?} ({want} expected)",
                self.shape
            )
        }
        Ok(())
    }
}

impl CustomOp2 for UNetTrain {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sp: &CpuStorage,
        lp: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, packed) = (slice_of(sx, lx, NAME)?, slice_of(sp, lp, NAME)?);
        self.check(x.len(), packed.len())?;
        let (isa, s, eps, pool) = (Isa::best(), self.shape, self.eps, &self.pool);
        let sizes = param_sizes(&s);
        let p = split(packed, &sizes);
        let blk = s.blocks();
        let c = s.base;
        let block = |i: usize, input: &[f32]| {
            block_forward(
                pool,
                &blk[i],
                &p[i * BLOCK_PARAMS..][..BLOCK_PARAMS],
                input,
                eps,
            )
        };
        let max_pool = |div: usize, ch: usize, src: &[f32]| {
            let ps = s.pool(div, ch);
            let mut out = pool.take(ps.planes * ps.h_out() * ps.w_out());
            max_pool2x2_forward(&ps, src, &mut out);
            out
        };
        let up_cat = |shape: UpCatShape, low: &[f32], skip: &[f32]| {
            let mut out = pool.take(shape.out_len());
            upsample_cat_forward(&shape, low, skip, &mut out);
            out
        };
        let d1 = block(0, x); // (B, c, H, W)
        let p1 = max_pool(1, c, &d1.out); // (B, c, H/2, W/2)
        let d2 = block(1, &p1); // (B, 2c, H/2, W/2)
        let p2 = max_pool(2, 2 * c, &d2.out); // (B, 2c, H/4, W/4)
        let d3 = block(2, &p2); // (B, 4c, H/4, W/4)
        let a1 = up_cat(s.up_cat(4, 4 * c, 2 * c), &d3.out, &d2.out); // (B, 6c, H/2, W/2)
        let u1 = block(3, &a1); // (B, 2c, H/2, W/2)
        let a2 = up_cat(s.up_cat(2, 2 * c, c), &u1.out, &d1.out); // (B, 3c, H, W)
        let u2 = block(4, &a2); // (B, c, H, W)
        let head = s.head();
        let mut logits = output(head.y_len());
        let (hw, hb) = (p[BLOCKS * BLOCK_PARAMS], p[BLOCKS * BLOCK_PARAMS + 1]);
        conv2d_forward(isa, &head, &u2.out, hw, Epilogue::Bias(hb), &mut logits); // (B, 1, H, W)
        let blocks = [d1, d2, d3, u1, u2];
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner) = blocks
            .iter()
            .flat_map(|b| b.stats.iter().cloned())
            .collect();
        let previous = self
            .saved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(Saved {
                blocks,
                inputs: [p1, p2, a1, a2],
            });
        if let Some(old) = previous {
            old.recycle(pool);
        }
        Ok((CpuStorage::F32(logits), (s.batch, 1, s.h, s.w).into()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        packed: &Tensor,
        _logits: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let guard = self.saved.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(saved) = guard.as_ref() else {
            candle_core::bail!("{NAME}: backward without forward")
        };
        let need_dx = x.track_op();
        let (dx, dp) = with_f32(x, NAME, |xv| {
            with_f32(packed, NAME, |pv| {
                with_f32(g, NAME, |gv| self.backward(xv, pv, gv, saved, need_dx))
            })
        })?;
        let dx = dx.map(|dx| cpu_tensor(dx, x.shape())).transpose()?;
        Ok((dx, Some(cpu_tensor(dp, packed.shape())?)))
    }
}

impl UNetTrain {
    /// `(dx if need_dx, d_packed)` from the logits' gradient `g`; intermediate gradients are
    /// freed as soon as they are used.
    fn backward(
        &self,
        x: &[f32],
        packed: &[f32],
        g: &[f32],
        saved: &Saved,
        need_dx: bool,
    ) -> Result<(Option<Vec<f32>>, Vec<f32>)> {
        let (isa, s, c, pool) = (Isa::best(), self.shape, self.shape.base, &self.pool);
        let sizes = param_sizes(&s);
        let p = split(packed, &sizes);
        let blk = s.blocks();
        let bp = |i: usize| &p[i * BLOCK_PARAMS..][..BLOCK_PARAMS];
        let Saved {
            blocks: [d1, d2, d3, u1, u2],
            inputs: [p1, p2, a1, a2],
        } = saved;
        let mut dp = output(packed.len());
        let dx = {
            let mut grads = split_mut(&mut dp, &sizes);
            let (block_grads, head_grads) = grads.split_at_mut(BLOCKS * BLOCK_PARAMS);
            // Popped from the back: u2 first, d1 last.
            let mut bg: Vec<&mut [&mut [f32]]> = block_grads.chunks_mut(BLOCK_PARAMS).collect();
            let mut next_grads = || bg.pop().unwrap_or_default();
            let head = s.head();
            let mut du2 = pool.take(head.x_len()); // (B, c, H, W)
            conv2d_backward_input(isa, &head, g, p[BLOCKS * BLOCK_PARAMS], &mut du2);
            if let [dw, db] = head_grads {
                conv2d_backward_weight(isa, &head, &u2.out, g, dw, db);
            }
            let block = |i: usize, input: &[f32], saved, d_out: &[f32], g, need_dx| {
                block_backward(pool, &blk[i], bp(i), input, saved, d_out, g, need_dx)
            };
            let da2 = block(4, a2, u2, &du2, next_grads(), true)?.unwrap_or_default();
            pool.give(du2);
            let (du1, mut dc1) = up_cat_backward(pool, &s.up_cat(2, 2 * c, c), &da2);
            pool.give(da2);
            let da1 = block(3, a1, u1, &du1, next_grads(), true)?.unwrap_or_default();
            pool.give(du1);
            let (dc3, mut dc2) = up_cat_backward(pool, &s.up_cat(4, 4 * c, 2 * c), &da1);
            pool.give(da1);
            let dp2 = block(2, p2, d3, &dc3, next_grads(), true)?.unwrap_or_default();
            pool.give(dc3);
            // c2 feeds both the pooling and the skip connection: add the pooling's share.
            max_pool2x2_backward_add(&s.pool(2, 2 * c), &d2.out, &dp2, &mut dc2);
            pool.give(dp2);
            let dp1 = block(1, p1, d2, &dc2, next_grads(), true)?.unwrap_or_default();
            pool.give(dc2);
            max_pool2x2_backward_add(&s.pool(1, c), &d1.out, &dp1, &mut dc1);
            pool.give(dp1);
            let dx = block(0, x, d1, &dc1, next_grads(), need_dx)?;
            pool.give(dc1);
            dx
        };
        Ok((dx, dp))
    }
}

/// The adjoint of `cat([up(low), skip])`: `(d_low, d_skip)` from the output's gradient.
fn up_cat_backward(pool: &BufferPool, shape: &UpCatShape, g: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut d_low = pool.take(shape.batch * shape.c_low * shape.h * shape.w);
    upsample_cat_backward_low(shape, g, &mut d_low);
    let plane = 4 * shape.h * shape.w;
    let per_image = (shape.c_low + shape.c_skip) * plane;
    let mut d_skip = pool.take(shape.batch * shape.c_skip * plane);
    for (b, dst) in d_skip.chunks_exact_mut(shape.c_skip * plane).enumerate() {
        dst.copy_from_slice(&g[b * per_image + shape.c_low * plane..][..shape.c_skip * plane]);
    }
    (d_low, d_skip)
}

/// The U-Net's training forward as one op, recorded for backward: `xs` `(B, 1, H, W)` and the
/// packed parameters (see [`param_sizes`]) → logits `(B, 1, H, W)`, and the batch statistics
/// of its ten batch-norms in network order (for the caller's running-statistics update).
pub fn unet_train_forward(
    xs: &Tensor,
    packed: &Tensor,
    base: usize,
    eps: f64,
    pool: &BufferPool,
) -> Result<(Tensor, Vec<BatchStats>)> {
    let (batch, _one, h, w) = xs.dims4()?;
    let stats = Arc::new(Mutex::new(Vec::new()));
    let op = UNetTrain {
        shape: NetShape { batch, base, h, w },
        eps,
        pool: pool.clone(),
        saved: Mutex::new(None),
        stats: stats.clone(),
    };
    let logits = xs.contiguous()?.apply_op2(&packed.contiguous()?, op)?;
    let stats = std::mem::take(&mut *stats.lock().unwrap_or_else(PoisonError::into_inner));
    Ok((logits, stats))
}
