//! 2×2 max-pooling as a candle op over [`crate::model::cpu::pool`], and a reference composition
//! with PyTorch's gradient (candle's own `max_pool2d` backward divides it, see the kernel's
//! module).

use super::{cpu_tensor, dims4, fused_applies, output, slice_of, with_f32};
use crate::model::cpu::pool::{max_pool2x2_backward, max_pool2x2_forward, PoolShape};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

const NAME: &str = "lungseg-max-pool2x2";

fn pool_shape(l: &Layout) -> Result<(PoolShape, (usize, usize))> {
    let (b, c, h, w) = dims4(l)?;
    Ok((
        PoolShape {
            planes: b * c,
            h,
            w,
        },
        (b, c),
    ))
}

struct MaxPool2x2;

impl CustomOp1 for MaxPool2x2 {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (shape, (b, c)) = pool_shape(l)?;
        let mut y = output(shape.planes * shape.h_out() * shape.w_out());
        max_pool2x2_forward(&shape, slice_of(s, l, NAME)?, &mut y);
        Ok((
            CpuStorage::F32(y),
            (b, c, shape.h_out(), shape.w_out()).into(),
        ))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, gy: &Tensor) -> Result<Option<Tensor>> {
        let (shape, _) = pool_shape(x.layout())?;
        let mut dx = output(x.elem_count());
        with_f32(x, NAME, |xv| {
            with_f32(gy, NAME, |g| {
                max_pool2x2_backward(&shape, xv, g, &mut dx);
                Ok(())
            })
        })?;
        Ok(Some(cpu_tensor(dx, x.shape())?))
    }
}

/// Max over each 2×2 window from candle ops, with PyTorch's gradient: the window's first
/// maximum in row-major order (`argmax` keeps the first on ties) gets the whole gradient. A
/// plain `max` reduction would give it to every tied element instead, four times over in a
/// flat region (the background of a CT slice), and candle's own `max_pool2d` divides it.
pub fn max_pool2x2_reference(xs: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = xs.dims4()?;
    let (ho, wo) = (h / 2, w / 2);
    let windows = xs
        .narrow(2, 0, 2 * ho)?
        .narrow(3, 0, 2 * wo)?
        .reshape((b, c, ho, 2, wo, 2))?
        .permute((0, 1, 2, 4, 3, 5))?
        .reshape((b, c, ho, wo, 4))?; // (B, C, H/2, W/2, window in row-major order)
    let first_max = windows.argmax_keepdim(4)?; // (B, C, H/2, W/2, 1)
    let slots = Tensor::arange(0u32, 4, xs.device())?.reshape((1, 1, 1, 1, 4))?;
    let one_hot = first_max.broadcast_eq(&slots)?.to_dtype(xs.dtype())?;
    (windows * one_hot)?.sum(4)
}

/// `MaxPool2d(2)` (floor mode): `(B, C, H, W)` → `(B, C, H/2, W/2)`; `train` records the
/// backward node.
pub fn max_pool2x2(xs: &Tensor, train: bool) -> Result<Tensor> {
    if !fused_applies(xs) {
        let ys = max_pool2x2_reference(xs)?;
        return Ok(if train { ys } else { ys.detach() });
    }
    let xs = xs.contiguous()?;
    if train {
        xs.apply_op1(MaxPool2x2)
    } else {
        xs.apply_op1_no_bwd(&MaxPool2x2)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::check_op;
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn fused_pool_matches_reference_and_pytorch_gradient() -> Result<()> {
        let dev = Device::Cpu;
        for dims in [(2, 3, 8, 6), (1, 2, 7, 5), (1, 1, 2, 2)] {
            let x = Var::randn(0f32, 1.0, dims, &dev)?;
            check_op(
                &format!("pool {dims:?}"),
                &[x],
                |t| max_pool2x2(&t[0], true),
                |t| max_pool2x2_reference(&t[0]),
                1e-6,
            )?;
        }
        // A unique maximum gets the whole gradient (candle's max_pool2d gives it a quarter), and
        // of tied maxima only the first in row-major order, as in PyTorch; both paths agree.
        // Left window [1 2; 3 4]: its 4 (index 5); right window all 5s: index 2.
        let x = Var::new(&[[[[1f32, 2., 5., 5.], [3., 4., 5., 5.]]]], &dev)?;
        let want = Some(vec![0.0, 0.0, 10.0, 0.0, 0.0, 10.0, 0.0, 0.0]);
        for fused in [false, true] {
            let y = if fused {
                max_pool2x2(x.as_tensor(), true)?
            } else {
                max_pool2x2_reference(x.as_tensor())?
            };
            let g = (y * 10.0)?.sum_all()?.backward()?;
            let gx = g
                .get(x.as_tensor())
                .map(|t| t.flatten_all()?.to_vec1::<f32>());
            assert_eq!(gx.transpose()?, want);
        }
        Ok(())
    }
}
