//! A stride-1 2-D convolution whose backward pass avoids candle's naive CPU `conv_transpose2d`.
//!
//! candle computes a convolution's input gradient with `conv_transpose2d`, whose CPU kernel is a
//! direct loop of `vec_dot`s that costs 2–3× the forward pass. For stride 1, dilation 1 and one
//! group, the input gradient is itself an ordinary convolution,
//!
//! ```text
//! grad_x = conv2d(grad_y, W', padding = k - 1 - p),  W'[ci, co, i, j] = W[co, ci, k-1-i, k-1-j],
//! ```
//!
//! which candle runs through its tiled im2col + gemm kernel. [`conv2d_fast_backward`] wraps
//! candle's own `conv2d` forward in a [`CustomOp2`] whose backward does exactly that, and computes
//! the weight gradient with one gemm per kernel tap on shifted views of the padded input
//! ([`grad_weight_shift`]; it beat candle's formula and an explicit im2col product, see
//! BENCHMARKS.md). The
//! bias is not part of the op: add it outside as a broadcast, whose gradient candle already
//! computes as a sum over `(B, H, W)`.
//!
//! The backward uses only tensor ops, so it works on any device, but the op's forward exists for
//! the CPU only: callers should use candle's `conv2d` elsewhere (see [`crate::model::ConvImpl`]).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Result, Shape, Tensor};

/// The custom op: `conv2d(x, w, padding)` with stride 1, dilation 1, one group.
#[derive(Debug, Clone, Copy)]
pub struct FastConv2d {
    /// Symmetric zero padding.
    pub padding: usize,
}

/// Copies a contiguous CPU storage into a fresh CPU tensor of the layout's shape.
fn cpu_tensor(s: &CpuStorage, l: &Layout) -> Result<Tensor> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or(candle_core::Error::RequiresContiguous { op: "fast-conv2d" })?;
    let dev = Device::Cpu;
    match s {
        CpuStorage::F32(v) => Tensor::from_slice(&v[start..end], l.shape(), &dev),
        CpuStorage::F64(v) => Tensor::from_slice(&v[start..end], l.shape(), &dev),
        CpuStorage::F16(v) => Tensor::from_slice(&v[start..end], l.shape(), &dev),
        CpuStorage::BF16(v) => Tensor::from_slice(&v[start..end], l.shape(), &dev),
        other => Err(candle_core::Error::UnsupportedDTypeForOp(
            other.dtype(),
            "fast-conv2d",
        )),
    }
}

/// The weight `[C_out, C_in, k, k]` flipped spatially and with its two channel axes swapped,
/// `[C_in, C_out, k, k]`, materialised contiguously (candle's CPU conv mishandles kernels with a
/// non-zero start offset, candle issue #3736).
pub fn flip_transpose_weight(w: &Tensor) -> Result<Tensor> {
    w.flip(&[2, 3])?.transpose(0, 1)?.contiguous()
}

/// `dL/dx` of a stride-1 convolution, as a forward convolution of `grad_y`.
pub fn grad_input(grad_y: &Tensor, w: &Tensor, padding: usize) -> Result<Tensor> {
    let (_co, _ci, kh, kw) = w.dims4()?;
    if kh != kw {
        candle_core::bail!("fast-conv2d needs a square kernel, got {kh}x{kw}")
    }
    if padding + 1 > kh {
        // The "full" padding k-1-p would be negative: use candle's transposed convolution.
        return grad_y.conv_transpose2d(w, padding, 0, 1, 1);
    }
    grad_y
        .contiguous()?
        .conv2d(&flip_transpose_weight(w)?, kh - 1 - padding, 1, 1, 1)
}

/// `dL/dw[:, :, i, j] = Σ_b grad_y[b] (C_out, Ho·Wp) @ shift_ij(x_pad[b])ᵀ (Ho·Wp, C_in)`, where
/// `x_pad` is padded to width `Wp = W + 2p` (and one spare row) and `grad_y` is zero-padded to
/// the same width, so that the tap `(i, j)` is the flat offset `i·Wp + j`.
pub fn grad_weight_shift(x: &Tensor, grad_y: &Tensor, k: usize, padding: usize) -> Result<Tensor> {
    let (b, ci, h, w) = x.dims4()?;
    let (_b, co, ho, wo) = grad_y.dims4()?;
    let wp = w + 2 * padding;
    let hp = h + 2 * padding + 1;
    let xf = x
        .pad_with_zeros(2, padding, padding + 1)?
        .pad_with_zeros(3, padding, padding)?
        .reshape((b, ci, hp * wp))?;
    let gf = grad_y
        .pad_with_zeros(3, 0, wp - wo)?
        .reshape((b, co, ho * wp))?;
    let mut taps = Vec::with_capacity(k * k);
    for i in 0..k {
        for j in 0..k {
            let xs = xf.narrow(2, i * wp + j, ho * wp)?; // (B, C_in, Ho·Wp), a strided view
            taps.push(gf.matmul(&xs.transpose(1, 2)?)?.sum(0)?); // (C_out, C_in)
        }
    }
    Tensor::stack(&taps, 2)?.reshape((co, ci, k, k))
}

impl CustomOp2 for FastConv2d {
    fn name(&self) -> &'static str {
        "fast-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu_tensor(s1, l1)?;
        let w = cpu_tensor(s2, l2)?;
        let y = x.conv2d(&w, self.padding, 1, 1, 1)?;
        let shape = y.shape().clone();
        Ok((cpu_storage_of(&y)?, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (_co, _ci, k, _kw) = w.dims4()?;
        let gx = grad_input(grad_y, w, self.padding)?;
        let gw = grad_weight_shift(x, grad_y, k, self.padding)?;
        Ok((Some(gx), Some(gw)))
    }
}

/// The elements of a CPU tensor, in row-major order, as a fresh storage.
fn cpu_storage_of(t: &Tensor) -> Result<CpuStorage> {
    let t = t.flatten_all()?;
    Ok(match t.dtype() {
        DType::F32 => CpuStorage::F32(t.to_vec1()?),
        DType::F64 => CpuStorage::F64(t.to_vec1()?),
        DType::F16 => CpuStorage::F16(t.to_vec1()?),
        DType::BF16 => CpuStorage::BF16(t.to_vec1()?),
        other => {
            return Err(candle_core::Error::UnsupportedDTypeForOp(
                other,
                "fast-conv2d",
            ))
        }
    })
}

/// `conv2d(xs, weight, padding)` (stride 1, dilation 1, no bias) with the fast backward.
///
/// # Shapes
/// `xs`: `(B, C_in, H, W)`, `weight`: `(C_out, C_in, k, k)` → `(B, C_out, H+2p-k+1, W+2p-k+1)`.
pub fn conv2d_fast_backward(xs: &Tensor, weight: &Tensor, padding: usize) -> Result<Tensor> {
    let (_b, ci, _h, _w) = xs.dims4()?;
    let (_co, ci_k, kh, kw) = weight.dims4()?;
    if ci != ci_k {
        candle_core::bail!("fast-conv2d: input has {ci} channels, kernel expects {ci_k}")
    }
    if kh != kw {
        candle_core::bail!("fast-conv2d needs a square kernel, got {kh}x{kw}")
    }
    xs.contiguous()?
        .apply_op2(&weight.contiguous()?, FastConv2d { padding })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    /// `max |a - b| / max |b|` (with `max |b|` floored at 1e-12).
    fn rel_err(a: &Tensor, b: &Tensor) -> Result<f32> {
        let num = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        let den = b.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-12);
        Ok(num / den)
    }

    /// Gradients of `sum(r * (conv(x, w) + b))` w.r.t. `x`, `w`, `b` for one implementation.
    fn grads(
        x: &Var,
        w: &Var,
        b: &Var,
        r: &Tensor,
        padding: usize,
        fast: bool,
    ) -> Result<(Tensor, [Tensor; 3])> {
        let y = if fast {
            conv2d_fast_backward(x.as_tensor(), w.as_tensor(), padding)?
        } else {
            x.as_tensor().conv2d(w.as_tensor(), padding, 1, 1, 1)?
        };
        let y = y.broadcast_add(&b.as_tensor().reshape((1, b.dims1()?, 1, 1))?)?;
        let gs = (&y * r)?.sum_all()?.backward()?;
        let get = |v: &Var| {
            gs.get(v.as_tensor())
                .cloned()
                .ok_or_else(|| candle_core::Error::Msg("missing gradient".into()))
        };
        Ok((y.clone(), [get(x)?, get(w)?, get(b)?]))
    }

    fn check_case(bsz: usize, ci: usize, co: usize, h: usize, w: usize, k: usize, p: usize) {
        let run = || -> Result<()> {
            let dev = Device::Cpu;
            let x = Var::randn(0f32, 1.0, (bsz, ci, h, w), &dev)?;
            let wt = Var::randn(0f32, 1.0, (co, ci, k, k), &dev)?;
            let b = Var::randn(0f32, 1.0, co, &dev)?;
            let (ho, wo) = (h + 2 * p + 1 - k, w + 2 * p + 1 - k);
            let r = Tensor::randn(0f32, 1.0, (bsz, co, ho, wo), &dev)?;
            let (y_ref, g_ref) = grads(&x, &wt, &b, &r, p, false)?;
            let (y, g) = grads(&x, &wt, &b, &r, p, true)?;
            let diff = (&y - &y_ref)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "forward differs");
            for (name, (a, e)) in ["input", "weight", "bias"].iter().zip(g.iter().zip(&g_ref)) {
                assert_eq!(a.dims(), e.dims(), "{name} gradient shape");
                let err = rel_err(a, e)?;
                assert!(err < 1e-4, "{name} gradient rel err {err} (k={k}, p={p})");
            }
            Ok(())
        };
        if let Err(e) = run() {
            panic!("case B={bsz} Cin={ci} Cout={co} {h}x{w} k={k} p={p}: {e}");
        }
    }

    #[test]
    fn fast_conv_k3_p1_matches_candle() {
        check_case(2, 3, 5, 9, 7, 3, 1);
    }

    #[test]
    fn fast_conv_k1_p0_matches_candle() {
        check_case(2, 3, 5, 9, 7, 1, 0);
    }

    #[test]
    fn fast_conv_other_shapes_match_candle() {
        // Valid convolution, full padding, and p > k - 1 (transposed-conv fallback).
        check_case(3, 4, 2, 6, 8, 3, 0);
        check_case(1, 2, 3, 5, 5, 3, 2);
        check_case(1, 2, 3, 5, 4, 1, 1);
        check_case(2, 6, 4, 8, 8, 5, 2);
    }

    #[test]
    fn fast_conv_forward_is_candle_conv2d() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 9, 7), &dev)?;
        let w = Tensor::randn(0f32, 1.0, (5, 3, 3, 3), &dev)?;
        let a = conv2d_fast_backward(&x, &w, 1)?;
        let b = x.conv2d(&w, 1, 1, 1, 1)?;
        assert_eq!(a.dims(), b.dims());
        assert_eq!(
            a.flatten_all()?.to_vec1::<f32>()?,
            b.flatten_all()?.to_vec1::<f32>()?
        );
        // Non-contiguous input is accepted (made contiguous first).
        let xt = x.transpose(2, 3)?;
        let a = conv2d_fast_backward(&xt, &w, 1)?;
        let b = xt.conv2d(&w, 1, 1, 1, 1)?;
        assert_eq!(rel_err(&a, &b)?, 0.0);
        Ok(())
    }

    #[test]
    fn fast_conv_rejects_bad_shapes() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 3, 5, 5), DType::F32, &dev)?;
        assert!(
            conv2d_fast_backward(&x, &Tensor::zeros((2, 4, 3, 3), DType::F32, &dev)?, 1).is_err()
        );
        assert!(
            conv2d_fast_backward(&x, &Tensor::zeros((2, 3, 3, 1), DType::F32, &dev)?, 1).is_err()
        );
        Ok(())
    }

    /// Per-layer timing of one backward, reference vs fast, on a U-Net-sized layer.
    /// `cargo test --lib model::fast_conv -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn time_layer_backward() -> Result<()> {
        use std::time::Instant;
        let dev = Device::Cpu;
        let shapes: [(usize, usize, usize, usize, usize, usize); 3] = [
            // (B, Cin, Cout, H, k, p)
            (8, 96, 32, 128, 3, 1),
            (8, 32, 32, 128, 3, 1),
            (8, 192, 64, 32, 3, 1),
        ];
        for (bsz, ci, co, h, k, p) in shapes {
            let x = Var::randn(0f32, 1.0, (bsz, ci, h, h), &dev)?;
            let w = Var::randn(0f32, 0.1, (co, ci, k, k), &dev)?;
            let g = Tensor::randn(0f32, 1.0, (bsz, co, h, h), &dev)?;
            let t = Instant::now();
            let y = x.as_tensor().conv2d(w.as_tensor(), p, 1, 1, 1)?;
            let fwd = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let gx_ref = g.conv_transpose2d(w.as_tensor(), p, 0, 1, 1)?;
            let gx_ref_s = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let gx = grad_input(&g, w.as_tensor(), p)?;
            let gx_s = t.elapsed().as_secs_f64();
            let t = Instant::now();
            // candle's backprop formula: conv2d(xᵀ, grad_yᵀ)ᵀ with B as the contracted axis.
            let gw_ref = x
                .as_tensor()
                .transpose(0, 1)?
                .conv2d(&g.transpose(0, 1)?, p, 1, 1, 1)?
                .transpose(0, 1)?;
            let gw_ref_s = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let gws = grad_weight_shift(x.as_tensor(), &g, k, p)?;
            let gws_s = t.elapsed().as_secs_f64();
            println!(
                "B={bsz} {ci}->{co} {h}x{h} k={k}: fwd {fwd:.3}s | grad_x candle {gx_ref_s:.3}s fast \
                 {gx_s:.3}s (rel {:.1e}) | grad_w candle {gw_ref_s:.3}s shift {gws_s:.3}s (rel {:.1e})",
                rel_err(&gx, &gx_ref)?,
                rel_err(&gws, &gw_ref)?,
            );
            drop(y);
        }
        Ok(())
    }
}
