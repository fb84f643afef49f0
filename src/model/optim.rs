//! Adam (PyTorch's `torch.optim.Adam`, no weight decay by default) with state that can be saved
//! and restored, which candle-nn's `AdamW` keeps private: `--resume` needs the moments.

use candle_core::{Result, Tensor, Var};
use std::collections::HashMap;

/// Adam hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamParams {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay (AdamW); 0 is plain Adam.
    pub weight_decay: f64,
}

impl Default for AdamParams {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
}

/// Adam over named variables.
pub struct Adam {
    slots: Vec<Slot>,
    step: usize,
    params: AdamParams,
}

impl Adam {
    /// An optimizer for `vars` (name, variable), with zero moments.
    pub fn new(vars: Vec<(String, Var)>, params: AdamParams) -> Result<Self> {
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                let m = var.zeros_like()?;
                let v = var.zeros_like()?;
                Ok(Slot { name, var, m, v })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            slots,
            step: 0,
            params,
        })
    }

    /// Steps taken so far.
    pub fn steps(&self) -> usize {
        self.step
    }

    /// The learning rate.
    pub fn lr(&self) -> f64 {
        self.params.lr
    }

    /// Back-propagates `loss` and applies one update:
    /// m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²; θ ← θ − lr·(m/(1−β1ᵗ)) / (√(v/(1−β2ᵗ)) + ε).
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step += 1;
        let p = self.params;
        let t = self.step as i32;
        let c1 = 1.0 - p.beta1.powi(t);
        let c2 = 1.0 - p.beta2.powi(t);
        for slot in &mut self.slots {
            let Some(g) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            let m = ((&slot.m * p.beta1)? + (g * (1.0 - p.beta1))?)?;
            let v = ((&slot.v * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            let m_hat = (&m / c1)?;
            let v_hat = (&v / c2)?;
            let update = (m_hat / (v_hat.sqrt()? + p.eps)?)?;
            let mut theta = slot.var.as_tensor().clone();
            if p.weight_decay > 0.0 {
                theta = (theta * (1.0 - p.lr * p.weight_decay))?;
            }
            slot.var.set(&(theta - (update * p.lr)?)?)?;
            slot.m = m.detach();
            slot.v = v.detach();
        }
        Ok(())
    }

    /// The state as named tensors (`<var>.exp_avg`, `<var>.exp_avg_sq`, `step`), for
    /// safetensors.
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for s in &self.slots {
            out.insert(format!("{}.exp_avg", s.name), s.m.clone());
            out.insert(format!("{}.exp_avg_sq", s.name), s.v.clone());
        }
        let device = self
            .slots
            .first()
            .map(|s| s.var.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        out.insert("step".into(), Tensor::new(&[self.step as f32], &device)?);
        Ok(out)
    }

    /// Restores a state written by [`Adam::state`]. Every variable must be present.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        for s in &mut self.slots {
            let get = |key: String| {
                state
                    .get(&key)
                    .ok_or_else(|| candle_core::Error::Msg(format!("optimizer state lacks {key}")))
            };
            s.m = get(format!("{}.exp_avg", s.name))?.to_device(s.var.device())?;
            s.v = get(format!("{}.exp_avg_sq", s.name))?.to_device(s.var.device())?;
        }
        let step = state
            .get("step")
            .ok_or_else(|| candle_core::Error::Msg("optimizer state lacks step".into()))?
            .to_vec1::<f32>()?;
        self.step = step.first().copied().unwrap_or(0.0) as usize;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn two_adam_steps_match_pytorch() {
        // PyTorch reference:
        //   w = torch.tensor([1.0, -2.0], requires_grad=True)
        //   opt = torch.optim.Adam([w], lr=0.1)
        //   for _ in range(2):
        //       opt.zero_grad(); loss = (w**2).sum() + 3*w[0]; loss.backward(); opt.step()
        //   print(w)  # tensor([ 0.800127, -1.800167])
        // Step 1 moves each weight by lr·sign(g); step 2 is recomputed in f64 below.
        let w = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let mut opt = Adam::new(
            vec![("w".into(), w.clone())],
            AdamParams {
                lr: 0.1,
                ..AdamParams::default()
            },
        )
        .unwrap();
        let three = Tensor::new(&[3.0f32, 0.0], &Device::Cpu).unwrap();
        let mut seen = Vec::new();
        for _ in 0..2 {
            let loss = (w.as_tensor().sqr().unwrap().sum_all().unwrap()
                + (w.as_tensor() * &three).unwrap().sum_all().unwrap())
            .unwrap();
            opt.backward_step(&loss).unwrap();
            seen.push(w.as_tensor().to_vec1::<f32>().unwrap());
        }
        assert!((seen[0][0] - 0.9).abs() < 1e-6 && (seen[0][1] + 1.9).abs() < 1e-6);
        // m1 = 0.1·g1, v1 = 0.001·g1²; m2 = 0.9·m1 + 0.1·g2, v2 = 0.999·v1 + 0.001·g2².
        let step2 = |g1: f64, g2: f64| {
            let m = 0.9 * 0.1 * g1 + 0.1 * g2;
            let v = 0.999 * 0.001 * g1 * g1 + 0.001 * g2 * g2;
            0.1 * (m / (1.0 - 0.81)) / ((v / (1.0 - 0.999f64.powi(2))).sqrt() + 1e-8)
        };
        let want0 = 0.9 - step2(5.0, 4.8);
        let want1 = -1.9 - step2(-4.0, -3.8);
        assert!((want0 - 0.800_127).abs() < 1e-6 && (want1 + 1.800_167).abs() < 1e-6);
        assert!(
            (f64::from(seen[1][0]) - want0).abs() < 1e-6,
            "{:?} {want0}",
            seen[1]
        );
        assert!(
            (f64::from(seen[1][1]) - want1).abs() < 1e-6,
            "{:?} {want1}",
            seen[1]
        );
    }

    #[test]
    fn state_round_trips() {
        let w = Var::new(&[1.0f32, 2.0], &Device::Cpu).unwrap();
        let mut a = Adam::new(vec![("w".into(), w.clone())], AdamParams::default()).unwrap();
        a.backward_step(&w.as_tensor().sqr().unwrap().sum_all().unwrap())
            .unwrap();
        let st = a.state().unwrap();
        let mut b = Adam::new(vec![("w".into(), w.clone())], AdamParams::default()).unwrap();
        b.load_state(&st).unwrap();
        assert_eq!(b.steps(), 1);
        assert_eq!(
            b.state().unwrap()["w.exp_avg"].to_vec1::<f32>().unwrap(),
            st["w.exp_avg"].to_vec1::<f32>().unwrap()
        );
    }
}
