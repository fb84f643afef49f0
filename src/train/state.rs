//! What a run directory remembers between epochs for `--resume`: the loop state, the `last`
//! weights and the optimizer's moments.

use crate::atomic::commit;
use crate::error::{Error, Result};
use crate::json::write_json_atomic;
use crate::layout::{temporary_name, RunDir};
use crate::model::optim::Adam;
use crate::run::checkpoint::save_weights;
use crate::run::status::StopReason;
use crate::train::early_stop::EarlyStopping;
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

/// The loop's position, saved after every epoch and on interruption.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// The 1-based epoch to run next.
    pub next_epoch: usize,
    /// Training steps of `next_epoch` already done (after an interruption mid-epoch).
    pub steps_done: usize,
    /// Sum of the training losses of those steps.
    pub partial_loss_sum: f64,
    /// Patches of those steps.
    pub partial_patches: usize,
    /// Early-stopping state.
    pub stopping: EarlyStopping,
    /// Training has ended (by patience or the epoch limit).
    pub finished: bool,
    /// Why it ended or paused.
    pub stop_reason: Option<StopReason>,
}

impl TrainState {
    /// The state of a fresh run: epoch 1, nothing done.
    pub fn start(stopping: EarlyStopping) -> Self {
        Self {
            next_epoch: 1,
            steps_done: 0,
            partial_loss_sum: 0.0,
            partial_patches: 0,
            stopping,
            finished: false,
            stop_reason: None,
        }
    }

    /// Moves past the finished `epoch`; `stop` ends training.
    pub fn end_epoch(&mut self, epoch: usize, stop: Option<StopReason>) {
        self.next_epoch = epoch + 1;
        self.steps_done = 0;
        self.partial_loss_sum = 0.0;
        self.partial_patches = 0;
        if let Some(reason) = stop {
            self.finished = true;
            self.stop_reason = Some(reason);
        }
    }
}

/// Saves the `last` checkpoint, the optimizer and the loop state, in that order, so the state
/// file (written last) never points past the weights.
pub fn save_last(run: &RunDir, varmap: &VarMap, opt: &Adam, state: &TrainState) -> Result<()> {
    save_weights(varmap, &run.last_checkpoint())?;
    let path = run.last_optimizer();
    let tmp = temporary_name(&path);
    let tensors = opt
        .state()
        .map_err(|e| Error::tensor("collecting optimizer state", e))?;
    candle_core::safetensors::save(&tensors, &tmp)
        .map_err(|e| Error::tensor(format!("{}: saving optimizer", tmp.display()), e))?;
    commit(&tmp, &path)?;
    write_json_atomic(&run.train_state(), state)
}

/// Restores the optimizer written by [`save_last`].
pub fn load_optimizer(run: &RunDir, opt: &mut Adam, device: &candle_core::Device) -> Result<()> {
    let path = run.last_optimizer();
    let tensors = candle_core::safetensors::load(&path, device)
        .map_err(|e| Error::input(&path, format!("unreadable optimizer state: {e}")))?;
    opt.load_state(&tensors)
        .map_err(|e| Error::input(&path, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::monitor::MonitorSpec;
    use crate::run::status::RunStatus;

    #[test]
    fn other_stages_read_the_status_out_of_the_saved_state() {
        let state = TrainState {
            next_epoch: 4,
            steps_done: 0,
            partial_loss_sum: 0.0,
            partial_patches: 0,
            stopping: EarlyStopping::new(MonitorSpec::default(), 5, 3),
            finished: true,
            stop_reason: Some(StopReason::MaxEpochs),
        };
        let json = serde_json::to_vec(&state).unwrap_or_default();
        let status: RunStatus = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            status,
            RunStatus {
                finished: true,
                stop_reason: Some(StopReason::MaxEpochs)
            }
        );
    }
}
