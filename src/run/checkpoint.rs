//! Checkpoint files (`best`/`last.safetensors`): which one to load, and saving and loading
//! weights atomically.

use crate::atomic::commit;
use crate::error::{Error, Result};
use crate::layout::temporary_name;
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Which checkpoint of a run to load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum CheckpointChoice {
    /// `best.safetensors`: the best epoch by the run's monitor.
    #[default]
    Best,
    /// `last.safetensors`: the last finished epoch.
    Last,
}

impl std::fmt::Display for CheckpointChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Best => "best",
            Self::Last => "last",
        })
    }
}

/// Saves weights to `path` atomically.
pub fn save_weights(varmap: &VarMap, path: &Path) -> Result<()> {
    let tmp = temporary_name(path);
    varmap
        .save(&tmp)
        .map_err(|e| Error::tensor(format!("{}: saving weights", tmp.display()), e))?;
    commit(&tmp, path)
}

/// Loads weights from `path` into `varmap`'s existing variables.
pub fn load_weights(varmap: &mut VarMap, path: &Path) -> Result<()> {
    if !path.is_file() {
        return Err(Error::input(path, "checkpoint not found"));
    }
    varmap
        .load(path)
        .map_err(|e| Error::input(path, format!("not a usable checkpoint: {e}")))
}
