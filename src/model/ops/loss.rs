//! The segmentation losses as one candle op each over [`crate::model::cpu::loss`]: the value
//! forward, the logits' gradient backward.

use super::{cpu_tensor, fused_applies, output, slice_of, with_f32};
use crate::model::cpu::loss::{loss_grad, loss_sums, LossFn, LossSums};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use std::sync::{Mutex, PoisonError};

const NAME: &str = "lungseg-loss";

struct SegLoss {
    f: LossFn,
    smooth: f64,
    /// The forward's sums, for the backward.
    sums: Mutex<Option<LossSums>>,
}

impl CustomOp2 for SegLoss {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        st: &CpuStorage,
        lt: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, t) = (slice_of(sx, lx, NAME)?, slice_of(st, lt, NAME)?);
        if x.len() != t.len() {
            candle_core::bail!("{NAME}: {} logits, {} targets", x.len(), t.len())
        }
        let sums = loss_sums(x, t);
        *self.sums.lock().unwrap_or_else(PoisonError::into_inner) = Some(sums);
        let value = self.f.value(&sums, self.smooth) as f32;
        Ok((CpuStorage::F32(vec![value]), Shape::from(())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        target: &Tensor,
        _loss: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let Some(sums) = *self.sums.lock().unwrap_or_else(PoisonError::into_inner) else {
            candle_core::bail!("{NAME}: backward without forward")
        };
        let scale = f64::from(g.to_scalar::<f32>()?);
        let mut grad = output(logits.elem_count());
        with_f32(logits, NAME, |x| {
            with_f32(target, NAME, |t| {
                loss_grad(self.f, &sums, self.smooth, scale, x, t, &mut grad);
                Ok(())
            })
        })?;
        Ok((Some(cpu_tensor(grad, logits.shape())?), None))
    }
}

/// The loss `f` of `logits` against `target` as one fused op, or `None` where it does not
/// apply (not f32 on the CPU, shapes differ, or the target needs a gradient).
pub fn fused_loss(
    f: LossFn,
    logits: &Tensor,
    target: &Tensor,
    smooth: f64,
) -> Result<Option<Tensor>> {
    if !fused_applies(logits)
        || !fused_applies(target)
        || logits.dims() != target.dims()
        || target.track_op()
    {
        return Ok(None);
    }
    let op = SegLoss {
        f,
        smooth,
        sums: Mutex::new(None),
    };
    Ok(Some(
        logits.contiguous()?.apply_op2(&target.contiguous()?, op)?,
    ))
}
