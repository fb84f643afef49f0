//! Exact ×2 bilinear upsampling (PyTorch `align_corners=False`) built from differentiable candle
//! ops, because candle's own `upsample_bilinear2d` has no backward.
//!
//! For a scale of 2, PyTorch's source coordinate for output index `o` is
//! `max((o + 0.5) / 2 - 0.5, 0)`, with the upper neighbour clamped to `n - 1`. That reduces to
//! two fixed stencils along each axis:
//!
//! - even output `2k`:   `0.75·x[k] + 0.25·x[k-1]` (with `x[-1] := x[0]`),
//! - odd output `2k+1`:  `0.75·x[k] + 0.25·x[k+1]` (with `x[n] := x[n-1]`),
//!
//! so the op is separable and composes from `narrow`, `cat`, `affine`, `add`, `stack` and
//! `reshape`, all of which have backward passes on every device.

use candle_core::{Result, Tensor};

/// Upsamples `(B, C, H, W)` to `(B, C, 2H, 2W)` with PyTorch's bilinear `align_corners=False`.
///
/// Differentiable and device-generic.
pub fn upsample_bilinear2x(xs: &Tensor) -> Result<Tensor> {
    let (_b, _c, _h, _w) = xs.dims4()?;
    let xs = upsample_axis2x(xs, 3)?; // (B, C, H, 2W)
    upsample_axis2x(&xs, 2) // (B, C, 2H, 2W)
}

/// Doubles the size of axis `dim` with the two-tap stencils described in the module docs.
fn upsample_axis2x(xs: &Tensor, dim: usize) -> Result<Tensor> {
    let n = xs.dim(dim)?;
    if n == 0 {
        candle_core::bail!("bilinear upsample: axis {dim} is empty")
    }
    let (prev, next) = if n == 1 {
        (xs.clone(), xs.clone())
    } else {
        let first = xs.narrow(dim, 0, 1)?;
        let last = xs.narrow(dim, n - 1, 1)?;
        let prev = Tensor::cat(&[&first, &xs.narrow(dim, 0, n - 1)?], dim)?;
        let next = Tensor::cat(&[&xs.narrow(dim, 1, n - 1)?, &last], dim)?;
        (prev, next)
    };
    let centre = xs.affine(0.75, 0.0)?;
    let even = (&centre + prev.affine(0.25, 0.0)?)?;
    let odd = (&centre + next.affine(0.25, 0.0)?)?;
    // Interleave: (.., n, 2, ..) -> (.., 2n, ..).
    let stacked = Tensor::stack(&[&even, &odd], dim + 1)?;
    let mut dims = xs.dims().to_vec();
    dims[dim] *= 2;
    stacked.reshape(dims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    // Golden values from a NumPy implementation of PyTorch's align_corners=False upsample
    // (torch itself was not available; the matrix form below is what ATen computes):
    //
    // ```python
    // import numpy as np
    // def up_matrix(n):
    //     m = np.zeros((2*n, n))
    //     for o in range(2*n):
    //         s = max((o + 0.5) / 2 - 0.5, 0.0)
    //         i0 = int(np.floor(s)); i1 = min(i0 + 1, n - 1); l1 = s - i0; l0 = 1 - l1
    //         m[o, i0] += l0; m[o, i1] += l1
    //     return m
    // x = np.arange(24, dtype=np.float64).reshape(1, 2, 3, 4)
    // x = (x * 1.5 - 7.0) ** 2 / 10.0
    // x[0, 1] = x[0, 1][::-1, ::-1] * -1.0 + 0.3
    // mh, mw = up_matrix(3), up_matrix(4)
    // out = np.einsum('oh,bchw,pw->bcop', mh, x, mw)
    // w = (np.arange(2*6*8, dtype=np.float64).reshape(1, 2, 6, 8) % 7) - 2.5 + 0.1*np.arange(8)
    // grad = np.einsum('oh,bcop,pw->bchw', mh, w, mw)   # d sum(out * w) / dx
    // ```
    const X: [f32; 24] = [
        4.9, 3.025, 1.6, 0.625, 0.1, 0.025, 0.4, 1.225, 2.5, 4.225, 6.4, 9.025, -75.325, -67.3,
        -59.725, -52.6, -45.925, -39.7, -33.925, -28.6, -23.725, -19.3, -15.325, -11.8,
    ];
    const W: [f32; 96] = [
        -2.5, -1.4, -0.3, 0.8, 1.9, 3.0, 4.1, -1.8, -1.5, -0.4, 0.7, 1.8, 2.9, 4.0, -1.9, -0.8,
        -0.5, 0.6, 1.7, 2.8, 3.9, -2.0, -0.9, 0.2, 0.5, 1.6, 2.7, 3.8, -2.1, -1.0, 0.1, 1.2, 1.5,
        2.6, 3.7, -2.2, -1.1, 0.0, 1.1, 2.2, 2.5, 3.6, -2.3, -1.2, -0.1, 1.0, 2.1, 3.2, 3.5, -2.4,
        -1.3, -0.2, 0.9, 2.0, 3.1, 4.2, -2.5, -1.4, -0.3, 0.8, 1.9, 3.0, 4.1, -1.8, -1.5, -0.4,
        0.7, 1.8, 2.9, 4.0, -1.9, -0.8, -0.5, 0.6, 1.7, 2.8, 3.9, -2.0, -0.9, 0.2, 0.5, 1.6, 2.7,
        3.8, -2.1, -1.0, 0.1, 1.2, 1.5, 2.6, 3.7, -2.2, -1.1, 0.0, 1.1, 2.2,
    ];
    const OUT: [f32; 96] = [
        4.9, 4.43125, 3.49375, 2.66875, 1.95625, 1.35625, 0.86875, 0.625, 3.7, 3.34375, 2.63125,
        2.03125, 1.54375, 1.16875, 0.90625, 0.775, 1.3, 1.16875, 0.90625, 0.75625, 0.71875,
        0.79375, 0.98125, 1.075, 0.7, 0.79375, 0.98125, 1.28125, 1.69375, 2.21875, 2.85625, 3.175,
        1.9, 2.21875, 2.85625, 3.60625, 4.46875, 5.44375, 6.53125, 7.075, 2.5, 2.93125, 3.79375,
        4.76875, 5.85625, 7.05625, 8.36875, 9.025, -75.325, -73.31875, -69.30625, -65.40625,
        -61.61875, -57.94375, -54.38125, -52.6, -67.975, -66.08125, -62.29375, -58.61875,
        -55.05625, -51.60625, -48.26875, -46.6, -53.275, -51.60625, -48.26875, -45.04375,
        -41.93125, -38.93125, -36.04375, -34.6, -40.375, -38.93125, -36.04375, -33.26875,
        -30.60625, -28.05625, -25.61875, -24.4, -29.275, -28.05625, -25.61875, -23.29375,
        -21.08125, -18.98125, -16.99375, -16.0, -23.725, -22.61875, -20.40625, -18.30625,
        -16.31875, -14.44375, -12.68125, -11.8,
    ];
    const GRAD: [f32; 24] = [
        -4.75, 3.5, 9.2375, 0.8625, 2.75, 7.9375, 1.425, 0.4875, 8.5, 0.5625, -0.2625, 7.55, -1.75,
        -0.5, 7.8625, 8.2375, -1.25, 6.5625, 6.175, -0.8875, 6.25, 6.1875, -1.6375, 3.55,
    ];

    fn assert_close(got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let scale = w.abs().max(1.0);
            assert!((g - w).abs() <= tol * scale, "index {i}: got {g}, want {w}");
        }
    }

    #[test]
    fn bilinear_forward_matches_pytorch_golden() -> Result<()> {
        let x = Tensor::from_slice(&X, (1, 2, 3, 4), &Device::Cpu)?;
        let out = upsample_bilinear2x(&x)?;
        assert_eq!(out.dims(), &[1, 2, 6, 8]);
        assert_close(&out.flatten_all()?.to_vec1::<f32>()?, &OUT, 1e-5);
        Ok(())
    }

    #[test]
    fn bilinear_backward_matches_pytorch_golden() -> Result<()> {
        let x = Var::from_slice(&X, (1, 2, 3, 4), &Device::Cpu)?;
        let w = Tensor::from_slice(&W, (1, 2, 6, 8), &Device::Cpu)?;
        let loss = (upsample_bilinear2x(x.as_tensor())? * &w)?.sum_all()?;
        let grads = loss.backward()?;
        let g = grads.get(x.as_tensor()).ok_or_else(|| {
            candle_core::Error::Msg("no gradient for the upsample input".to_string())
        })?;
        assert_close(&g.flatten_all()?.to_vec1::<f32>()?, &GRAD, 1e-5);
        Ok(())
    }

    #[test]
    fn bilinear_matches_candle_forward() -> Result<()> {
        let x = Tensor::from_slice(&X, (1, 2, 3, 4), &Device::Cpu)?;
        let ours = upsample_bilinear2x(&x)?.flatten_all()?.to_vec1::<f32>()?;
        let candle = x
            .upsample_bilinear2d(6, 8, false)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_close(&ours, &candle, 1e-5);
        Ok(())
    }

    #[test]
    fn bilinear_handles_unit_axes() -> Result<()> {
        let x = Tensor::from_slice(&[3f32, -1.0], (1, 2, 1, 1), &Device::Cpu)?;
        let out = upsample_bilinear2x(&x)?;
        assert_eq!(out.dims(), &[1, 2, 2, 2]);
        assert_eq!(
            out.flatten_all()?.to_vec1::<f32>()?,
            vec![3.0, 3.0, 3.0, 3.0, -1.0, -1.0, -1.0, -1.0]
        );
        Ok(())
    }
}
