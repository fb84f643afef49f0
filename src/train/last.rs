//! The `last` checkpoint of a run: its weights and the optimizer's moments, staged as part of an
//! epoch's save (`train::commit`) and loaded back on `--resume`.

use crate::atomic::commit;
use crate::error::{Error, Result};
use crate::layout::{temporary_name, RunDir};
use crate::model::optim::Adam;
use crate::model::trainable_vars;
use crate::run::checkpoint::save_weights;
use crate::train::commit::Save;
use candle_nn::VarMap;

/// Writes the `last` weights and the optimizer's moments as part of `save`.
pub fn stage_last(save: &mut Save, run: &RunDir, varmap: &VarMap, opt: &Adam) -> Result<()> {
    save_weights(varmap, &save.stage(&run.last_checkpoint()))?;
    let path = save.stage(&run.last_optimizer());
    let tmp = temporary_name(&path);
    let tensors = opt
        .state()
        .map_err(|e| Error::tensor("collecting optimizer state", e))?;
    candle_core::safetensors::save(&tensors, &tmp)
        .map_err(|e| Error::tensor(format!("{}: saving optimizer", tmp.display()), e))?;
    commit(&tmp, &path)
}

/// Restores the optimizer written by [`stage_last`]. Moments whose shapes do not match the
/// network's variables (a state from another run) are an input error.
pub fn load_optimizer(
    run: &RunDir,
    opt: &mut Adam,
    varmap: &VarMap,
    device: &candle_core::Device,
) -> Result<()> {
    let path = run.last_optimizer();
    let bad = |why: String| Error::input(&path, format!("not a usable optimizer state: {why}"));
    let tensors = candle_core::safetensors::load(&path, device)
        .map_err(|e| bad(crate::error::first_line(&e.to_string())))?;
    for (name, var) in trainable_vars(varmap) {
        for key in [format!("{name}.exp_avg"), format!("{name}.exp_avg_sq")] {
            match tensors.get(&key) {
                Some(t) if t.dims() == var.dims() => {}
                Some(t) => {
                    return Err(bad(format!(
                        "`{key}` has shape {:?}, the network's `{name}` {:?}",
                        t.dims(),
                        var.dims()
                    )))
                }
                None => return Err(bad(format!("`{key}` is missing"))),
            }
        }
    }
    opt.load_state(&tensors)
        .map_err(|e| bad(crate::error::first_line(&e.to_string())))
}
