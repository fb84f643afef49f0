//! Training-mode BatchNorm + ReLU as one candle op over [`crate::model::cpu::bn_relu`], with the
//! running statistics updated as PyTorch and candle-nn do: momentum-weighted, the mean and the
//! unbiased variance (the normalisation itself divides by the biased one).

use super::{cpu_tensor, dims4, fused_applies, output, slice_of, with_f32};
use crate::model::cpu::bn_relu::{bn_relu_backward, bn_relu_train_forward, BatchStats, BnShape};
use crate::model::cpu::simd::Isa;
use candle_core::{CpuStorage, CustomOp3, Layout, ModuleT, Result, Shape, Tensor, Var};
use candle_nn::BatchNorm;
use std::sync::{Arc, Mutex, PoisonError};

const NAME: &str = "lungseg-bn-relu";

fn bn_shape(l: &Layout) -> Result<BnShape> {
    let (batch, channels, h, w) = dims4(l)?;
    Ok(BnShape {
        batch,
        channels,
        plane: h * w,
    })
}

/// The op; the forward leaves its batch statistics in `stats` for the backward and for the
/// running-statistics update.
struct BnReluTrain {
    eps: f64,
    stats: Arc<Mutex<Option<BatchStats>>>,
}

impl BnReluTrain {
    fn stats(&self) -> Result<BatchStats> {
        self.stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| candle_core::Error::Msg(format!("{NAME}: backward before forward")))
    }
}

impl CustomOp3 for BnReluTrain {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sg: &CpuStorage,
        lg: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let shape = bn_shape(lx)?;
        let (x, gamma, beta) = (
            slice_of(sx, lx, NAME)?,
            slice_of(sg, lg, NAME)?,
            slice_of(sb, lb, NAME)?,
        );
        if gamma.len() != shape.channels || beta.len() != shape.channels {
            candle_core::bail!(
                "{NAME}: {} channels, {} weights",
                shape.channels,
                gamma.len()
            )
        }
        let mut z = output(x.len());
        let stats = bn_relu_train_forward(Isa::best(), &shape, x, gamma, beta, self.eps, &mut z);
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner) = Some(stats);
        Ok((CpuStorage::F32(z), lx.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _z: &Tensor,
        gz: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let shape = bn_shape(x.layout())?;
        let stats = self.stats()?;
        let mut dx = output(x.elem_count());
        let mut dgamma = output(shape.channels);
        let mut dbeta = output(shape.channels);
        with_f32(x, NAME, |xv| {
            with_f32(gz, NAME, |g| {
                with_f32(gamma, NAME, |gm| {
                    with_f32(beta, NAME, |bt| {
                        bn_relu_backward(
                            Isa::best(),
                            &shape,
                            xv,
                            g,
                            gm,
                            bt,
                            &stats,
                            &mut dx,
                            &mut dgamma,
                            &mut dbeta,
                        );
                        Ok(())
                    })
                })
            })
        })?;
        Ok((
            Some(cpu_tensor(dx, x.shape())?),
            Some(cpu_tensor(dgamma, shape.channels)?),
            Some(cpu_tensor(dbeta, shape.channels)?),
        ))
    }
}

/// candle's composition: candle-nn's batch-norm, then ReLU.
pub fn batch_norm_relu_reference(xs: &Tensor, bn: &BatchNorm, train: bool) -> Result<Tensor> {
    bn.forward_t(xs, train)?.relu()
}

/// `relu(batch_norm(xs))` with the batch's statistics, recorded for backward; updates `bn`'s
/// running mean and variance.
///
/// # Shapes
/// `xs`: `(B, C, H, W)` → `(B, C, H, W)`.
pub fn batch_norm_relu_train(xs: &Tensor, bn: &BatchNorm) -> Result<Tensor> {
    if !fused_applies(xs) {
        return batch_norm_relu_reference(xs, bn, true);
    }
    let Some((gamma, beta)) = bn.weight_and_bias() else {
        candle_core::bail!("{NAME}: the batch-norm has no affine parameters")
    };
    let stats = Arc::new(Mutex::new(None));
    let op = BnReluTrain {
        eps: bn.eps(),
        stats: stats.clone(),
    };
    let zs = xs
        .contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    let stats = stats.lock().unwrap_or_else(PoisonError::into_inner).clone();
    if let Some(stats) = stats {
        let (b, _c, h, w) = xs.dims4()?;
        update_running_stats(bn, &stats, b * h * w)?;
    }
    Ok(zs)
}

/// `running ← (1 - momentum)·running + momentum·batch` for a batch of `n` values per channel,
/// with the variance made unbiased (`n / (n - 1)`) as candle-nn and PyTorch do.
pub(crate) fn update_running_stats(bn: &BatchNorm, stats: &BatchStats, n: usize) -> Result<()> {
    let m = bn.momentum();
    let unbias = n as f64 / (n as f64 - 1.0);
    let blend = |running: &Tensor, batch: &[f32], factor: f64| -> Result<()> {
        let old = running.to_vec1::<f32>()?;
        let new: Vec<f32> = old
            .iter()
            .zip(batch)
            .map(|(&r, &b)| ((1.0 - m) * f64::from(r) + m * factor * f64::from(b)) as f32)
            .collect();
        let len = new.len();
        Var::from_tensor(running)?.set(&Tensor::from_vec(new, len, running.device())?)
    };
    blend(bn.running_mean(), &stats.mean, 1.0)?;
    blend(bn.running_var(), &stats.var, unbias)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check_op, rel_err};
    use super::*;
    use candle_core::Device;

    fn bn(c: usize, dev: &Device) -> Result<BatchNorm> {
        BatchNorm::new(
            c,
            Tensor::randn(0f32, 1.0, c, dev)?,
            Tensor::rand(0.5f32, 2.0, c, dev)?,
            Tensor::zeros(c, candle_core::DType::F32, dev)?,
            Tensor::zeros(c, candle_core::DType::F32, dev)?,
            1e-5,
        )
    }

    #[test]
    fn fused_bn_relu_matches_candle_nn() -> Result<()> {
        let dev = Device::Cpu;
        for (b, c, h, w, offset) in [(2, 3, 5, 7, 0.0), (1, 5, 3, 3, 20.0), (3, 2, 8, 9, -2.0)] {
            let x = Var::from_tensor(&(Tensor::randn(0f32, 2.0, (b, c, h, w), &dev)? + offset)?)?;
            let gamma = Var::randn(1f32, 0.5, c, &dev)?;
            let beta = Var::randn(0f32, 0.5, c, &dev)?;
            let (fused_bn, ref_bn) = (bn(c, &dev)?, bn(c, &dev)?);
            // Same running statistics in both, so that their updates can be compared.
            Var::from_tensor(ref_bn.running_mean())?.set(fused_bn.running_mean())?;
            Var::from_tensor(ref_bn.running_var())?.set(fused_bn.running_var())?;
            let with = |bn: &BatchNorm, t: &[Tensor]| {
                BatchNorm::new_with_momentum(
                    c,
                    bn.running_mean().clone(),
                    bn.running_var().clone(),
                    t[1].clone(),
                    t[2].clone(),
                    1e-5,
                    0.1,
                )
            };
            check_op(
                &format!("bn-relu {b}x{c}x{h}x{w}"),
                &[x, gamma, beta],
                |t| batch_norm_relu_train(&t[0], &with(&fused_bn, t)?),
                |t| batch_norm_relu_reference(&t[0], &with(&ref_bn, t)?, true),
                1e-4,
            )?;
            for (a, r) in [
                (fused_bn.running_mean(), ref_bn.running_mean()),
                (fused_bn.running_var(), ref_bn.running_var()),
            ] {
                let err = rel_err(a, r)?;
                assert!(err < 1e-5, "running statistics differ: {err}");
            }
        }
        Ok(())
    }
}
