//! The U-Net's training step on CUDA: cuDNN convolutions (all three passes) and lungseg's own
//! kernels (`kernels.cu`: BatchNorm+ReLU, pooling, upsampling, Adam), behind the same fused
//! network op ([`crate::model::ops::network`]) and optimizer that run lungseg's CPU kernels.
//! Built with the `cudnn` feature; without it, CUDA runs candle's reference compositions.
//!
//! The kernels' source also compiles as C (build.rs), so the CPU tests run it against the
//! CPU kernels (`emulated`): a machine without a GPU still checks every kernel's arithmetic.

#[cfg(feature = "cudnn")]
mod adam;
#[cfg(feature = "cudnn")]
mod conv;
#[cfg(test)]
mod emulated;
#[cfg(feature = "cudnn")]
mod launch;
#[cfg(feature = "cudnn")]
mod net;
#[cfg(all(test, feature = "cudnn"))]
mod tests;

#[cfg(feature = "cudnn")]
pub(crate) use adam::adam_update;
#[cfg(feature = "cudnn")]
pub use net::{update_running_stats, CudaNet, DeviceStats};

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU8, Ordering};

/// The arithmetic of f32 convolutions and matrix products on CUDA.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// TF32 tensor cores for f32 convolutions and matrix products (10-bit mantissa products,
    /// f32 accumulation), as PyTorch does by default for convolutions: several times faster.
    #[default]
    Tf32,
    /// Strict f32 throughout (cuDNN's FMA math, no tensor cores).
    F32,
}

static PRECISION: AtomicU8 = AtomicU8::new(0);

/// Sets the precision of every later CUDA convolution and matrix product in this process
/// (cuDNN's math type for lungseg's convolutions, and candle's cuBLAS setting). The CPU is
/// always strict f32.
pub fn set_precision(p: Precision) {
    PRECISION.store(p as u8, Ordering::Relaxed);
    #[cfg(feature = "cuda")]
    candle_core::cuda::set_gemm_reduced_precision_f32(p == Precision::Tf32);
}

/// The precision [`set_precision`] chose ([`Precision::Tf32`] unless told otherwise).
pub fn precision() -> Precision {
    if PRECISION.load(Ordering::Relaxed) == Precision::F32 as u8 {
        Precision::F32
    } else {
        Precision::Tf32
    }
}

/// Serialises the GPU tests (the precision is process-wide): the GPU at `precision` and the
/// lock on it, or `None` to skip the test when there is no GPU, unless `LUNGSEG_REQUIRE_CUDA`
/// is set (as `scripts/gpu-check.sh` does).
#[cfg(all(test, feature = "cuda"))]
pub(crate) fn test_gpu(
    precision: Precision,
) -> Option<(candle_core::Device, std::sync::MutexGuard<'static, ()>)> {
    use std::sync::{Mutex, PoisonError};
    static GPU: Mutex<()> = Mutex::new(());
    let guard = GPU.lock().unwrap_or_else(PoisonError::into_inner);
    // Through `device::open`, as the trainer opens it (event tracking off, the pool kept).
    match crate::device::open(crate::device::DeviceSpec::Cuda(0)) {
        Ok(d) => {
            set_precision(precision);
            Some((d, guard))
        }
        Err(e) if std::env::var_os("LUNGSEG_REQUIRE_CUDA").is_some() => {
            panic!("LUNGSEG_REQUIRE_CUDA is set but no CUDA device opened: {e}")
        }
        Err(_) => {
            eprintln!("no CUDA device; skipping");
            None
        }
    }
}
