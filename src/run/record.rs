//! `config.json`: what produced a run (resolved settings, data fingerprint, device, revision),
//! written when training starts and read by `eval`, `predict` and `report`.

use crate::error::{Error, Result};
use crate::json::read_json;
use crate::layout::RunDir;
use crate::run::settings::TrainConfig;
use serde::{Deserialize, Serialize};

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

/// Reads `config.json` of the run at `run`; a missing or unreadable one is an input error.
pub fn read_run_record(run: &RunDir) -> Result<RunRecord> {
    if !run.root().is_dir() {
        return Err(Error::input(run.root(), "run directory not found"));
    }
    let path = run.config();
    let record = read_json::<RunRecord>(&path)?.ok_or_else(|| {
        Error::input(
            run.root(),
            "not a run directory (no config.json); run `lungseg train` first",
        )
    })?;
    record
        .config
        .settings
        .validate()
        .map_err(|e| Error::input(&path, format!("not a valid run record: {e}")))?;
    Ok(record)
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
