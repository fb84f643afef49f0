//! The CUDA training step against the CPU's, on a GPU: the whole-network op (forward, every
//! gradient, the running statistics) and the fused Adam. Each test skips (passes) without a
//! GPU unless `LUNGSEG_REQUIRE_CUDA` is set, as `scripts/gpu-check.sh` does. Fresh device
//! buffers are filled with NaN under `cfg(test)` (`CudaNet::take`), so an element a kernel
//! fails to write fails the comparison.

use super::{set_precision, test_gpu as gpu, Precision};
use crate::model::loss::soft_dice_loss;
use crate::model::ops::testing::{rel_err, seeded_batch as batch};
use crate::model::optim::{Adam, AdamParams};
use crate::model::{is_running_stat, trainable_vars, UNet, UNetConfig};
use candle_core::{DType, Device, ModuleT, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use std::sync::PoisonError;

/// A U-Net of width `base` on `dev` with the weights of seed 7.
fn net(base: usize, dev: &Device) -> Result<(VarMap, UNet)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, dev);
    let model = UNet::new(
        &UNetConfig {
            base_channels: base,
        },
        vb,
    )?;
    crate::model::init::init_like_pytorch(&varmap, 7)?;
    Ok((varmap, model))
}

/// Tensors by name.
type Named = Vec<(String, Tensor)>;

/// The variables of `varmap` by name, on the CPU.
fn values(varmap: &VarMap) -> Result<Named> {
    let map = varmap.data().lock().unwrap_or_else(PoisonError::into_inner);
    let mut out = map
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().to_device(&Device::Cpu)?)))
        .collect::<Result<Vec<_>>>()?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Worst relative errors of one training forward and backward on CUDA against the CPU, with
/// the same weights: `(logits, gradients, running statistics, evaluation logits)`, the last
/// from an evaluation forward after the training one (with the running statistics it moved).
/// Gradients are measured against at least 1e-3 of the largest gradient in the net, since the
/// biases of convolutions before a train-mode batch-norm have an exactly-zero true gradient
/// (rounding noise on both sides).
fn errors(gpu: &Device, base: usize, dims: (usize, usize, usize)) -> Result<(f32, f32, f32, f32)> {
    let run = |dev: &Device| -> Result<(Tensor, Named, VarMap, Tensor)> {
        let (varmap, model) = net(base, dev)?;
        let (x, y) = batch(11, dims, dev)?;
        let logits = model.forward_t(&x, true)?;
        let grads = soft_dice_loss(&logits, &y)?.backward()?;
        let mut g = Vec::new();
        for (name, var) in trainable_vars(&varmap) {
            let missing = || candle_core::Error::Msg(format!("no gradient for {name}"));
            let t = grads.get(var.as_tensor()).ok_or_else(missing)?;
            g.push((name, t.to_device(&Device::Cpu)?));
        }
        let eval = model.forward_t(&x, false)?.to_device(&Device::Cpu)?;
        Ok((logits.to_device(&Device::Cpu)?, g, varmap, eval))
    };
    let (l_cpu, g_cpu, vm_cpu, e_cpu) = run(&Device::Cpu)?;
    let (l_gpu, g_gpu, vm_gpu, e_gpu) = run(gpu)?;
    let floor = 1e-3
        * g_cpu
            .iter()
            .map(|(_, t)| t.abs()?.max_all()?.to_scalar::<f32>())
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .fold(0f32, f32::max);
    let mut grad_err = 0f32;
    for ((name, a), (_, b)) in g_gpu.iter().zip(&g_cpu) {
        let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        let scale = b.abs()?.max_all()?.to_scalar::<f32>()?.max(floor);
        let err = diff / scale;
        if err > grad_err {
            eprintln!("  worst gradient so far: {name} {err:e}");
        }
        grad_err = grad_err.max(err);
    }
    let mut stat_err = 0f32;
    for ((name, a), (_, b)) in values(&vm_gpu)?.iter().zip(&values(&vm_cpu)?) {
        if is_running_stat(name) {
            stat_err = stat_err.max(rel_err(a, b)?);
        }
    }
    Ok((
        rel_err(&l_gpu, &l_cpu)?,
        grad_err,
        stat_err,
        rel_err(&e_gpu, &e_cpu)?,
    ))
}

#[test]
fn network_op_matches_cpu_in_strict_f32() -> Result<()> {
    let Some((gpu, _lock)) = gpu(Precision::F32) else {
        return Ok(());
    };
    // Widths that are not multiples of 8, odd sizes of the deepest level, batch 1, and one
    // shape large enough for many threads per channel in the sums.
    for (base, dims) in [
        (4, (2, 16, 16)),
        (3, (1, 12, 20)),
        (5, (3, 8, 4)),
        (8, (4, 64, 64)),
    ] {
        let (fwd, grad, stats, eval) = errors(&gpu, base, dims)?;
        eprintln!(
            "f32 base {base} {dims:?}: logits {fwd:e}, gradients {grad:e}, stats {stats:e}, \
             eval {eval:e}"
        );
        assert!(fwd < 1e-4, "base {base} {dims:?}: logits rel err {fwd:e}");
        assert!(
            eval < 1e-4,
            "base {base} {dims:?}: evaluation logits rel err {eval:e}"
        );
        assert!(
            grad < 1e-4,
            "base {base} {dims:?}: gradient rel err {grad:e}"
        );
        assert!(
            stats < 1e-5,
            "base {base} {dims:?}: running statistics rel err {stats:e}"
        );
    }
    Ok(())
}

/// TF32 convolutions round their inputs to 10-bit mantissas (about 5e-4 relative): the bound
/// here is what 11 layers of that allow, and the test prints what it measured.
#[test]
fn network_op_stays_close_to_cpu_in_tf32() -> Result<()> {
    let Some((gpu, _lock)) = gpu(Precision::Tf32) else {
        return Ok(());
    };
    let (fwd, grad, stats, eval) = errors(&gpu, 8, (4, 64, 64))?;
    eprintln!(
        "tf32 base 8 (4, 64, 64): logits {fwd:e}, gradients {grad:e}, stats {stats:e}, \
         eval {eval:e}"
    );
    set_precision(Precision::F32);
    assert!(fwd < 1e-2, "logits rel err {fwd:e}");
    assert!(eval < 1e-2, "evaluation logits rel err {eval:e}");
    assert!(grad < 5e-2, "gradient rel err {grad:e}");
    assert!(stats < 1e-2, "running statistics rel err {stats:e}");
    Ok(())
}

#[test]
fn fused_adam_follows_the_cpu_update_and_resumes_exactly() -> Result<()> {
    let Some((gpu, _lock)) = gpu(Precision::F32) else {
        return Ok(());
    };
    let params = AdamParams {
        lr: 1e-2,
        weight_decay: 0.01,
        ..AdamParams::default()
    };
    // Three steps of training a width-4 net on each device, then the state round trip.
    let run = |dev: &Device| -> Result<(Named, Adam, VarMap, UNet)> {
        let (varmap, model) = net(4, dev)?;
        let mut adam = Adam::new(trainable_vars(&varmap), params)?;
        for seed in 0..3 {
            let (x, y) = batch(seed, (2, 16, 16), dev)?;
            adam.backward_step(&soft_dice_loss(&model.forward_t(&x, true)?, &y)?)?;
        }
        Ok((values(&varmap)?, adam, varmap, model))
    };
    let (cpu, _, _, _) = run(&Device::Cpu)?;
    let (cuda, adam, varmap, model) = run(&gpu)?;
    for ((name, a), (_, b)) in cuda.iter().zip(&cpu) {
        let err = rel_err(a, b)?;
        assert!(err < 1e-4, "{name}: rel err {err:e} after three steps");
    }
    // A fresh optimizer loaded with the saved state takes the same next step (from the same
    // gradients: cuDNN's backward algorithms may sum in a different order from run to run).
    let state = adam.state()?;
    let mut resumed = Adam::new(trainable_vars(&varmap), params)?;
    resumed.load_state(&state)?;
    let before: Vec<Tensor> = trainable_vars(&varmap)
        .iter()
        .map(|(_, v)| v.as_tensor().copy())
        .collect::<Result<_>>()?;
    let (x, y) = batch(9, (2, 16, 16), &gpu)?;
    let grads = soft_dice_loss(&model.forward_t(&x, true)?, &y)?.backward()?;
    let mut original = adam;
    original.step(&grads)?;
    let stepped = values(&varmap)?;
    for ((_, v), old) in trainable_vars(&varmap).iter().zip(&before) {
        v.set(old)?;
    }
    resumed.step(&grads)?;
    for ((name, a), (_, b)) in values(&varmap)?.iter().zip(&stepped) {
        if !is_running_stat(name) {
            let err = rel_err(a, b)?;
            assert!(err == 0.0, "{name}: the resumed step differs ({err:e})");
        }
    }
    Ok(())
}
