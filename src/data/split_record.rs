//! `split.json`: the resolved `split` settings, its rule and the achieved sizes, written last, so
//! its presence marks a complete split.

use crate::error::{Error, Result};
use crate::json::read_json;
use crate::layout::DataDir;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The stage settings (`pipeline/split.toml`, overridable by flags).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSettings {
    /// Target fraction of patients in validation, in (0, 1).
    pub val_ratio: f64,
    /// Seed of the patient hash.
    pub seed: u64,
    /// Number of folds (0 = none).
    pub folds: u32,
}

impl SplitSettings {
    /// Checks value ranges before any work starts.
    pub fn validate(&self) -> Result<()> {
        // Validation picks the kept epoch and stops training early: it cannot be empty.
        if !(self.val_ratio > 0.0 && self.val_ratio < 1.0) {
            return Err(Error::Usage(format!(
                "--val-ratio must be in (0, 1): training needs validation patients, got {}",
                self.val_ratio
            )));
        }
        if self.folds == 1 {
            return Err(Error::Usage(
                "--folds must be 0 (none) or at least 2".into(),
            ));
        }
        Ok(())
    }
}

/// A resolved `split` invocation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SplitConfig {
    /// The prepared data directory.
    pub data: PathBuf,
    /// Rewrite even when a split with these settings exists.
    pub overwrite: bool,
    /// Stage settings.
    pub settings: SplitSettings,
}

/// Achieved sizes and ratios; saved in `split.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitCounts {
    /// Patients in train.
    pub train_patients: usize,
    /// Patients in validation.
    pub val_patients: usize,
    /// Slices in train.
    pub train_slices: usize,
    /// Slices in validation.
    pub val_slices: usize,
    /// val_patients / patients.
    pub patient_ratio: f64,
    /// val_slices / slices.
    pub slice_ratio: f64,
}

/// What `split.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SplitRecord {
    /// lungseg version.
    pub version: String,
    /// The resolved config.
    pub config: SplitConfig,
    /// The hash rule, spelled out.
    pub rule: String,
    /// Achieved counts.
    pub counts: SplitCounts,
    /// Fingerprint of the `manifest.parquet` that was split (absent in older records).
    #[serde(default)]
    pub manifest_fingerprint: Option<String>,
}

/// The rule recorded in `split.json`.
pub const RULE: &str = "val iff mix64(fnv1a64(\"<seed>:<patient_id>\")) / 2^64 < val_ratio (if that leaves a side empty, the patient with the lowest hash joins val); fold = mix64(fnv1a64(\"<seed>:<patient_id>\") ^ 0x5851F42D4C957F2D) mod folds (mix64 = SplitMix64 finaliser)";

/// Reads `split.json` if a split exists.
pub fn read(data: &DataDir) -> Result<Option<SplitRecord>> {
    read_json(&data.split_record())
}
