//! One fused, in-place Adam update of a parameter and its two moments: one sweep instead of the
//! 15 whole-tensor candle ops (each with its own output allocation) of the composed update.

use rayon::prelude::*;

/// The f32 constants of one Adam step, rounded from f64 exactly as candle rounds the scalars
/// of the composed update (`model::optim::Adam` on other devices), so both paths agree to the
/// last bit or so.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    inv_bias1: f32,
    inv_bias2: f32,
    eps: f32,
    lr: f32,
    /// `1 - lr·weight_decay`, or `None` without decay.
    decay: Option<f32>,
}

impl AdamStep {
    /// The constants of step `t` (1-based).
    pub fn new(lr: f64, beta1: f64, beta2: f64, eps: f64, weight_decay: f64, t: i32) -> Self {
        Self {
            beta1: beta1 as f32,
            one_minus_beta1: (1.0 - beta1) as f32,
            beta2: beta2 as f32,
            one_minus_beta2: (1.0 - beta2) as f32,
            inv_bias1: (1.0 / (1.0 - beta1.powi(t))) as f32,
            inv_bias2: (1.0 / (1.0 - beta2.powi(t))) as f32,
            eps: eps as f32,
            lr: lr as f32,
            decay: (weight_decay > 0.0).then_some((1.0 - lr * weight_decay) as f32),
        }
    }

    /// The constants in the order of the CUDA kernel's arguments (`lungseg_adam_update`):
    /// β1, 1-β1, β2, 1-β2, 1/bias1, 1/bias2, ε, lr and the decay factor (1 without decay, which
    /// multiplies exactly).
    pub fn as_f32s(&self) -> [f32; 9] {
        [
            self.beta1,
            self.one_minus_beta1,
            self.beta2,
            self.one_minus_beta2,
            self.inv_bias1,
            self.inv_bias2,
            self.eps,
            self.lr,
            self.decay.unwrap_or(1.0),
        ]
    }
}

/// Elements per parallel task (large parameters only).
const CHUNK: usize = 1 << 15;

/// `m ← β1·m + (1-β1)·g; v ← β2·v + (1-β2)·g²;
/// θ ← θ·(1 - lr·wd) - lr·(m / bias1) / (sqrt(v / bias2) + eps)`.
pub fn adam_update(step: &AdamStep, theta: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
    assert!(theta.len() == g.len() && m.len() == g.len() && v.len() == g.len());
    let s = *step;
    theta
        .par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK))
        .for_each(|(((theta, m), v), g)| {
            for (((t, m), v), &g) in theta.iter_mut().zip(m).zip(v).zip(g) {
                *m = *m * s.beta1 + g * s.one_minus_beta1;
                *v = *v * s.beta2 + g * g * s.one_minus_beta2;
                let update = (*m * s.inv_bias1) / ((*v * s.inv_bias2).sqrt() + s.eps);
                if let Some(decay) = s.decay {
                    *t *= decay;
                }
                *t -= update * s.lr;
            }
        });
}
