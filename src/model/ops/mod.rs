//! The U-Net's fused layer operations as candle ops: each is one autograd node whose forward
//! and backward run the CPU kernels of [`super::cpu`] (the whole network, `network`, also runs
//! on CUDA's, [`super::gpu`]), and each has a reference composition of candle ops that other
//! devices and dtypes use (and the tests compare against).
//!
//! Inference calls (`*_inference`) run the same kernels without recording a backward node.

pub mod bn_relu;
pub mod conv;
pub mod inference;
pub mod loss;
pub mod network;
mod network_cpu;
pub mod pool;
pub mod upsample;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Shape, Storage, Tensor};

/// True where the fused kernels apply: f32 tensors on the CPU.
pub fn fused_applies(xs: &Tensor) -> bool {
    xs.device().is_cpu() && xs.dtype() == DType::F32
}

/// True where the whole-network training op (`network`) runs: f32 on the CPU, and f32 on CUDA
/// in a build with the `cudnn` feature (`model::gpu`).
pub fn network_op_applies(xs: &Tensor) -> bool {
    fused_applies(xs)
        || (cfg!(feature = "cudnn") && xs.device().is_cuda() && xs.dtype() == DType::F32)
}

/// The f32 elements a contiguous layout covers.
pub(crate) fn slice_of<'a>(s: &'a CpuStorage, l: &Layout, op: &'static str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        return Err(candle_core::Error::UnsupportedDTypeForOp(s.dtype(), op));
    };
    let (start, end) = l
        .contiguous_offsets()
        .ok_or(candle_core::Error::RequiresContiguous { op })?;
    Ok(&v[start..end])
}

/// Runs `f` on the f32 elements of a CPU tensor (made contiguous first if it is not).
pub(crate) fn with_f32<R>(
    t: &Tensor,
    op: &'static str,
    f: impl FnOnce(&[f32]) -> Result<R>,
) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => f(slice_of(s, layout, op)?),
        _ => Err(candle_core::Error::Msg(format!("{op}: not a CPU tensor"))),
    }
}

/// A fresh output buffer. Tests fill it with NaN, so that an element a kernel fails to write
/// shows up; otherwise zeroed memory (fresh pages cost nothing to zero).
pub(crate) fn output(len: usize) -> Vec<f32> {
    if cfg!(test) {
        vec![f32::NAN; len]
    } else {
        vec![0.0; len]
    }
}

/// A CPU tensor of `shape` owning `data`.
pub(crate) fn cpu_tensor(data: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::from_vec(data, shape, &candle_core::Device::Cpu)
}

/// `(B, C, H, W)` of a layout.
pub(crate) fn dims4(l: &Layout) -> Result<(usize, usize, usize, usize)> {
    l.shape().dims4()
}

#[cfg(test)]
pub(crate) mod testing {
    //! Shared checks of a fused op against its reference composition.
    use candle_core::{Result, Tensor, Var};

    /// A seeded `(B, 1, H, W)` input and a {0,1} target with about 30% foreground, on `dev`.
    pub fn seeded_batch(
        seed: u64,
        (b, h, w): (usize, usize, usize),
        dev: &candle_core::Device,
    ) -> Result<(Tensor, Tensor)> {
        let mut rng = crate::rng::SplitMix64::new(seed);
        let n = b * h * w;
        let x: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        let y: Vec<f32> = (0..n)
            .map(|_| f32::from(u8::from(rng.chance(0.3))))
            .collect();
        Ok((
            Tensor::from_vec(x, (b, 1, h, w), dev)?,
            Tensor::from_vec(y, (b, 1, h, w), dev)?,
        ))
    }

    /// `max |a - b| / max |b|`.
    pub fn rel_err(a: &Tensor, b: &Tensor) -> Result<f32> {
        assert_eq!(a.dims(), b.dims());
        let num = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        let den = b.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-12);
        if num.is_nan() {
            return Ok(f32::INFINITY);
        }
        Ok(num / den)
    }

    /// Compares `fused(inputs)` with `reference(inputs)`: the forward and the gradient of
    /// `Σ out·r` with respect to every input, each within `tol` relative error.
    pub fn check_op(
        name: &str,
        inputs: &[Var],
        fused: impl Fn(&[Tensor]) -> Result<Tensor>,
        reference: impl Fn(&[Tensor]) -> Result<Tensor>,
        tol: f32,
    ) -> Result<()> {
        let xs: Vec<Tensor> = inputs.iter().map(|v| v.as_tensor().clone()).collect();
        let a = fused(&xs)?;
        let b = reference(&xs)?;
        let err = rel_err(&a, &b)?;
        assert!(err < tol, "{name}: forward rel err {err:e}");
        let r = Tensor::randn(0f32, 1.0, a.shape(), a.device())?;
        let ga = (&a * &r)?.sum_all()?.backward()?;
        let gb = (&b * &r)?.sum_all()?.backward()?;
        for (i, v) in inputs.iter().enumerate() {
            let missing = || candle_core::Error::Msg(format!("{name}: no gradient {i}"));
            let x = ga.get(v.as_tensor()).ok_or_else(missing)?;
            let y = gb.get(v.as_tensor()).ok_or_else(missing)?;
            let err = rel_err(x, y)?;
            assert!(err < tol, "{name}: input {i} gradient rel err {err:e}");
        }
        Ok(())
    }
}
