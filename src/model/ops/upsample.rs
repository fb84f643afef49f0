//! The decoder's `cat([upsample_bilinear2x(low), skip], 1)` as one candle op over
//! [`crate::model::cpu::upsample`].

use super::{cpu_tensor, dims4, fused_applies, output, slice_of, with_f32};
use crate::model::bilinear::upsample_bilinear2x;
use crate::model::cpu::upsample::{upsample_cat_backward_low, upsample_cat_forward, UpCatShape};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

const NAME: &str = "lungseg-upsample-cat";

fn up_cat_shape(low: &Layout, skip: &Layout) -> Result<UpCatShape> {
    let (batch, c_low, h, w) = dims4(low)?;
    let (b2, c_skip, h2, w2) = dims4(skip)?;
    if b2 != batch || h2 != 2 * h || w2 != 2 * w {
        candle_core::bail!(
            "{NAME}: low {:?} and skip {:?} disagree",
            low.dims(),
            skip.dims()
        )
    }
    Ok(UpCatShape {
        batch,
        c_low,
        c_skip,
        h,
        w,
    })
}

struct UpsampleCat;

impl CustomOp2 for UpsampleCat {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        sl: &CpuStorage,
        ll: &Layout,
        ss: &CpuStorage,
        ls: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let s = up_cat_shape(ll, ls)?;
        let mut out = output(s.out_len());
        upsample_cat_forward(
            &s,
            slice_of(sl, ll, NAME)?,
            slice_of(ss, ls, NAME)?,
            &mut out,
        );
        let dims = (s.batch, s.c_low + s.c_skip, 2 * s.h, 2 * s.w);
        Ok((CpuStorage::F32(out), dims.into()))
    }

    fn bwd(
        &self,
        low: &Tensor,
        skip: &Tensor,
        _out: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let s = up_cat_shape(low.layout(), skip.layout())?;
        let mut d_low = output(low.elem_count());
        with_f32(g, NAME, |gv| {
            upsample_cat_backward_low(&s, gv, &mut d_low);
            Ok(())
        })?;
        // The skip's gradient is its channels of `g`, as a view.
        let d_skip = g.narrow(1, s.c_low, s.c_skip)?;
        Ok((Some(cpu_tensor(d_low, low.shape())?), Some(d_skip)))
    }
}

/// candle's composition: the differentiable bilinear upsampler, then `Tensor::cat`.
pub fn upsample_cat_reference(low: &Tensor, skip: &Tensor) -> Result<Tensor> {
    Tensor::cat(&[&upsample_bilinear2x(low)?, skip], 1)
}

/// `cat([upsample_bilinear2x(low), skip], 1)`; `train` records the backward node.
///
/// # Shapes
/// `low`: `(B, C_low, h, w)`, `skip`: `(B, C_skip, 2h, 2w)` → `(B, C_low + C_skip, 2h, 2w)`.
pub fn upsample_cat(low: &Tensor, skip: &Tensor, train: bool) -> Result<Tensor> {
    if !fused_applies(low) {
        let out = upsample_cat_reference(low, skip)?;
        return Ok(if train { out } else { out.detach() });
    }
    let (low, skip) = (low.contiguous()?, skip.contiguous()?);
    if train {
        low.apply_op2(&skip, UpsampleCat)
    } else {
        low.apply_op2_no_bwd(&skip, &UpsampleCat)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::check_op;
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn fused_upsample_cat_matches_composition() -> Result<()> {
        let dev = Device::Cpu;
        for (b, cl, cs, h, w) in [(2, 3, 2, 4, 5), (1, 1, 1, 1, 1), (1, 5, 3, 3, 8)] {
            let inputs = [
                Var::randn(0f32, 1.0, (b, cl, h, w), &dev)?,
                Var::randn(0f32, 1.0, (b, cs, 2 * h, 2 * w), &dev)?,
            ];
            check_op(
                &format!("upsample-cat {b} {cl}+{cs} {h}x{w}"),
                &inputs,
                |t| upsample_cat(&t[0], &t[1], true),
                |t| upsample_cat_reference(&t[0], &t[1]),
                1e-5,
            )?;
        }
        Ok(())
    }
}
