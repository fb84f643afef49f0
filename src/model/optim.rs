//! Adam (PyTorch's `torch.optim.Adam`, no weight decay by default) with state that can be saved
//! and restored, which candle-nn's `AdamW` keeps private: `--resume` needs the moments.
//!
//! On the CPU the moments are plain vectors and each step is one fused in-place sweep per
//! parameter ([`crate::model::cpu::adam`]); elsewhere the update is composed from candle ops.

use super::cpu::adam::{adam_update, AdamStep};
use super::ops::with_f32;
use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Result, Tensor, Var};
use std::cell::RefCell;
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

/// The two moments of one parameter.
enum Moments {
    /// f32 on the CPU: updated in place by the fused kernel.
    Host { m: Vec<f32>, v: Vec<f32> },
    /// f32 on CUDA with the `cudnn` feature: `m` then `v` in one tensor that only this slot
    /// holds, updated in place with the parameter by one kernel (`model::gpu::adam_update`).
    #[cfg(feature = "cudnn")]
    Packed { mv: Tensor },
    /// Anywhere else: tensors, replaced by the composed update.
    Device { m: Tensor, v: Tensor },
}

impl Moments {
    /// `m` and `v` packed into one fresh f32 tensor on `var`'s device.
    #[cfg(feature = "cudnn")]
    fn packed(m: &Tensor, v: &Tensor, var: &Var) -> Result<Self> {
        let flat = |t: &Tensor| {
            t.flatten_all()?
                .to_dtype(DType::F32)?
                .to_device(var.device())
        };
        Ok(Moments::Packed {
            mv: Tensor::cat(&[flat(m)?, flat(v)?], 0)?,
        })
    }

    #[cfg(not(feature = "cudnn"))]
    fn packed(m: &Tensor, v: &Tensor, _var: &Var) -> Result<Self> {
        Ok(Moments::Device {
            m: m.clone(),
            v: v.clone(),
        })
    }
}

/// True where the fused CUDA update runs: f32 on CUDA with the `cudnn` feature.
fn packed_applies(var: &Var) -> bool {
    cfg!(feature = "cudnn") && var.device().is_cuda() && var.dtype() == DType::F32
}

struct Slot {
    name: String,
    var: Var,
    moments: Moments,
}

impl Slot {
    fn new(name: String, var: Var) -> Result<Self> {
        let moments = if var.device().is_cpu() && var.dtype() == DType::F32 {
            let n = var.elem_count();
            Moments::Host {
                m: vec![0.0; n],
                v: vec![0.0; n],
            }
        } else if packed_applies(&var) {
            Moments::packed(&var.zeros_like()?, &var.zeros_like()?, &var)?
        } else {
            Moments::Device {
                m: var.zeros_like()?,
                v: var.zeros_like()?,
            }
        };
        Ok(Self { name, var, moments })
    }

    /// The moments as tensors of the variable's shape, on its device.
    fn moment_tensors(&self) -> Result<(Tensor, Tensor)> {
        match &self.moments {
            Moments::Host { m, v } => Ok((
                Tensor::from_slice(m, self.var.shape(), self.var.device())?,
                Tensor::from_slice(v, self.var.shape(), self.var.device())?,
            )),
            #[cfg(feature = "cudnn")]
            Moments::Packed { mv } => {
                let n = self.var.elem_count();
                let part = |start| mv.narrow(0, start, n)?.reshape(self.var.shape())?.copy();
                Ok((part(0)?, part(n)?))
            }
            Moments::Device { m, v } => Ok((m.clone(), v.clone())),
        }
    }

    /// Replaces the moments with `m` and `v` (any device; shapes must match).
    fn set_moments(&mut self, m: &Tensor, v: &Tensor) -> Result<()> {
        for t in [m, v] {
            if t.shape() != self.var.shape() {
                candle_core::bail!("optimizer state for {} has shape {:?}", self.name, t.dims())
            }
        }
        self.moments = match self.moments {
            Moments::Host { .. } => Moments::Host {
                m: m.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?,
                v: v.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?,
            },
            #[cfg(feature = "cudnn")]
            Moments::Packed { .. } => Moments::packed(m, v, &self.var)?,
            Moments::Device { .. } => Moments::Device {
                m: m.to_device(self.var.device())?,
                v: v.to_device(self.var.device())?,
            },
        };
        Ok(())
    }

    /// One Adam update with gradient `g`.
    fn update(&mut self, g: &Tensor, p: &AdamParams, t: i32) -> Result<()> {
        match &mut self.moments {
            Moments::Host { m, v } => {
                let step = AdamStep::new(p.lr, p.beta1, p.beta2, p.eps, p.weight_decay, t);
                with_f32(g, "adam", |g| {
                    let op = FusedAdam {
                        step,
                        moments: RefCell::new((m.as_mut_slice(), v.as_mut_slice())),
                        grad: g,
                    };
                    self.var.as_tensor().inplace_op1(&op)
                })
            }
            #[cfg(feature = "cudnn")]
            Moments::Packed { mv } => {
                let step = AdamStep::new(p.lr, p.beta1, p.beta2, p.eps, p.weight_decay, t);
                crate::model::gpu::adam_update(step, self.var.as_tensor(), g, mv)
            }
            Moments::Device { m, v } => {
                let c1 = 1.0 - p.beta1.powi(t);
                let c2 = 1.0 - p.beta2.powi(t);
                let m_new = ((&*m * p.beta1)? + (g * (1.0 - p.beta1))?)?;
                let v_new = ((&*v * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
                let m_hat = (&m_new / c1)?;
                let v_hat = (&v_new / c2)?;
                let update = (m_hat / (v_hat.sqrt()? + p.eps)?)?;
                let mut theta = self.var.as_tensor().clone();
                if p.weight_decay > 0.0 {
                    theta = (theta * (1.0 - p.lr * p.weight_decay))?;
                }
                self.var.set(&(theta - (update * p.lr)?)?)?;
                *m = m_new.detach();
                *v = v_new.detach();
                Ok(())
            }
        }
    }
}

/// The in-place update of one CPU parameter, as a candle in-place op on the variable (so that
/// its storage is written under candle's lock).
struct FusedAdam<'a> {
    step: AdamStep,
    moments: RefCell<(&'a mut [f32], &'a mut [f32])>,
    grad: &'a [f32],
}

impl InplaceOp1 for FusedAdam<'_> {
    fn name(&self) -> &'static str {
        "lungseg-adam"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let CpuStorage::F32(theta) = storage else {
            candle_core::bail!("lungseg-adam: the parameter is not f32")
        };
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or(candle_core::Error::RequiresContiguous { op: "lungseg-adam" })?;
        let mut moments = self.moments.borrow_mut();
        let (m, v) = &mut *moments;
        if end - start != self.grad.len() || m.len() != self.grad.len() {
            candle_core::bail!("lungseg-adam: parameter, moments and gradient differ in size")
        }
        adam_update(&self.step, &mut theta[start..end], m, v, self.grad);
        Ok(())
    }
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
            .map(|(name, var)| Slot::new(name, var))
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
        self.step(&loss.backward()?)
    }

    /// Applies one update with the gradients `grads` (variables without one are left alone).
    pub fn step(&mut self, grads: &candle_core::backprop::GradStore) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        for slot in &mut self.slots {
            let Some(g) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            slot.update(g, &self.params, t)?;
        }
        Ok(())
    }

    /// The state as named tensors (`<var>.exp_avg`, `<var>.exp_avg_sq`, `step`), for
    /// safetensors.
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for s in &self.slots {
            let (m, v) = s.moment_tensors()?;
            out.insert(format!("{}.exp_avg", s.name), m);
            out.insert(format!("{}.exp_avg_sq", s.name), v);
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
            let m = get(format!("{}.exp_avg", s.name))?.clone();
            let v = get(format!("{}.exp_avg_sq", s.name))?.clone();
            s.set_moments(&m, &v)?;
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

    /// The fused CPU update against the composed one (run through `Moments::Device`), over a
    /// few steps with weight decay, on a parameter larger than one parallel chunk.
    #[test]
    fn fused_update_matches_composed_update() -> Result<()> {
        let dev = Device::Cpu;
        let n = 70_001;
        let start = Tensor::randn(0f32, 1.0, n, &dev)?;
        let (a, b) = (
            Var::from_tensor(&start.copy()?)?,
            Var::from_tensor(&start.copy()?)?,
        );
        let params = AdamParams {
            lr: 1e-2,
            weight_decay: 0.1,
            ..AdamParams::default()
        };
        let mut fused = Adam::new(vec![("w".into(), a.clone())], params)?;
        let mut composed = Adam::new(vec![("w".into(), b.clone())], params)?;
        let (m, v) = (b.zeros_like()?, b.zeros_like()?);
        composed.slots[0].moments = Moments::Device { m, v };
        let target = Tensor::randn(0f32, 1.0, n, &dev)?;
        for _ in 0..3 {
            fused.backward_step(&(a.as_tensor() - &target)?.sqr()?.sum_all()?)?;
            composed.backward_step(&(b.as_tensor() - &target)?.sqr()?.sum_all()?)?;
        }
        let diff = (a.as_tensor() - b.as_tensor())?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-6, "parameters differ by {diff}");
        let (sa, sb) = (fused.state()?, composed.state()?);
        for key in ["w.exp_avg", "w.exp_avg_sq"] {
            let d = (&sa[key] - &sb[key])?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            let s = sb[key].abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d <= 1e-6 * s, "{key} differs by {d}");
        }
        Ok(())
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
