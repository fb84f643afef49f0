//! Where a run stands, as other stages read it from `train_state.json`: finished or not, and why
//! training ended. The trainer owns the file's full contents (`train::state::TrainState`).

use crate::error::Result;
use crate::json::read_json;
use crate::layout::RunDir;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why training ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// `patience` epochs in a row without improvement.
    Patience,
    /// The epoch budget was used up.
    MaxEpochs,
    /// The user interrupted (Ctrl-C).
    Interrupted,
}

impl StopReason {
    /// The name written to `train_state.json` and shown in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Patience => "patience",
            Self::MaxEpochs => "max-epochs",
            Self::Interrupted => "interrupted",
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Patience => "no improvement within patience",
            Self::MaxEpochs => "reached the maximum number of epochs",
            Self::Interrupted => "interrupted",
        })
    }
}

/// The fields of `train_state.json` that say where a run stands.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RunStatus {
    /// Training has ended (by patience or the epoch limit).
    pub finished: bool,
    /// Why it ended or paused.
    pub stop_reason: Option<StopReason>,
}

impl RunStatus {
    /// Reads the status of the run at `run`; `None` when training never saved its state.
    pub fn read(run: &RunDir) -> Result<Option<Self>> {
        read_json(&run.train_state())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_serialized_names() {
        for r in [
            StopReason::Patience,
            StopReason::MaxEpochs,
            StopReason::Interrupted,
        ] {
            let json = serde_json::to_string(&r).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", r.name()));
        }
    }
}
