//! Seeded weight initialisation with PyTorch's default distributions, because candle cannot seed
//! its CPU random generator: the same seed then gives the same model on every run.

use crate::rng::SplitMix64;
use candle_core::{Result, Tensor};
use candle_nn::VarMap;

/// Re-initialises every variable of `varmap` from `seed`, as PyTorch initialises a fresh module:
/// conv weights and biases uniform in ±1/√fan_in (kaiming_uniform with a = √5), batch-norm
/// weight 1, bias 0, running mean 0, running variance 1. Variables are visited in name order and
/// each draws from its own named stream, so the result does not depend on creation order.
pub fn init_like_pytorch(varmap: &VarMap, seed: u64) -> Result<()> {
    let map = varmap
        .data()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut names: Vec<&String> = map.keys().collect();
    names.sort();
    for name in names {
        let var = &map[name];
        let shape = var.shape().clone();
        let device = var.device();
        let is_bn = |suffix: &str| name.ends_with(suffix) && !name.ends_with(".0.weight");
        let value = if name.ends_with(".running_var") {
            Tensor::ones(&shape, var.dtype(), device)?
        } else if name.ends_with(".running_mean") {
            Tensor::zeros(&shape, var.dtype(), device)?
        } else if shape.rank() == 1 && is_batch_norm(name) {
            if is_bn(".weight") {
                Tensor::ones(&shape, var.dtype(), device)?
            } else {
                Tensor::zeros(&shape, var.dtype(), device)?
            }
        } else {
            let fan_in = fan_in(name, &map)?;
            let bound = 1.0 / (fan_in as f64).sqrt();
            let mut rng = SplitMix64::derive(seed, name);
            let values: Vec<f32> = (0..shape.elem_count())
                .map(|_| rng.uniform(-bound, bound) as f32)
                .collect();
            Tensor::from_vec(values, &shape, device)?.to_dtype(var.dtype())?
        };
        var.set(&value)?;
    }
    Ok(())
}

/// Batch-norm parameters sit at positions 1 and 4 of a `DoubleConv`'s `net`.
fn is_batch_norm(name: &str) -> bool {
    name.contains(".net.1.") || name.contains(".net.4.")
}

/// Inputs per output unit of the conv that owns `name` (its weight's C_in·kH·kW).
fn fan_in(name: &str, map: &std::collections::HashMap<String, candle_core::Var>) -> Result<usize> {
    let owner = name.rsplit_once('.').map_or(name, |(o, _)| o);
    let weight = map
        .get(&format!("{owner}.weight"))
        .ok_or_else(|| candle_core::Error::Msg(format!("no weight for {name}")))?;
    let dims = weight.dims();
    Ok(dims.iter().skip(1).product::<usize>().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{UNet, UNetConfig};
    use candle_core::{DType, Device};
    use candle_nn::VarBuilder;

    fn build(seed: u64) -> VarMap {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        UNet::new(&UNetConfig { base_channels: 4 }, vb).unwrap();
        init_like_pytorch(&vm, seed).unwrap();
        vm
    }

    fn get(vm: &VarMap, name: &str) -> Vec<f32> {
        let map = vm.data().lock().unwrap();
        map[name].flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn same_seed_same_weights_and_pytorch_bounds() {
        let (a, b, c) = (build(1), build(1), build(2));
        let w = get(&a, "d1.net.0.weight");
        assert_eq!(w, get(&b, "d1.net.0.weight"));
        assert_ne!(w, get(&c, "d1.net.0.weight"));
        // d1.net.0 has fan_in 1*3*3 = 9, so |w| <= 1/3.
        assert!(w.iter().all(|v| v.abs() <= 1.0 / 3.0));
        // u2.net.0: fan_in (8+4)*9 = 108.
        let u = get(&a, "u2.net.0.weight");
        assert!(u.iter().all(|v| v.abs() <= 1.0 / 108f32.sqrt()));
        assert!(get(&a, "d1.net.1.weight").iter().all(|&v| v == 1.0));
        assert!(get(&a, "d1.net.1.bias").iter().all(|&v| v == 0.0));
        assert!(get(&a, "d1.net.1.running_var").iter().all(|&v| v == 1.0));
        // out.bias: fan_in of out.weight is 4*1*1 → bound 0.5.
        assert!(get(&a, "out.bias").iter().all(|v| v.abs() <= 0.5));
    }
}
