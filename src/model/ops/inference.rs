//! The U-Net's eval-mode forward (evaluation, prediction, validation) as one candle op without
//! a backward node: every batch-norm folded into its convolution's epilogue, and the
//! intermediate activations in a buffer pool, so that repeated batches of one shape reuse mapped
//! memory (fresh outputs per layer cost about a quarter of a width-8 forward in page faults and
//! page clears).

use super::network::{NetShape, BLOCKS};
use super::output;
use crate::model::cpu::buffers::BufferPool;
use crate::model::cpu::conv::{conv2d_forward, Epilogue};
use crate::model::cpu::pool::max_pool2x2_forward;
use crate::model::cpu::simd::Isa;
use crate::model::cpu::upsample::upsample_cat_forward;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

const NAME: &str = "lungseg-unet-eval";

/// One convolution with an eval-mode batch-norm and ReLU folded in.
#[derive(Debug, Clone)]
pub struct FoldedConv {
    /// `(C_out, C_in, 3, 3)`, flattened.
    pub weight: Vec<f32>,
    /// Per output channel.
    pub scale: Vec<f32>,
    /// Per output channel.
    pub shift: Vec<f32>,
}

impl FoldedConv {
    fn epilogue(&self) -> Epilogue<'_> {
        Epilogue::ScaleShiftRelu {
            scale: &self.scale,
            shift: &self.shift,
        }
    }
}

/// The parameters of the eval-mode net: two folded convolutions per block (`d1, d2, d3, u1, u2`),
/// then the output convolution's weight and bias.
#[derive(Debug, Clone)]
pub struct EvalParams {
    /// `[conv 1, conv 2]` of each block.
    pub blocks: [[FoldedConv; 2]; BLOCKS],
    /// `(1, C, 1, 1)`, flattened.
    pub head_weight: Vec<f32>,
    /// One value.
    pub head_bias: Vec<f32>,
}

struct UNetEval {
    base: usize,
    params: EvalParams,
    pool: BufferPool,
}

impl CustomOp1 for UNetEval {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (batch, _one, h, w) = l.shape().dims4()?;
        let shape = NetShape {
            batch,
            base: self.base,
            h,
            w,
        };
        let x = super::slice_of(s, l, NAME)?;
        if x.len() != batch * h * w {
            candle_core::bail!(
                "{NAME}: the input must have one channel, got {:?}",
                l.dims()
            )
        }
        let logits = self.forward(&shape, x)?;
        Ok((CpuStorage::F32(logits), (batch, 1, h, w).into()))
    }
}

impl UNetEval {
    /// `(B, 1, H, W)` → logits `(B, 1, H, W)`, intermediates from and back to the pool.
    fn forward(&self, s: &NetShape, x: &[f32]) -> Result<Vec<f32>> {
        let (isa, pool, c) = (Isa::best(), &self.pool, s.base);
        let blk = s.blocks();
        let block = |i: usize, input: &[f32]| -> Result<Vec<f32>> {
            let [f1, f2] = &self.params.blocks[i];
            let (c1, c2) = (blk[i].conv1(), blk[i].conv2());
            for (conv, f) in [(&c1, f1), (&c2, f2)] {
                let n = conv.c_out;
                if f.weight.len() != conv.w_len() || f.scale.len() != n || f.shift.len() != n {
                    candle_core::bail!("{NAME}: block {i} parameters do not fit {conv:?}")
                }
            }
            let mut mid = pool.take(c1.y_len());
            conv2d_forward(isa, &c1, input, &f1.weight, f1.epilogue(), &mut mid);
            let mut out = pool.take(c2.y_len());
            conv2d_forward(isa, &c2, &mid, &f2.weight, f2.epilogue(), &mut out);
            pool.give(mid);
            Ok(out)
        };
        let max_pool = |div: usize, ch: usize, src: &[f32]| {
            let ps = s.pool(div, ch);
            let mut out = pool.take(ps.planes * ps.h_out() * ps.w_out());
            max_pool2x2_forward(&ps, src, &mut out);
            out
        };
        let up_cat = |div: usize, (c_low, c_skip): (usize, usize), low: &[f32], skip: &[f32]| {
            let shape = s.up_cat(div, c_low, c_skip);
            let mut out = pool.take(shape.out_len());
            upsample_cat_forward(&shape, low, skip, &mut out);
            out
        };
        let d1 = block(0, x)?; // (B, c, H, W)
        let p1 = max_pool(1, c, &d1); // (B, c, H/2, W/2)
        let d2 = block(1, &p1)?; // (B, 2c, H/2, W/2)
        pool.give(p1);
        let p2 = max_pool(2, 2 * c, &d2); // (B, 2c, H/4, W/4)
        let d3 = block(2, &p2)?; // (B, 4c, H/4, W/4)
        pool.give(p2);
        let a1 = up_cat(4, (4 * c, 2 * c), &d3, &d2); // (B, 6c, H/2, W/2)
        pool.give(d3);
        pool.give(d2);
        let u1 = block(3, &a1)?; // (B, 2c, H/2, W/2)
        pool.give(a1);
        let a2 = up_cat(2, (2 * c, c), &u1, &d1); // (B, 3c, H, W)
        pool.give(u1);
        pool.give(d1);
        let u2 = block(4, &a2)?; // (B, c, H, W)
        pool.give(a2);
        let head = s.head();
        let p = &self.params;
        if p.head_weight.len() != head.w_len() || p.head_bias.len() != 1 {
            candle_core::bail!("{NAME}: output convolution parameters do not fit {head:?}")
        }
        let mut logits = output(head.y_len());
        let epilogue = Epilogue::Bias(&p.head_bias);
        conv2d_forward(isa, &head, &u2, &p.head_weight, epilogue, &mut logits); // (B, 1, H, W)
        pool.give(u2);
        Ok(logits)
    }
}

/// The eval-mode U-Net on `xs` `(B, 1, H, W)` (H and W multiples of 4) → logits
/// `(B, 1, H, W)`, recording no backward node.
pub fn unet_eval_forward(
    xs: &Tensor,
    base: usize,
    params: EvalParams,
    pool: &BufferPool,
) -> Result<Tensor> {
    let op = UNetEval {
        base,
        params,
        pool: pool.clone(),
    };
    xs.contiguous()?.apply_op1_no_bwd(&op)
}
