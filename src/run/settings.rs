//! The trainer's settings (`pipeline/train.toml`, overridable by flags) and resolved config. They
//! live with the run record rather than in `train/` because `eval`, `predict` and `report` read
//! them back from `config.json`.

use crate::data::fusion::RaterFusion;
use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::metrics::monitor::{Monitor, MonitorSpec};
use crate::model::loss::{LossKind, TverskyParams};
use crate::model::optim::AdamParams;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Everything that shapes the training result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSettings {
    /// U-Net width (64 = the notebook).
    pub base_channels: usize,
    /// Loss function.
    pub loss: LossKind,
    /// Tversky weight of false positives.
    pub tversky_alpha: f64,
    /// Tversky weight of false negatives.
    pub tversky_beta: f64,
    /// Adam learning rate.
    pub lr: f64,
    /// Decoupled weight decay (0 = Adam).
    pub weight_decay: f64,
    /// Training batch size.
    pub batch_size: usize,
    /// Upper bound on epochs.
    pub max_epochs: usize,
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// p > threshold is positive.
    pub threshold: f64,
    /// Training patch side.
    pub patch: usize,
    /// Probability that a crop contains foreground.
    pub fg_crop: f64,
    /// Random flips.
    pub flips: bool,
    /// Rater fusion.
    pub fusion: RaterFusion,
    /// Early-stopping monitor.
    pub monitor: Monitor,
    /// β of the F-β monitor.
    pub beta: f64,
    /// Epochs below this precision are never kept.
    pub min_precision: f64,
    /// Seed of initialisation, shuffling and cropping.
    pub seed: u64,
    /// Shuffle buffer size (samples).
    pub shuffle_buffer: usize,
    /// Reader-thread queue capacity (samples).
    pub queue_capacity: usize,
    /// Validation batch size.
    pub val_batch_size: usize,
    /// Cap on steps per epoch (0 = none).
    pub max_steps_per_epoch: usize,
}

impl TrainSettings {
    /// Checks ranges before any work starts.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Usage(m));
        if self.base_channels == 0 {
            return bad("--base-channels must be positive".into());
        }
        if self.batch_size == 0 || self.val_batch_size == 0 {
            return bad("--batch-size and --val-batch-size must be positive".into());
        }
        if self.patch == 0 || !self.patch.is_multiple_of(4) {
            return bad(format!(
                "--patch must be a positive multiple of 4, got {}",
                self.patch
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("--lr must be positive, got {}", self.lr));
        }
        check_threshold(self.threshold)?;
        if !(0.0..=1.0).contains(&self.fg_crop) || !(0.0..=1.0).contains(&self.min_precision) {
            return bad("--fg-crop and --min-precision must be in [0, 1]".into());
        }
        if self.max_epochs == 0 {
            return bad("--max-epochs must be positive".into());
        }
        if self.beta <= 0.0 || self.tversky_alpha < 0.0 || self.tversky_beta < 0.0 {
            return bad("--beta must be positive and Tversky weights non-negative".into());
        }
        if self.queue_capacity == 0 || self.shuffle_buffer == 0 {
            return bad("--queue-capacity and --shuffle-buffer must be positive".into());
        }
        Ok(())
    }

    /// The early-stopping monitor.
    pub fn monitor_spec(&self) -> MonitorSpec {
        MonitorSpec {
            monitor: self.monitor,
            beta: self.beta,
            min_precision: self.min_precision,
        }
    }

    /// The monitor's name as written to `epochs.parquet`.
    pub fn monitor_name(&self) -> String {
        match self.monitor {
            Monitor::FBeta => format!("fbeta(beta={})", self.beta),
            Monitor::Recall => "recall".into(),
            Monitor::Dice => "dice".into(),
        }
    }

    /// Adam's parameters.
    pub fn adam(&self) -> AdamParams {
        AdamParams {
            lr: self.lr,
            weight_decay: self.weight_decay,
            ..AdamParams::default()
        }
    }

    /// Tversky weights.
    pub fn tversky(&self) -> TverskyParams {
        TverskyParams {
            alpha: self.tversky_alpha,
            beta: self.tversky_beta,
        }
    }
}

/// Checks a probability threshold: `p > t` is positive, so `t` must lie in [0, 1).
pub fn check_threshold(t: f64) -> Result<()> {
    if (0.0..1.0).contains(&t) {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "--threshold must be in [0, 1), got {t}"
        )))
    }
}

/// A resolved `train` invocation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Prepared and split data directory.
    pub data: PathBuf,
    /// Run directory.
    pub run: PathBuf,
    /// Requested device.
    pub device: DeviceSpec,
    /// Use fold k as validation and the other folds as training.
    pub fold: Option<u32>,
    /// Continue an interrupted run from `last`.
    pub resume: bool,
    /// Start over, discarding an existing run.
    pub overwrite: bool,
    /// Hide progress bars.
    pub quiet: bool,
    /// Settings.
    pub settings: TrainSettings,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_outside_the_unit_interval_are_usage_errors() {
        assert!(check_threshold(0.0).is_ok());
        assert!(check_threshold(0.35).is_ok());
        for bad in [1.0, -0.1, f64::NAN] {
            assert_eq!(check_threshold(bad).unwrap_err().exit_code(), 2);
        }
    }
}
