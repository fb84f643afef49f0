//! Adam on CUDA as one in-place kernel launch per parameter (`lungseg_adam_update`), where the
//! composed update takes 15 whole-tensor ops with their allocations. The moments live in one
//! tensor per parameter, `m` then `v`, so that they stay savable for `--resume`.

use super::launch::{index, launch};
use super::CudaNet;
use crate::model::cpu::adam::AdamStep;
use candle_core::cuda::CudaStorage;
use candle_core::{CpuStorage, InplaceOp3, Layout, Result, Tensor};

struct FusedAdam {
    step: AdamStep,
}

impl InplaceOp3 for FusedAdam {
    fn name(&self) -> &'static str {
        "lungseg-adam"
    }

    fn cpu_fwd(
        &self,
        _: &mut CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<()> {
        candle_core::bail!("lungseg-adam: the CUDA update got CPU tensors")
    }

    fn cuda_fwd(
        &self,
        theta: &mut CudaStorage,
        lt: &Layout,
        grad: &CudaStorage,
        lg: &Layout,
        moments: &CudaStorage,
        lm: &Layout,
    ) -> Result<()> {
        let net = CudaNet::for_storage(theta)?;
        let contiguous = |l: &Layout| {
            l.contiguous_offsets()
                .ok_or(candle_core::Error::RequiresContiguous { op: "lungseg-adam" })
        };
        let ((t0, t1), (g0, g1), (m0, m1)) = (contiguous(lt)?, contiguous(lg)?, contiguous(lm)?);
        let len = t1 - t0;
        if g1 - g0 != len || m1 - m0 != 2 * len {
            candle_core::bail!("lungseg-adam: parameter, gradient and moments differ in size")
        }
        let n = index(len, "parameter")?;
        let s = self.step.as_f32s();
        let grad = grad.as_cuda_slice::<f32>()?.slice(g0..g1);
        // The kernel writes the moments through this shared view: the moments tensor belongs to
        // the optimizer alone (never handed out without a copy), and candle's one stream orders
        // the launches.
        let moments = moments.as_cuda_slice::<f32>()?.slice(m0..m1);
        let mut theta = theta.as_cuda_slice_mut::<f32>()?.slice_mut(t0..t1);
        launch!(net.kernels(), "lungseg_adam_update", len;
            &mut theta, &grad, &moments, &n, &s[0], &s[1], &s[2], &s[3], &s[4], &s[5], &s[6], &s[7],
            &s[8]);
        Ok(())
    }
}

/// One Adam step of `theta` in place, with gradient `grad` and `moments` (`m` then `v`, twice
/// `theta`'s length), all f32 on one CUDA device.
pub(crate) fn adam_update(
    step: AdamStep,
    theta: &Tensor,
    grad: &Tensor,
    moments: &Tensor,
) -> Result<()> {
    theta.inplace_op3(&grad.contiguous()?, moments, &FusedAdam { step })
}
