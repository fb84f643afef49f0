//! What a run directory remembers between epochs: the loop state for `--resume`, the run record
//! (`config.json`) and atomic checkpoint files.

use crate::atomic::{commit, write_json_atomic};
use crate::error::{Error, Result};
use crate::layout::{temporary_name, RunDir};
use crate::model::optim::Adam;
use crate::run::settings::TrainConfig;
use crate::train::early_stop::{EarlyStopping, StopReason};
use candle_nn::VarMap;
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
}

/// `config.json`: what produced this run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// lungseg version.
    pub version: String,
    /// Source revision (`git rev-parse --short HEAD` where available).
    pub git_revision: String,
    /// The resolved config.
    pub config: TrainConfig,
    /// FNV-1a 64 of `manifest.parquet`'s bytes, in hex.
    pub data_fingerprint: String,
    /// The device actually used.
    pub device: String,
    /// The seed.
    pub seed: u64,
    /// Training slices.
    pub train_slices: usize,
    /// Validation slices.
    pub val_slices: usize,
}

/// Reads a JSON file if it exists.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::Json {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
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

/// `git rev-parse --short HEAD`, or "unknown".
pub fn git_revision() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// FNV-1a 64 of a file's bytes, in hex.
pub fn fingerprint(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(format!("{:016x}", crate::rng::fnv1a64(&bytes)))
}
