//! The U-Net's whole training pass, forward and backward, as one candle op over a device's
//! kernels ([`NetKernels`]: the CPU's in `network_cpu`, CUDA's in `model::gpu`), written once
//! for both, so that no activation gradient goes through candle's `GradStore`: there, every
//! autograd edge costs a zero-filled tensor plus an add (run on candle's own spinning thread
//! pool, which competes with rayon's for the cores), and a tensor with two consumers one more
//! add. Inside the op the skip connections' gradients are summed by the kernels themselves
//! (the pooling adjoint adds into the skip's share). The saved activations live as long as the
//! op, as every candle node keeps its inputs (a graph may be differentiated more than once).
//!
//! The 42 trainable tensors travel as one packed vector (`Tensor::cat` of the flattened
//! parameters, in [`param_sizes`] order), so that their gradients reach candle as one tensor
//! that `cat`'s own backward splits.

use super::network_cpu::CpuNet;
use super::{cpu_tensor, slice_of, with_f32};
use crate::model::cpu::bn_relu::{BatchStats, BnShape};
use crate::model::cpu::buffers::BufferPool;
use crate::model::cpu::conv::ConvShape;
use crate::model::cpu::pool::PoolShape;
use crate::model::cpu::upsample::UpCatShape;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use std::borrow::{Borrow, BorrowMut};
use std::ops::Range;
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

/// The length of the packed running statistics: the mean then the variance of each of the ten
/// batch-norms, in network order (`d1.bn1, d1.bn2, d2.bn1, …, u2.bn2`).
pub fn running_len(shape: &NetShape) -> usize {
    shape.blocks().iter().map(|b| 4 * b.c_out).sum()
}

/// Where each trainable tensor lies in the packed vector: `offsets[i]..offsets[i + 1]` is
/// tensor `i` of [`param_sizes`].
fn param_offsets(shape: &NetShape) -> Vec<usize> {
    let mut offsets = vec![0];
    for n in param_sizes(shape) {
        let last = offsets.last().copied().unwrap_or(0);
        offsets.push(last + n);
    }
    offsets
}

/// The packed ranges of one layer pair: a convolution's weight and bias, or a batch-norm's
/// weight (gamma) and bias (beta), which [`param_sizes`] keeps adjacent.
fn pair(offsets: &[usize], first: usize) -> Range<usize> {
    offsets[first]..offsets[first + 2]
}

/// What the U-Net's training pass needs from a device: buffers and the layer kernels. The
/// packed parameters and their gradient are one buffer each, addressed by [`param_offsets`]
/// ranges; every kernel writes every element of its outputs.
pub(crate) trait NetKernels {
    /// The elements a kernel reads or writes (`[f32]` on the CPU).
    type Slice: ?Sized;
    /// An owned buffer.
    type Buf: Borrow<Self::Slice> + BorrowMut<Self::Slice>;
    /// A batch-norm's batch statistics, kept for its backward and the running statistics.
    type Stats: Clone;

    /// A buffer of `len` elements, contents unspecified.
    fn take(&self, len: usize) -> Result<Self::Buf>;
    /// Returns a buffer for reuse.
    fn give(&self, buf: Self::Buf);
    /// `y = conv(x, w) + b` with `wb` the weight then the bias in `p`.
    fn conv_forward(
        &self,
        s: &ConvShape,
        x: &Self::Slice,
        p: &Self::Slice,
        wb: Range<usize>,
        y: &mut Self::Slice,
    ) -> Result<()>;
    /// `dx` from `dy` and the weight at `wb`'s start in `p`.
    fn conv_backward_input(
        &self,
        s: &ConvShape,
        dy: &Self::Slice,
        p: &Self::Slice,
        wb: Range<usize>,
        dx: &mut Self::Slice,
    ) -> Result<()>;
    /// The weight and bias gradients into `dp[wb]`.
    fn conv_backward_weight(
        &self,
        s: &ConvShape,
        x: &Self::Slice,
        dy: &Self::Slice,
        dp: &mut Self::Slice,
        wb: Range<usize>,
    ) -> Result<()>;
    /// `z = relu(batchnorm(y))` with the batch's statistics and gamma, beta at `affine` in `p`.
    #[allow(clippy::too_many_arguments)]
    fn bn_relu_forward(
        &self,
        s: &BnShape,
        y: &Self::Slice,
        p: &Self::Slice,
        affine: Range<usize>,
        eps: f64,
        z: &mut Self::Slice,
    ) -> Result<Self::Stats>;
    /// `dy` from `dz`, and the gamma and beta gradients into `dp[affine]`.
    #[allow(clippy::too_many_arguments)]
    fn bn_relu_backward(
        &self,
        s: &BnShape,
        y: &Self::Slice,
        dz: &Self::Slice,
        p: &Self::Slice,
        affine: Range<usize>,
        stats: &Self::Stats,
        dy: &mut Self::Slice,
        dp: &mut Self::Slice,
    ) -> Result<()>;
    /// `z = relu(batchnorm(y))` with running statistics: `running[stats]` holds the mean
    /// then the variance of the `C` channels.
    #[allow(clippy::too_many_arguments)]
    fn bn_relu_eval(
        &self,
        s: &BnShape,
        y: &Self::Slice,
        p: &Self::Slice,
        affine: Range<usize>,
        running: &Self::Slice,
        stats: Range<usize>,
        eps: f64,
        z: &mut Self::Slice,
    ) -> Result<()>;
    /// 2×2 max-pooling.
    fn max_pool_forward(&self, s: &PoolShape, x: &Self::Slice, y: &mut Self::Slice) -> Result<()>;
    /// The pooling's gradient added into `dx`.
    fn max_pool_backward_add(
        &self,
        s: &PoolShape,
        x: &Self::Slice,
        dy: &Self::Slice,
        dx: &mut Self::Slice,
    ) -> Result<()>;
    /// `out = cat([up(low), skip], 1)`.
    fn up_cat_forward(
        &self,
        s: &UpCatShape,
        low: &Self::Slice,
        skip: &Self::Slice,
        out: &mut Self::Slice,
    ) -> Result<()>;
    /// The adjoint of [`NetKernels::up_cat_forward`].
    fn up_cat_backward(
        &self,
        s: &UpCatShape,
        g: &Self::Slice,
        d_low: &mut Self::Slice,
        d_skip: &mut Self::Slice,
    ) -> Result<()>;
}

/// What a `DoubleConv`'s backward needs from its forward (its input is kept by the caller).
pub(crate) struct BlockSaved<K: NetKernels> {
    /// Conv 1 output (batch-norm 1 input).
    y1: K::Buf,
    /// Batch-norm 1 + ReLU output (conv 2 input).
    z1: K::Buf,
    /// Conv 2 output (batch-norm 2 input).
    y2: K::Buf,
    /// The block's output.
    out: K::Buf,
    /// The two batch-norms' batch statistics (none in evaluation mode).
    stats: Option<[K::Stats; 2]>,
}

impl<K: NetKernels> BlockSaved<K> {
    fn recycle(self, k: &K) {
        for buf in [self.y1, self.z1, self.y2, self.out] {
            k.give(buf);
        }
    }
}

/// The batch-norms' statistics: the batch's own (training), or the running ones (evaluation),
/// `(mean, var)` of each batch-norm packed in network order.
pub(crate) enum BnMode<'a, S: ?Sized> {
    Batch,
    Running(&'a S),
}

/// One block's layers: its shape, its first parameter's index in [`param_sizes`] and its
/// first batch-norm's range in the packed running statistics.
struct Block<'a, K: NetKernels> {
    k: &'a K,
    shape: BlockShape,
    offsets: &'a [usize],
    first: usize,
    running: usize,
    eps: f64,
}

impl<K: NetKernels> Block<'_, K> {
    /// Batch-norm `j` (0 or 1) of the block with ReLU, from `y` into `z`.
    fn bn_relu(
        &self,
        j: usize,
        p: &K::Slice,
        mode: &BnMode<'_, K::Slice>,
        y: &K::Slice,
        z: &mut K::Slice,
    ) -> Result<Option<K::Stats>> {
        let (bn, affine) = (self.shape.bn(), pair(self.offsets, self.first + 2 + 4 * j));
        match mode {
            BnMode::Batch => Ok(Some(
                self.k.bn_relu_forward(&bn, y, p, affine, self.eps, z)?,
            )),
            BnMode::Running(running) => {
                let start = self.running + 2 * bn.channels * j;
                let stats = start..start + 2 * bn.channels;
                self.k
                    .bn_relu_eval(&bn, y, p, affine, running, stats, self.eps, z)?;
                Ok(None)
            }
        }
    }

    fn forward(
        &self,
        p: &K::Slice,
        input: &K::Slice,
        mode: &BnMode<'_, K::Slice>,
    ) -> Result<BlockSaved<K>> {
        let (k, b, o, i) = (self.k, &self.shape, self.offsets, self.first);
        let (c1, c2) = (b.conv1(), b.conv2());
        let mut y1 = k.take(c1.y_len())?;
        k.conv_forward(&c1, input, p, pair(o, i), y1.borrow_mut())?;
        let mut z1 = k.take(c1.y_len())?;
        let s1 = self.bn_relu(0, p, mode, y1.borrow(), z1.borrow_mut())?;
        let mut y2 = k.take(c2.y_len())?;
        k.conv_forward(&c2, z1.borrow(), p, pair(o, i + 4), y2.borrow_mut())?;
        let mut out = k.take(c2.y_len())?;
        let s2 = self.bn_relu(1, p, mode, y2.borrow(), out.borrow_mut())?;
        Ok(BlockSaved {
            y1,
            z1,
            y2,
            out,
            stats: s1.zip(s2).map(|(a, b)| [a, b]),
        })
    }

    /// The block's parameter gradients into `dp` and, with `need_dx`, its input's.
    fn backward(
        &self,
        p: &K::Slice,
        input: &K::Slice,
        saved: &BlockSaved<K>,
        d_out: &K::Slice,
        dp: &mut K::Slice,
        need_dx: bool,
    ) -> Result<Option<K::Buf>> {
        let (k, b, o, i) = (self.k, &self.shape, self.offsets, self.first);
        let (c1, c2, bn) = (b.conv1(), b.conv2(), b.bn());
        let Some([s1, s2]) = &saved.stats else {
            candle_core::bail!("{NAME}: backward of an evaluation-mode forward")
        };
        let mut dy = k.take(b.out_len())?;
        let (y1, z1, y2) = (saved.y1.borrow(), saved.z1.borrow(), saved.y2.borrow());
        k.bn_relu_backward(&bn, y2, d_out, p, pair(o, i + 6), s2, dy.borrow_mut(), dp)?;
        k.conv_backward_weight(&c2, z1, dy.borrow(), dp, pair(o, i + 4))?;
        let mut dz = k.take(b.out_len())?;
        k.conv_backward_input(&c2, dy.borrow(), p, pair(o, i + 4), dz.borrow_mut())?;
        k.bn_relu_backward(
            &bn,
            y1,
            dz.borrow(),
            p,
            pair(o, i + 2),
            s1,
            dy.borrow_mut(),
            dp,
        )?;
        k.give(dz);
        k.conv_backward_weight(&c1, input, dy.borrow(), dp, pair(o, i))?;
        let dx = if need_dx {
            let mut dx = k.take(c1.x_len())?;
            k.conv_backward_input(&c1, dy.borrow(), p, pair(o, i), dx.borrow_mut())?;
            Some(dx)
        } else {
            None
        };
        k.give(dy);
        Ok(dx)
    }
}

/// Everything the backward needs.
pub(crate) struct Saved<K: NetKernels> {
    /// `d1 .. u2`.
    blocks: [BlockSaved<K>; BLOCKS],
    /// The inputs of `d2, d3, u1, u2` (pooled and concatenated tensors); `d1`'s is the op's.
    inputs: [K::Buf; BLOCKS - 1],
}

impl<K: NetKernels> Saved<K> {
    pub(crate) fn recycle(self, k: &K) {
        for block in self.blocks {
            block.recycle(k);
        }
        for buf in self.inputs {
            k.give(buf);
        }
    }

    /// The ten batch-norms' batch statistics in network order.
    pub(crate) fn stats(&self) -> Vec<K::Stats> {
        self.blocks
            .iter()
            .flat_map(|b| b.stats.iter().flatten().cloned())
            .collect()
    }
}

/// The network's passes on one device's kernels.
pub(crate) struct Net<'a, K: NetKernels> {
    pub(crate) k: &'a K,
    pub(crate) shape: NetShape,
    pub(crate) eps: f64,
}

impl<K: NetKernels> Net<'_, K> {
    fn block<'b>(&'b self, i: usize, offsets: &'b [usize]) -> Block<'b, K> {
        let blocks = self.shape.blocks();
        Block {
            k: self.k,
            shape: blocks[i],
            offsets,
            first: i * BLOCK_PARAMS,
            // Two batch-norms of `2·C_out` running values per earlier block.
            running: blocks[..i].iter().map(|b| 4 * b.c_out).sum(),
            eps: self.eps,
        }
    }

    /// Checks the shape (at least one image, sides positive multiples of 4, as the two
    /// poolings and upsamplings need) and the input's and packed parameters' lengths.
    pub(crate) fn check(&self, x: usize, packed: usize) -> Result<()> {
        let s = self.shape;
        if s.batch == 0
            || s.base == 0
            || s.h == 0
            || s.w == 0
            || !s.h.is_multiple_of(4)
            || !s.w.is_multiple_of(4)
        {
            candle_core::bail!("{NAME}: {s:?} needs at least one image, with sides that are positive multiples of 4")
        }
        let want: usize = param_sizes(&self.shape).iter().sum();
        if x != self.shape.input_len() || packed != want {
            candle_core::bail!(
                "{NAME}: input of {x} and {packed} parameters for {:?} ({want} expected)",
                self.shape
            )
        }
        Ok(())
    }

    /// Logits `(B, 1, H, W)` of `x` `(B, 1, H, W)` in training mode, and what the backward
    /// needs.
    pub(crate) fn forward(&self, x: &K::Slice, p: &K::Slice) -> Result<(K::Buf, Saved<K>)> {
        self.forward_with(x, p, &BnMode::Batch)
    }

    /// Logits `(B, 1, H, W)` of `x` in evaluation mode, with the batch-norms' `running`
    /// statistics (mean then variance of each, in network order; see [`running_len`]).
    pub(crate) fn forward_eval(
        &self,
        x: &K::Slice,
        p: &K::Slice,
        running: &K::Slice,
    ) -> Result<K::Buf> {
        let (logits, saved) = self.forward_with(x, p, &BnMode::Running(running))?;
        saved.recycle(self.k);
        Ok(logits)
    }

    fn forward_with(
        &self,
        x: &K::Slice,
        p: &K::Slice,
        mode: &BnMode<'_, K::Slice>,
    ) -> Result<(K::Buf, Saved<K>)> {
        let (k, s, c) = (self.k, self.shape, self.shape.base);
        let o = param_offsets(&s);
        let max_pool = |div: usize, ch: usize, src: &K::Buf| -> Result<K::Buf> {
            let ps = s.pool(div, ch);
            let mut out = k.take(ps.planes * ps.h_out() * ps.w_out())?;
            k.max_pool_forward(&ps, src.borrow(), out.borrow_mut())?;
            Ok(out)
        };
        let up_cat = |shape: UpCatShape, low: &K::Buf, skip: &K::Buf| -> Result<K::Buf> {
            let mut out = k.take(shape.out_len())?;
            k.up_cat_forward(&shape, low.borrow(), skip.borrow(), out.borrow_mut())?;
            Ok(out)
        };
        let d1 = self.block(0, &o).forward(p, x, mode)?; // (B, c, H, W)
        let p1 = max_pool(1, c, &d1.out)?; // (B, c, H/2, W/2)
        let d2 = self.block(1, &o).forward(p, p1.borrow(), mode)?; // (B, 2c, H/2, W/2)
        let p2 = max_pool(2, 2 * c, &d2.out)?; // (B, 2c, H/4, W/4)
        let d3 = self.block(2, &o).forward(p, p2.borrow(), mode)?; // (B, 4c, H/4, W/4)
        let a1 = up_cat(s.up_cat(4, 4 * c, 2 * c), &d3.out, &d2.out)?; // (B, 6c, H/2, W/2)
        let u1 = self.block(3, &o).forward(p, a1.borrow(), mode)?; // (B, 2c, H/2, W/2)
        let a2 = up_cat(s.up_cat(2, 2 * c, c), &u1.out, &d1.out)?; // (B, 3c, H, W)
        let u2 = self.block(4, &o).forward(p, a2.borrow(), mode)?; // (B, c, H, W)
        let head = s.head();
        let mut logits = k.take(head.y_len())?;
        let wb = pair(&o, BLOCKS * BLOCK_PARAMS);
        k.conv_forward(&head, u2.out.borrow(), p, wb, logits.borrow_mut())?; // (B, 1, H, W)
        let saved = Saved {
            blocks: [d1, d2, d3, u1, u2],
            inputs: [p1, p2, a1, a2],
        };
        Ok((logits, saved))
    }

    /// `(dx if need_dx, d_packed)` from the logits' gradient `g`; intermediate gradients are
    /// returned to the pool as soon as they are used.
    pub(crate) fn backward(
        &self,
        x: &K::Slice,
        p: &K::Slice,
        g: &K::Slice,
        saved: &Saved<K>,
        need_dx: bool,
    ) -> Result<(Option<K::Buf>, K::Buf)> {
        let (k, s, c) = (self.k, self.shape, self.shape.base);
        let o = param_offsets(&s);
        let Saved {
            blocks: [d1, d2, d3, u1, u2],
            inputs: [p1, p2, a1, a2],
        } = saved;
        let mut dp = k.take(o.last().copied().unwrap_or(0))?;
        let head = s.head();
        let wb = pair(&o, BLOCKS * BLOCK_PARAMS);
        let mut du2 = k.take(head.x_len())?; // (B, c, H, W)
        k.conv_backward_input(&head, g, p, wb.clone(), du2.borrow_mut())?;
        k.conv_backward_weight(&head, u2.out.borrow(), g, dp.borrow_mut(), wb)?;
        let up_cat_backward = |shape: UpCatShape, g: K::Buf| -> Result<(K::Buf, K::Buf)> {
            let mut d_low = k.take(shape.batch * shape.c_low * shape.h * shape.w)?;
            let mut d_skip = k.take(shape.batch * shape.c_skip * 4 * shape.h * shape.w)?;
            k.up_cat_backward(&shape, g.borrow(), d_low.borrow_mut(), d_skip.borrow_mut())?;
            k.give(g);
            Ok((d_low, d_skip))
        };
        let mut block = |i: usize, input: &K::Buf, saved, d_out: K::Buf| -> Result<K::Buf> {
            let dx = self.block(i, &o).backward(
                p,
                input.borrow(),
                saved,
                d_out.borrow(),
                dp.borrow_mut(),
                true,
            )?;
            k.give(d_out);
            dx.ok_or_else(|| candle_core::Error::Msg(format!("{NAME}: no input gradient")))
        };
        let da2 = block(4, a2, u2, du2)?;
        let (du1, mut dc1) = up_cat_backward(s.up_cat(2, 2 * c, c), da2)?;
        let da1 = block(3, a1, u1, du1)?;
        let (dc3, mut dc2) = up_cat_backward(s.up_cat(4, 4 * c, 2 * c), da1)?;
        let dp2 = block(2, p2, d3, dc3)?;
        // c2 feeds both the pooling and the skip connection: add the pooling's share.
        k.max_pool_backward_add(
            &s.pool(2, 2 * c),
            d2.out.borrow(),
            dp2.borrow(),
            dc2.borrow_mut(),
        )?;
        k.give(dp2);
        let dp1 = block(1, p1, d2, dc2)?;
        k.max_pool_backward_add(
            &s.pool(1, c),
            d1.out.borrow(),
            dp1.borrow(),
            dc1.borrow_mut(),
        )?;
        k.give(dp1);
        let dx = self
            .block(0, &o)
            .backward(p, x, d1, dc1.borrow(), dp.borrow_mut(), need_dx)?;
        k.give(dc1);
        Ok((dx, dp))
    }
}

/// The batch statistics of the ten batch-norms of a training forward, in network order, for
/// the caller's running-statistics update.
pub enum NetStats {
    /// CPU: plain vectors.
    Host(Vec<BatchStats>),
    /// CUDA: `5·C` floats per batch-norm (see `model::gpu`).
    #[cfg(feature = "cudnn")]
    Device(Vec<crate::model::gpu::DeviceStats>),
}

/// What the op keeps between forward and backward, on the device it ran on.
enum SavedOn {
    Host(Saved<CpuNet>),
    #[cfg(feature = "cudnn")]
    Device(
        Saved<crate::model::gpu::CudaNet>,
        crate::model::gpu::CudaNet,
    ),
}

/// The op. The forward keeps the saved state, and leaves the batch statistics of the ten
/// batch-norms in `stats` for the running-statistics update.
struct UNetTrain {
    shape: NetShape,
    eps: f64,
    cpu: CpuNet,
    saved: Mutex<Option<SavedOn>>,
    stats: Arc<Mutex<Option<NetStats>>>,
}

impl Drop for UNetTrain {
    /// The graph is gone: its saved activations serve the next step.
    fn drop(&mut self) {
        let saved = self
            .saved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match saved {
            Some(SavedOn::Host(saved)) => saved.recycle(&self.cpu),
            #[cfg(feature = "cudnn")]
            Some(SavedOn::Device(saved, k)) => saved.recycle(&k),
            None => {}
        }
    }
}

impl UNetTrain {
    fn net<'a, K: NetKernels>(&self, k: &'a K) -> Net<'a, K> {
        Net {
            k,
            shape: self.shape,
            eps: self.eps,
        }
    }

    /// Keeps `saved` for the backward (recycling an earlier forward's) and publishes `stats`.
    fn keep(&self, saved: SavedOn, stats: NetStats) {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner) = Some(stats);
        let previous = self
            .saved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(saved);
        match previous {
            Some(SavedOn::Host(old)) => old.recycle(&self.cpu),
            #[cfg(feature = "cudnn")]
            Some(SavedOn::Device(old, k)) => old.recycle(&k),
            None => {}
        }
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
        let net = self.net(&self.cpu);
        net.check(x.len(), packed.len())?;
        let (logits, saved) = net.forward(x, packed)?;
        let stats = NetStats::Host(saved.stats());
        self.keep(SavedOn::Host(saved), stats);
        let s = self.shape;
        Ok((CpuStorage::F32(logits), (s.batch, 1, s.h, s.w).into()))
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        sx: &candle_core::CudaStorage,
        lx: &Layout,
        sp: &candle_core::CudaStorage,
        lp: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let k = crate::model::gpu::CudaNet::for_storage(sx)?;
        let s = self.shape;
        k.reserve_for(&[0, s.batch, s.base, s.h, s.w]);
        let (x, packed) = (k.input(sx, lx)?, k.input(sp, lp)?);
        let net = self.net(&k);
        net.check(x.len(), packed.len())?;
        let (logits, saved) = net.forward(&x, &packed)?;
        let stats = NetStats::Device(saved.stats());
        let logits = k.storage(logits);
        self.keep(SavedOn::Device(saved, k), stats);
        let s = self.shape;
        Ok((logits, (s.batch, 1, s.h, s.w).into()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        packed: &Tensor,
        _logits: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let guard = self.saved.lock().unwrap_or_else(PoisonError::into_inner);
        let need_dx = x.track_op();
        match guard.as_ref() {
            None => candle_core::bail!("{NAME}: backward without forward"),
            Some(SavedOn::Host(saved)) => {
                let net = self.net(&self.cpu);
                let (dx, dp) = with_f32(x, NAME, |xv| {
                    with_f32(packed, NAME, |pv| {
                        with_f32(g, NAME, |gv| net.backward(xv, pv, gv, saved, need_dx))
                    })
                })?;
                let dx = dx.map(|dx| cpu_tensor(dx, x.shape())).transpose()?;
                Ok((dx, Some(cpu_tensor(dp, packed.shape())?)))
            }
            #[cfg(feature = "cudnn")]
            Some(SavedOn::Device(saved, k)) => {
                let net = self.net(k);
                let (dx, dp) = k.with_tensor(x, |xv| {
                    k.with_tensor(packed, |pv| {
                        k.with_tensor(g, |gv| net.backward(xv, pv, gv, saved, need_dx))
                    })
                })?;
                let dx = dx.map(|dx| k.tensor(dx, x.shape())).transpose()?;
                Ok((dx, Some(k.tensor(dp, packed.shape())?)))
            }
        }
    }
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
) -> Result<(Tensor, NetStats)> {
    let (batch, _one, h, w) = xs.dims4()?;
    let stats = Arc::new(Mutex::new(None));
    let op = UNetTrain {
        shape: NetShape { batch, base, h, w },
        eps,
        cpu: CpuNet::new(pool.clone()),
        saved: Mutex::new(None),
        stats: stats.clone(),
    };
    let logits = xs.contiguous()?.apply_op2(&packed.contiguous()?, op)?;
    let stats = stats.lock().unwrap_or_else(PoisonError::into_inner).take();
    let stats = stats.ok_or_else(|| candle_core::Error::Msg(format!("{NAME}: no statistics")))?;
    Ok((logits, stats))
}

/// The U-Net's evaluation-mode forward as one op on the [`NetKernels`] path, without a backward
/// node: CUDA's evaluation forward (the CPU's, with every batch-norm folded into its
/// convolution, is `super::inference`; this op also runs on the CPU, where the tests check it).
struct UNetEvalNet {
    base: usize,
    eps: f64,
    cpu: CpuNet,
}

impl UNetEvalNet {
    fn net<'a, K: NetKernels>(&self, k: &'a K, l: &Layout) -> Result<Net<'a, K>> {
        let (batch, _one, h, w) = l.shape().dims4()?;
        let base = self.base;
        Ok(Net {
            k,
            shape: NetShape { batch, base, h, w },
            eps: self.eps,
        })
    }

    fn check_running(shape: &NetShape, running: usize) -> Result<()> {
        let want = running_len(shape);
        if running != want {
            candle_core::bail!("{NAME}: {running} running statistics, {want} expected")
        }
        Ok(())
    }
}

impl CustomOp3 for UNetEvalNet {
    fn name(&self) -> &'static str {
        "lungseg-unet-eval-net"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sp: &CpuStorage,
        lp: &Layout,
        sr: &CpuStorage,
        lr: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let net = self.net(&self.cpu, lx)?;
        let (x, p, r) = (
            slice_of(sx, lx, NAME)?,
            slice_of(sp, lp, NAME)?,
            slice_of(sr, lr, NAME)?,
        );
        net.check(x.len(), p.len())?;
        Self::check_running(&net.shape, r.len())?;
        Ok((
            CpuStorage::F32(net.forward_eval(x, p, r)?),
            lx.shape().clone(),
        ))
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        sx: &candle_core::CudaStorage,
        lx: &Layout,
        sp: &candle_core::CudaStorage,
        lp: &Layout,
        sr: &candle_core::CudaStorage,
        lr: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let k = crate::model::gpu::CudaNet::for_storage(sx)?;
        let net = self.net(&k, lx)?;
        let s = net.shape;
        k.reserve_for(&[1, s.batch, s.base, s.h, s.w]);
        let (x, p, r) = (k.input(sx, lx)?, k.input(sp, lp)?, k.input(sr, lr)?);
        net.check(x.len(), p.len())?;
        Self::check_running(&net.shape, r.len())?;
        Ok((k.storage(net.forward_eval(&x, &p, &r)?), lx.shape().clone()))
    }
}

/// The U-Net's evaluation-mode forward as one op without a backward node: `xs` `(B, 1, H, W)`,
/// the packed parameters ([`param_sizes`]) and the packed running statistics ([`running_len`])
/// → logits `(B, 1, H, W)`.
pub fn unet_eval_forward_packed(
    xs: &Tensor,
    packed: &Tensor,
    running: &Tensor,
    base: usize,
    eps: f64,
    pool: &BufferPool,
) -> Result<Tensor> {
    let op = UNetEvalNet {
        base,
        eps,
        cpu: CpuNet::new(pool.clone()),
    };
    xs.contiguous()?
        .apply_op3_no_bwd(&packed.contiguous()?, &running.contiguous()?, &op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Sides the two poolings cannot halve twice, and empty batches, are errors before any
    /// kernel runs (on CUDA a mismatched buffer would be read out of bounds, not caught).
    #[test]
    fn shapes_the_poolings_cannot_halve_are_refused() -> Result<()> {
        let pool = BufferPool::default();
        for (b, h, w) in [(1, 30, 32), (1, 32, 6), (0, 16, 16)] {
            let shape = NetShape {
                batch: b,
                base: 2,
                h,
                w,
            };
            let n: usize = param_sizes(&shape).iter().sum();
            let x = Tensor::zeros((b, 1, h, w), candle_core::DType::F32, &Device::Cpu)?;
            let p = Tensor::zeros(n, candle_core::DType::F32, &Device::Cpu)?;
            let err = match unet_train_forward(&x, &p, 2, 1e-5, &pool) {
                Ok(_) => panic!("{b}x{h}x{w} was accepted"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains("multiples of 4"), "{err}");
            let r = Tensor::zeros(running_len(&shape), candle_core::DType::F32, &Device::Cpu)?;
            assert!(unet_eval_forward_packed(&x, &p, &r, 2, 1e-5, &pool).is_err());
        }
        Ok(())
    }
}
