//! Segmentation losses computed from **logits**, so that the cross-entropy term can use the
//! numerically stable log-sum-exp form.
//!
//! Every loss takes `logits` and a `{0, 1}` `target` of the same shape (normally
//! `(B, 1, H, W)`) and returns a scalar. The soft sums are pooled over the whole batch. f32 on
//! the CPU runs one fused op per loss (`model::ops::loss`); anything else, and the `*_reference`
//! functions, compose differentiable candle ops.

use super::cpu::loss::LossFn;
use super::ops::loss::fused_loss;
use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

/// Additive smoothing of the Dice and Tversky ratios (the notebook's `smooth=1`).
pub const SMOOTH: f64 = 1.0;

fn check_shapes(logits: &Tensor, target: &Tensor) -> Result<()> {
    if logits.dims() != target.dims() {
        candle_core::bail!(
            "loss: logits {:?} and target {:?} differ in shape",
            logits.dims(),
            target.dims()
        )
    }
    Ok(())
}

/// `1 - (2·Σ p·t + 1) / (Σ p + Σ t + 1)` with `p = sigmoid(logits)`, pooled over the batch.
pub fn soft_dice_loss(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    check_shapes(logits, target)?;
    match fused_loss(LossFn::Dice, logits, target, SMOOTH)? {
        Some(loss) => Ok(loss),
        None => soft_dice_loss_reference(logits, target),
    }
}

/// [`soft_dice_loss`] composed from candle ops.
pub fn soft_dice_loss_reference(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    check_shapes(logits, target)?;
    let p = candle_nn::ops::sigmoid(logits)?;
    let inter = (&p * target)?.sum_all()?;
    let num = inter.affine(2.0, SMOOTH)?;
    let den = ((p.sum_all()? + target.sum_all()?)? + SMOOTH)?;
    (num / den)?.affine(-1.0, 1.0)
}

/// `1 - (TP + 1) / (TP + α·FP + β·FN + 1)` with soft `TP = Σ p·t`, `FP = Σ p·(1-t)`,
/// `FN = Σ (1-p)·t`. `β > α` weighs false negatives more (recall-oriented).
pub fn tversky_loss(logits: &Tensor, target: &Tensor, alpha: f64, beta: f64) -> Result<Tensor> {
    check_shapes(logits, target)?;
    match fused_loss(LossFn::Tversky { alpha, beta }, logits, target, SMOOTH)? {
        Some(loss) => Ok(loss),
        None => tversky_loss_reference(logits, target, alpha, beta),
    }
}

/// [`tversky_loss`] composed from candle ops.
pub fn tversky_loss_reference(
    logits: &Tensor,
    target: &Tensor,
    alpha: f64,
    beta: f64,
) -> Result<Tensor> {
    check_shapes(logits, target)?;
    let p = candle_nn::ops::sigmoid(logits)?;
    let tp = (&p * target)?.sum_all()?;
    let fp = (&p * target.affine(-1.0, 1.0)?)?.sum_all()?;
    let fn_ = (p.affine(-1.0, 1.0)? * target)?.sum_all()?;
    let den = ((&tp + fp.affine(alpha, 0.0)?)? + fn_.affine(beta, SMOOTH)?)?;
    ((tp + SMOOTH)? / den)?.affine(-1.0, 1.0)
}

/// Mean binary cross-entropy from logits, stable for any `x`:
/// `max(x, 0) - x·t + log(1 + exp(-|x|))`.
pub fn bce_with_logits(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    check_shapes(logits, target)?;
    match fused_loss(LossFn::Bce, logits, target, SMOOTH)? {
        Some(loss) => Ok(loss),
        None => bce_with_logits_reference(logits, target),
    }
}

/// [`bce_with_logits`] composed from candle ops.
pub fn bce_with_logits_reference(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    check_shapes(logits, target)?;
    let softplus_neg_abs = logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    let per_pixel = ((logits.relu()? - (logits * target)?)? + softplus_neg_abs)?;
    per_pixel.mean_all()
}

/// [`soft_dice_loss`] + [`bce_with_logits`].
pub fn dice_bce_loss(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    check_shapes(logits, target)?;
    match fused_loss(LossFn::DiceBce, logits, target, SMOOTH)? {
        Some(loss) => Ok(loss),
        None => {
            soft_dice_loss_reference(logits, target)? + bce_with_logits_reference(logits, target)?
        }
    }
}

/// Tversky weights. The default (α = 0.3, β = 0.7) favours recall.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TverskyParams {
    /// Weight of soft false positives.
    pub alpha: f64,
    /// Weight of soft false negatives.
    pub beta: f64,
}

impl Default for TverskyParams {
    fn default() -> Self {
        Self {
            alpha: 0.3,
            beta: 0.7,
        }
    }
}

/// Which training loss to use (`dice`, `tversky`, `dice-bce` in configs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// [`soft_dice_loss`], the notebook's loss.
    #[default]
    Dice,
    /// [`tversky_loss`].
    Tversky,
    /// [`dice_bce_loss`].
    DiceBce,
}

impl LossKind {
    /// The loss of `logits` against `target`; Tversky uses [`TverskyParams::default`].
    pub fn compute(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor> {
        self.compute_with(logits, target, &TverskyParams::default())
    }

    /// As [`LossKind::compute`] with explicit Tversky weights (ignored by the other kinds).
    pub fn compute_with(
        &self,
        logits: &Tensor,
        target: &Tensor,
        tversky: &TverskyParams,
    ) -> Result<Tensor> {
        match self {
            Self::Dice => soft_dice_loss(logits, target),
            Self::Tversky => tversky_loss(logits, target, tversky.alpha, tversky.beta),
            Self::DiceBce => dice_bce_loss(logits, target),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    // logits [ln 3, 0, -ln 3, ln 9] → p = sigmoid = [0.75, 0.5, 0.25, 0.9]; target [1, 0, 0, 1].
    fn fixture() -> Result<(Tensor, Tensor)> {
        let l3 = 3f64.ln();
        let logits =
            Tensor::new(&[l3, 0.0, -l3, 9f64.ln()], &Device::Cpu)?.reshape((1, 1, 2, 2))?;
        let target = Tensor::new(&[1f64, 0.0, 0.0, 1.0], &Device::Cpu)?.reshape((1, 1, 2, 2))?;
        Ok((logits, target))
    }

    fn scalar(t: &Tensor) -> Result<f64> {
        t.to_dtype(DType::F64)?.to_scalar::<f64>()
    }

    #[test]
    fn dice_loss_hand_computed() -> Result<()> {
        let (x, t) = fixture()?;
        // Σpt = 0.75 + 0.9 = 1.65; Σp = 2.4; Σt = 2
        // 1 - (2·1.65 + 1) / (2.4 + 2 + 1) = 1 - 4.3 / 5.4 = 0.2037037…
        let got = scalar(&soft_dice_loss(&x, &t)?)?;
        assert!((got - (1.0 - 4.3 / 5.4)).abs() < 1e-9, "{got}");
        Ok(())
    }

    #[test]
    fn tversky_loss_hand_computed() -> Result<()> {
        let (x, t) = fixture()?;
        // TP = 1.65; FP = 0.5 + 0.25 = 0.75; FN = 0.25 + 0.1 = 0.35; α = 0.3, β = 0.7
        // 1 - (1.65 + 1) / (1.65 + 0.225 + 0.245 + 1) = 1 - 2.65 / 3.12 = 0.1506410…
        let got = scalar(&tversky_loss(&x, &t, 0.3, 0.7)?)?;
        assert!((got - (1.0 - 2.65 / 3.12)).abs() < 1e-9, "{got}");
        // α = β = 0.5 is the Dice loss.
        let half = scalar(&tversky_loss(&x, &t, 0.5, 0.5)?)?;
        let dice_with_tp_smooth = 1.0 - (1.65 + 1.0) / (1.65 + 0.375 + 0.175 + 1.0);
        assert!((half - dice_with_tp_smooth).abs() < 1e-9);
        Ok(())
    }

    #[test]
    fn dice_bce_loss_hand_computed() -> Result<()> {
        let (x, t) = fixture()?;
        // BCE terms: -ln 0.75, -ln(1 - 0.5), -ln(1 - 0.25), -ln 0.9
        //   = 0.2876821 + 0.6931472 + 0.2876821 + 0.1053605 = 1.3738719; mean = 0.3434680
        let bce = ((4.0f64 / 3.0).ln() * 2.0 + 2f64.ln() + (10.0f64 / 9.0).ln()) / 4.0;
        assert!((scalar(&bce_with_logits(&x, &t)?)? - bce).abs() < 1e-9);
        let got = scalar(&dice_bce_loss(&x, &t)?)?;
        assert!((got - (1.0 - 4.3 / 5.4 + bce)).abs() < 1e-9, "{got}");
        Ok(())
    }

    #[test]
    fn bce_is_stable_for_large_logits() -> Result<()> {
        let x = Tensor::new(&[200f32, -200.0], &Device::Cpu)?;
        let t = Tensor::new(&[0f32, 1.0], &Device::Cpu)?;
        let got = scalar(&bce_with_logits(&x, &t)?)?;
        assert!((got - 200.0).abs() < 1e-3, "{got}");
        Ok(())
    }

    #[test]
    fn loss_kind_serde_and_dispatch() -> Result<()> {
        let kinds: Vec<LossKind> = serde_json::from_str(r#"["dice","tversky","dice-bce"]"#)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        assert_eq!(
            kinds,
            [LossKind::Dice, LossKind::Tversky, LossKind::DiceBce]
        );
        let (x, t) = fixture()?;
        assert!((scalar(&LossKind::Dice.compute(&x, &t)?)? - (1.0 - 4.3 / 5.4)).abs() < 1e-9);
        assert!((scalar(&LossKind::Tversky.compute(&x, &t)?)? - (1.0 - 2.65 / 3.12)).abs() < 1e-9);
        Ok(())
    }

    /// Every fused loss against its composition: value and logits gradient, f32, on a batch
    /// with large logits (saturated sigmoids) and an odd size.
    #[test]
    fn fused_losses_match_their_compositions() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&(Tensor::randn(0f32, 3.0, (3, 1, 17, 13), &dev)? * 2.0)?)?;
        let t = Tensor::rand(0f32, 1.0, (3, 1, 17, 13), &dev)?
            .ge(0.7)?
            .to_dtype(DType::F32)?;
        type Loss = fn(&Tensor, &Tensor) -> Result<Tensor>;
        let tversky: Loss = |x, t| tversky_loss(x, t, 0.3, 0.7);
        let tversky_ref: Loss = |x, t| tversky_loss_reference(x, t, 0.3, 0.7);
        let dice_bce_ref: Loss =
            |x, t| soft_dice_loss_reference(x, t)? + bce_with_logits_reference(x, t)?;
        let cases: [(&str, Loss, Loss); 4] = [
            ("dice", soft_dice_loss, soft_dice_loss_reference),
            ("tversky", tversky, tversky_ref),
            ("bce", bce_with_logits, bce_with_logits_reference),
            ("dice-bce", dice_bce_loss, dice_bce_ref),
        ];
        for (name, fused, reference) in cases {
            let (a, b) = (fused(x.as_tensor(), &t)?, reference(x.as_tensor(), &t)?);
            let (va, vb) = (scalar(&a)?, scalar(&b)?);
            assert!(
                (va - vb).abs() < 1e-5 * vb.abs().max(1.0),
                "{name}: {va} vs {vb}"
            );
            let ga = (a * 3.0)?.backward()?;
            let gb = (b * 3.0)?.backward()?;
            let missing = || candle_core::Error::Msg(format!("{name}: no gradient"));
            let ga = ga.get(x.as_tensor()).ok_or_else(missing)?;
            let gb = gb.get(x.as_tensor()).ok_or_else(missing)?;
            let err = (ga - gb)?.abs()?.max_all()?.to_scalar::<f32>()?
                / gb.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(err < 1e-4, "{name}: gradient rel err {err}");
        }
        Ok(())
    }

    #[test]
    fn losses_gradient_matches_finite_difference() -> Result<()> {
        let (x0, t) = fixture()?;
        let base: Vec<f64> = x0.flatten_all()?.to_vec1()?;
        let h = 1e-6;
        for kind in [LossKind::Dice, LossKind::Tversky, LossKind::DiceBce] {
            let x = Var::from_tensor(&x0)?;
            let grads = kind.compute(x.as_tensor(), &t)?.backward()?;
            let g = grads
                .get(x.as_tensor())
                .ok_or_else(|| candle_core::Error::Msg("no gradient".into()))?
                .flatten_all()?
                .to_vec1::<f64>()?;
            for i in [0usize, 1] {
                let eval = |d: f64| -> Result<f64> {
                    let mut v = base.clone();
                    v[i] += d;
                    let xt = Tensor::new(v.as_slice(), &Device::Cpu)?.reshape((1, 1, 2, 2))?;
                    scalar(&kind.compute(&xt, &t)?)
                };
                let fd = (eval(h)? - eval(-h)?) / (2.0 * h);
                assert!(
                    (fd - g[i]).abs() < 1e-6,
                    "{kind:?} element {i}: autograd {} vs finite difference {fd}",
                    g[i]
                );
            }
        }
        Ok(())
    }
}
