//! What a run directory remembers between epochs for `--resume`: the loop state
//! (`train_state.json`). The `last` weights and the optimizer's moments are `train::last`'s.

use crate::error::{Error, Result};
use crate::run::settings::{TrainSettings, MAX_STEPS};
use crate::run::status::StopReason;
use crate::train::early_stop::EarlyStopping;
use serde::{Deserialize, Serialize};
use std::path::Path;

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
    /// The save this state committed (see [`crate::train::commit`]); 0 before the first.
    #[serde(default)]
    pub generation: u64,
    /// The files that save wrote, by name in the run directory.
    #[serde(default)]
    pub pending: Vec<String>,
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
            generation: 0,
            pending: Vec::new(),
        }
    }

    /// Checks a state read back from `path` against the run's settings, as strictly as a flag:
    /// a hand-edited or damaged state is an input error, never a panic or a runaway run.
    pub fn validate(&self, settings: &TrainSettings, path: &Path) -> Result<()> {
        let bad = |what: String| {
            Err(Error::input(
                path,
                format!("not a valid training state: {what}"),
            ))
        };
        let max_next = settings.max_epochs + 1;
        if !(1..=max_next).contains(&self.next_epoch) {
            return bad(format!(
                "next_epoch {} is outside 1..={max_next}",
                self.next_epoch
            ));
        }
        if self.steps_done > MAX_STEPS
            || self.partial_patches > self.steps_done.saturating_mul(settings.batch_size)
        {
            return bad(format!(
                "{} steps and {} patches done do not fit batches of {}",
                self.steps_done, self.partial_patches, settings.batch_size
            ));
        }
        if !self.partial_loss_sum.is_finite() || self.partial_loss_sum < 0.0 {
            return bad(format!("partial_loss_sum {}", self.partial_loss_sum));
        }
        if self.stopping.max_epochs != settings.max_epochs
            || self.stopping.spec != settings.monitor_spec()
            || self.stopping.patience.patience != settings.patience
        {
            return bad("its early-stopping settings differ from config.json's".into());
        }
        if self
            .stopping
            .best
            .best_epoch
            .is_some_and(|b| b >= self.next_epoch)
        {
            return bad("its best epoch lies in the future".into());
        }
        Ok(())
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
            generation: 3,
            pending: vec!["last.safetensors".into()],
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
