//! Checkpoint files (`best`/`last.safetensors`): which one to load, and saving and loading
//! weights atomically.

use crate::atomic::commit;
use crate::error::{Error, Result};
use crate::layout::{temporary_name, RunDir};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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

impl CheckpointChoice {
    /// The checkpoint file of `run` this choice names.
    pub fn path(self, run: &RunDir) -> PathBuf {
        match self {
            Self::Best => run.best_checkpoint(),
            Self::Last => run.last_checkpoint(),
        }
    }
}

/// Saves weights to `path` atomically. Weights with a NaN or an infinity are refused
/// ([`Error::Diverged`]): a diverged model never becomes a checkpoint.
pub fn save_weights(varmap: &VarMap, path: &Path) -> Result<()> {
    if let Some(name) = first_non_finite(varmap)? {
        return Err(Error::Diverged(format!(
            "{}: not saved: `{name}` holds a NaN or an infinity; the run diverged (try a lower --lr)",
            path.display()
        )));
    }
    let tmp = temporary_name(path);
    varmap
        .save(&tmp)
        .map_err(|e| Error::tensor(format!("{}: saving weights", tmp.display()), e))?;
    commit(&tmp, path)
}

/// The name of the first variable (by name) holding a NaN or an infinity, if any.
pub fn first_non_finite(varmap: &VarMap) -> Result<Option<String>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Usage("the weights' lock is poisoned".into()))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let values = data[name]
            .as_tensor()
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| Error::tensor(format!("checking `{name}`"), e))?;
        if values.iter().any(|v| !v.is_finite()) {
            return Ok(Some(name.clone()));
        }
    }
    Ok(None)
}

/// Loads weights from `path` into `varmap`'s existing variables.
pub fn load_weights(varmap: &mut VarMap, path: &Path) -> Result<()> {
    if !path.is_file() {
        return Err(Error::input(path, "checkpoint not found"));
    }
    varmap.load(path).map_err(|e| {
        let why = crate::error::first_line(&e.to_string());
        Error::input(path, format!("not a usable checkpoint: {why}"))
    })?;
    match first_non_finite(varmap)? {
        Some(name) => Err(Error::input(
            path,
            format!("not a usable checkpoint: `{name}` holds a NaN or an infinity"),
        )),
        None => Ok(()),
    }
}
