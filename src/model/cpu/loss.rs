//! The segmentation losses on sigmoid probabilities of logits (Dice, Tversky, binary
//! cross-entropy, Dice + BCE) in two parallel sweeps: one gathers the pooled sums in f64, one
//! writes the logits' gradient. candle's composition takes about 15 whole-tensor ops, each at
//! least as large as the logits, which at width 8 cost more than some convolutions.

use rayon::prelude::*;

/// Elements per parallel chunk.
const CHUNK: usize = 1 << 14;

/// Which loss; every variant uses the notebook's smoothing `smooth` on its ratio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LossFn {
    /// `1 - (2·Σpt + s) / (Σp + Σt + s)`.
    Dice,
    /// `1 - (TP + s) / (TP + α·FP + β·FN + s)`.
    Tversky {
        /// Weight of soft false positives.
        alpha: f64,
        /// Weight of soft false negatives.
        beta: f64,
    },
    /// Mean binary cross-entropy.
    Bce,
    /// [`LossFn::Dice`] + [`LossFn::Bce`].
    DiceBce,
}

/// Pooled sums over all pixels.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LossSums {
    /// `Σ p`.
    pub p: f64,
    /// `Σ t`.
    pub t: f64,
    /// `Σ p·t`.
    pub pt: f64,
    /// `Σ [max(x, 0) - x·t + ln(1 + e^-|x|)]`.
    pub bce: f64,
    /// Pixels.
    pub n: usize,
}

impl std::ops::Add for LossSums {
    type Output = LossSums;
    fn add(self, o: LossSums) -> LossSums {
        LossSums {
            p: self.p + o.p,
            t: self.t + o.t,
            pt: self.pt + o.pt,
            bce: self.bce + o.bce,
            n: self.n + o.n,
        }
    }
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    // Stable on both sides: e^-|x| never overflows.
    let e = (-x.abs()).exp();
    if x >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    }
}

/// The sums of `logits` against `target` (same length).
pub fn loss_sums(logits: &[f32], target: &[f32]) -> LossSums {
    assert_eq!(logits.len(), target.len(), "loss: lengths");
    logits
        .par_chunks(CHUNK)
        .zip(target.par_chunks(CHUNK))
        .map(|(x, t)| {
            let mut s = LossSums {
                n: x.len(),
                ..LossSums::default()
            };
            for (&x, &t) in x.iter().zip(t) {
                let p = f64::from(sigmoid(x));
                let (x, t) = (f64::from(x), f64::from(t));
                s.p += p;
                s.t += t;
                s.pt += p * t;
                s.bce += x.max(0.0) - x * t + (-x.abs()).exp().ln_1p();
            }
            s
        })
        .reduce(LossSums::default, |a, b| a + b)
}

/// `dL/dp_i = a·t_i + b` for the ratio losses, `dL/dx_i += c·(p_i - t_i)` for the BCE part.
#[derive(Debug, Clone, Copy, Default)]
struct Coefficients {
    a: f64,
    b: f64,
    c: f64,
}

impl LossFn {
    /// The loss value from the sums.
    pub fn value(&self, s: &LossSums, smooth: f64) -> f64 {
        let dice = || 1.0 - (2.0 * s.pt + smooth) / (s.p + s.t + smooth);
        let bce = || s.bce / s.n.max(1) as f64;
        match *self {
            LossFn::Dice => dice(),
            LossFn::Tversky { alpha, beta } => {
                let (fp, fneg) = (s.p - s.pt, s.t - s.pt);
                1.0 - (s.pt + smooth) / (s.pt + alpha * fp + beta * fneg + smooth)
            }
            LossFn::Bce => bce(),
            LossFn::DiceBce => dice() + bce(),
        }
    }

    fn coefficients(&self, s: &LossSums, smooth: f64) -> Coefficients {
        let dice = || {
            // L = 1 - N/D, N = 2·Σpt + s, D = Σp + Σt + s: dL/dp_i = (N - 2·t_i·D) / D².
            let (num, den) = (2.0 * s.pt + smooth, s.p + s.t + smooth);
            (-2.0 / den, num / (den * den))
        };
        let c = 1.0 / s.n.max(1) as f64;
        match *self {
            LossFn::Dice => {
                let (a, b) = dice();
                Coefficients { a, b, c: 0.0 }
            }
            LossFn::Tversky { alpha, beta } => {
                // N = TP + s; D = TP·(1 - α - β) + α·Σp + β·Σt + s;
                // dN/dp_i = t_i, dD/dp_i = t_i·(1 - α - β) + α; dL/dp_i = -(N'·D - N·D')/D².
                let k = 1.0 - alpha - beta;
                let num = s.pt + smooth;
                let den = s.pt * k + alpha * s.p + beta * s.t + smooth;
                let d2 = den * den;
                Coefficients {
                    a: -(den - num * k) / d2,
                    b: num * alpha / d2,
                    c: 0.0,
                }
            }
            LossFn::Bce => Coefficients { a: 0.0, b: 0.0, c },
            LossFn::DiceBce => {
                let (a, b) = dice();
                Coefficients { a, b, c }
            }
        }
    }
}

/// `grad = scale · dL/dlogits` for the loss `f` with the sums `s` of these `logits` and
/// `target`. Every element of `grad` is written.
pub fn loss_grad(
    f: LossFn,
    s: &LossSums,
    smooth: f64,
    scale: f64,
    logits: &[f32],
    target: &[f32],
    grad: &mut [f32],
) {
    assert!(logits.len() == target.len() && grad.len() == logits.len());
    let k = f.coefficients(s, smooth);
    let (a, b, c) = (
        (k.a * scale) as f32,
        (k.b * scale) as f32,
        (k.c * scale) as f32,
    );
    grad.par_chunks_mut(CHUNK)
        .zip(logits.par_chunks(CHUNK).zip(target.par_chunks(CHUNK)))
        .for_each(|(g, (x, t))| {
            for ((g, &x), &t) in g.iter_mut().zip(x).zip(t) {
                let p = sigmoid(x);
                *g = (a * t + b) * p * (1.0 - p) + c * (p - t);
            }
        });
}
