//! The convolution as candle ops over [`crate::model::cpu::conv`]: training (with its own
//! backward: input, weight and bias gradients from the direct kernels) and inference, where an
//! eval-mode BatchNorm and ReLU fold into the epilogue.

use super::{cpu_tensor, dims4, fused_applies, output, slice_of, with_f32};
use crate::model::cpu::conv::{
    conv2d_backward_input, conv2d_backward_weight, conv2d_forward, ConvShape, Epilogue,
};
use crate::model::cpu::simd::Isa;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use candle_nn::BatchNorm;

const NAME: &str = "lungseg-conv2d";

/// The kernels' shape for an input layout, a weight layout and `pad`.
fn conv_shape(x: &Layout, w: &Layout, pad: usize) -> Result<ConvShape> {
    let (batch, c_in, h, wd) = dims4(x)?;
    let (c_out, c_in_w, kh, kw) = dims4(w)?;
    if c_in != c_in_w || kh != kw {
        candle_core::bail!(
            "{NAME}: input {:?} and kernel {:?} disagree",
            x.dims(),
            w.dims()
        )
    }
    let shape = ConvShape {
        batch,
        c_in,
        h,
        w: wd,
        c_out,
        k: kh,
        pad,
    };
    if let Some(why) = shape.unsupported() {
        candle_core::bail!("{NAME}: {why}")
    }
    Ok(shape)
}

/// Runs the forward kernel into a fresh storage.
fn forward(shape: &ConvShape, x: &[f32], w: &[f32], epilogue: Epilogue<'_>) -> (CpuStorage, Shape) {
    let mut y = output(shape.y_len());
    conv2d_forward(Isa::best(), shape, x, w, epilogue, &mut y);
    let dims = (shape.batch, shape.c_out, shape.h_out(), shape.w_out());
    (CpuStorage::F32(y), dims.into())
}

/// `conv2d(x, w) + b` (stride 1, symmetric zero padding), with its backward.
#[derive(Debug, Clone, Copy)]
struct Conv2dBias {
    pad: usize,
}

impl CustomOp3 for Conv2dBias {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let shape = conv_shape(lx, lw, self.pad)?;
        let bias = slice_of(sb, lb, NAME)?;
        if bias.len() != shape.c_out {
            candle_core::bail!(
                "{NAME}: bias has {} values for {} channels",
                bias.len(),
                shape.c_out
            )
        }
        let (x, w) = (slice_of(sx, lx, NAME)?, slice_of(sw, lw, NAME)?);
        Ok(forward(&shape, x, w, Epilogue::Bias(bias)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let shape = conv_shape(x.layout(), w.layout(), self.pad)?;
        let isa = Isa::best();
        with_f32(x, NAME, |xv| {
            with_f32(w, NAME, |wv| {
                with_f32(gy, NAME, |g| {
                    // The network's input needs no gradient: skip the largest-input layer's.
                    let dx = if x.track_op() {
                        let mut dx = output(shape.x_len());
                        conv2d_backward_input(isa, &shape, g, wv, &mut dx);
                        Some(cpu_tensor(dx, x.shape())?)
                    } else {
                        None
                    };
                    let mut dw = output(shape.w_len());
                    let mut db = output(shape.c_out);
                    conv2d_backward_weight(isa, &shape, xv, g, &mut dw, &mut db);
                    Ok((
                        dx,
                        Some(cpu_tensor(dw, w.shape())?),
                        Some(cpu_tensor(db, shape.c_out)?),
                    ))
                })
            })
        })
    }
}

/// `max(0, conv2d(x, w)·scale + shift)` per output channel, forward only.
struct Conv2dEpilogue {
    pad: usize,
    scale: Vec<f32>,
    shift: Vec<f32>,
    relu: bool,
}

impl CustomOp2 for Conv2dEpilogue {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let shape = conv_shape(lx, lw, self.pad)?;
        if self.shift.len() != shape.c_out || self.scale.len() != shape.c_out {
            candle_core::bail!("{NAME}: epilogue of {} channels", self.shift.len())
        }
        let (x, w) = (slice_of(sx, lx, NAME)?, slice_of(sw, lw, NAME)?);
        let epilogue = if self.relu {
            Epilogue::ScaleShiftRelu {
                scale: &self.scale,
                shift: &self.shift,
            }
        } else {
            Epilogue::Bias(&self.shift)
        };
        Ok(forward(&shape, x, w, epilogue))
    }
}

/// candle's composition: `conv2d` plus the bias broadcast, as `candle_nn::Conv2d` does it.
pub fn conv2d_reference(xs: &Tensor, weight: &Tensor, bias: &Tensor, pad: usize) -> Result<Tensor> {
    let ys = xs.conv2d(weight, pad, 1, 1, 1)?;
    ys.broadcast_add(&bias.reshape((1, bias.dims1()?, 1, 1))?)
}

/// `conv2d(xs, weight, pad) + bias` (stride 1), recorded for backward.
///
/// # Shapes
/// `xs`: `(B, C_in, H, W)`, `weight`: `(C_out, C_in, k, k)`, `bias`: `(C_out)` →
/// `(B, C_out, H + 2·pad - k + 1, W + 2·pad - k + 1)`.
pub fn conv2d(xs: &Tensor, weight: &Tensor, bias: &Tensor, pad: usize) -> Result<Tensor> {
    if !fused_applies(xs) {
        return conv2d_reference(xs, weight, bias, pad);
    }
    xs.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        Conv2dBias { pad },
    )
}

/// [`conv2d`] without a backward node (inference).
pub fn conv2d_inference(xs: &Tensor, weight: &Tensor, bias: &Tensor, pad: usize) -> Result<Tensor> {
    if !fused_applies(xs) {
        return conv2d_reference(&xs.detach(), weight, bias, pad).map(|t| t.detach());
    }
    let c_out = bias.dims1()?;
    let op = Conv2dEpilogue {
        pad,
        scale: vec![1.0; c_out],
        shift: bias.to_vec1()?,
        relu: false,
    };
    xs.contiguous()?
        .apply_op2_no_bwd(&weight.contiguous()?, &op)
}

/// `relu(batch_norm_eval(conv2d(xs, weight, pad) + bias))` without a backward node: the
/// batch-norm's running statistics and affine parameters fold into one scale and shift per
/// channel, applied in the convolution's epilogue.
pub fn conv2d_bn_relu_inference(
    xs: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    bn: &BatchNorm,
    pad: usize,
) -> Result<Tensor> {
    if !fused_applies(xs) {
        let ys = conv2d_reference(&xs.detach(), weight, bias, pad)?;
        return Ok(candle_core::ModuleT::forward_t(bn, &ys, false)?
            .relu()?
            .detach());
    }
    let (scale, shift) = fold_batch_norm(bn, bias)?;
    let op = Conv2dEpilogue {
        pad,
        scale,
        shift,
        relu: true,
    };
    xs.contiguous()?
        .apply_op2_no_bwd(&weight.contiguous()?, &op)
}

/// An eval-mode batch-norm after a convolution with `bias`, as one scale and shift per channel:
/// `bn(conv + bias) = conv·scale + shift`.
pub fn fold_batch_norm(bn: &BatchNorm, bias: &Tensor) -> Result<(Vec<f32>, Vec<f32>)> {
    let Some((gamma, beta)) = bn.weight_and_bias() else {
        candle_core::bail!("{NAME}: the batch-norm has no affine parameters")
    };
    let (gamma, beta, bias) = (
        gamma.to_vec1::<f32>()?,
        beta.to_vec1::<f32>()?,
        bias.to_vec1::<f32>()?,
    );
    let mean = bn.running_mean().to_vec1::<f32>()?;
    let var = bn.running_var().to_vec1::<f32>()?;
    let mut scale = Vec::with_capacity(bias.len());
    let mut shift = Vec::with_capacity(bias.len());
    for c in 0..bias.len() {
        // bn(y) = (y - mean)·γ/√(var + eps) + β with y = conv + bias.
        let s = f64::from(gamma[c]) / (f64::from(var[c]) + bn.eps()).sqrt();
        scale.push(s as f32);
        shift.push((f64::from(beta[c]) + (f64::from(bias[c]) - f64::from(mean[c])) * s) as f32);
    }
    Ok((scale, shift))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check_op, rel_err};
    use super::*;
    use candle_core::{Device, Var};

    fn case(
        b: usize,
        ci: usize,
        co: usize,
        h: usize,
        w: usize,
        k: usize,
        pad: usize,
    ) -> Result<()> {
        let dev = Device::Cpu;
        let inputs = [
            Var::randn(0f32, 1.0, (b, ci, h, w), &dev)?,
            Var::randn(0f32, 0.5, (co, ci, k, k), &dev)?,
            Var::randn(0f32, 1.0, co, &dev)?,
        ];
        check_op(
            &format!("conv B={b} {ci}->{co} {h}x{w} k={k} p={pad}"),
            &inputs,
            |t| conv2d(&t[0], &t[1], &t[2], pad),
            |t| conv2d_reference(&t[0], &t[1], &t[2], pad),
            1e-4,
        )
    }

    #[test]
    fn fused_conv_matches_candle_forward_and_gradients() -> Result<()> {
        case(2, 3, 5, 9, 7, 3, 1)?;
        case(1, 1, 8, 16, 12, 3, 1)?;
        case(3, 12, 1, 6, 5, 1, 0)?;
        case(2, 9, 16, 5, 33, 3, 1)?;
        case(1, 4, 3, 7, 6, 3, 0)?;
        case(1, 2, 3, 7, 8, 5, 2)
    }

    #[test]
    fn inference_conv_matches_and_records_nothing() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 9, 8), &dev)?;
        let w = Var::randn(0f32, 0.5, (4, 3, 3, 3), &dev)?;
        let b = Var::randn(0f32, 1.0, 4, &dev)?;
        let y = conv2d_inference(&x, w.as_tensor(), b.as_tensor(), 1)?;
        assert!(!y.track_op(), "inference recorded a backward node");
        let want = conv2d_reference(&x, w.as_tensor(), b.as_tensor(), 1)?;
        assert!(rel_err(&y, &want)? < 1e-5);
        Ok(())
    }

    #[test]
    fn folded_eval_batch_norm_matches_candle() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 6, 7), &dev)?;
        let w = Tensor::randn(0f32, 0.5, (5, 3, 3, 3), &dev)?;
        let b = Tensor::randn(0f32, 1.0, 5, &dev)?;
        let bn = BatchNorm::new(
            5,
            Tensor::randn(0f32, 1.0, 5, &dev)?,
            Tensor::rand(0.5f32, 2.0, 5, &dev)?,
            Tensor::randn(1f32, 0.3, 5, &dev)?,
            Tensor::randn(0f32, 0.3, 5, &dev)?,
            1e-5,
        )?;
        let y = conv2d_bn_relu_inference(&x, &w, &b, &bn, 1)?;
        let want = candle_core::ModuleT::forward_t(&bn, &conv2d_reference(&x, &w, &b, 1)?, false)?
            .relu()?;
        assert!(rel_err(&y, &want)? < 1e-5);
        Ok(())
    }
}
