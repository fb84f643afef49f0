//! The trainer's settings (`pipeline/train.toml`, overridable by flags) and resolved config. They
//! live with the run record rather than in `train/` because `eval`, `predict` and `report` read
//! them back from `config.json`.

use crate::data::fusion::RaterFusion;
use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::metrics::monitor::{Monitor, MonitorSpec};
use crate::model::gpu::Precision;
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
    /// Training batches whose statistics replace the batch-norm running averages before each
    /// validation (at most one epoch's steps); 0 keeps PyTorch's running averages. Runs
    /// recorded before this setting existed read as 0.
    #[serde(default)]
    pub bn_refresh_batches: usize,
}

impl TrainSettings {
    /// Checks every field before any work starts, and every field read back from a run's
    /// `config.json`: a value out of range (NaN included) is a usage error naming its flag.
    pub fn validate(&self) -> Result<()> {
        count("--base-channels", self.base_channels, 1, MAX_BASE_CHANNELS)?;
        count("--batch-size", self.batch_size, 1, MAX_BATCH)?;
        count("--val-batch-size", self.val_batch_size, 1, MAX_BATCH)?;
        count("--patch", self.patch, 4, MAX_PATCH)?;
        if !self.patch.is_multiple_of(4) {
            return Err(Error::Usage(format!(
                "--patch must be a positive multiple of 4, got {}",
                self.patch
            )));
        }
        count("--max-epochs", self.max_epochs, 1, MAX_EPOCHS)?;
        count("--patience", self.patience, 0, MAX_EPOCHS)?;
        count("--shuffle-buffer", self.shuffle_buffer, 1, MAX_BUFFERED)?;
        count("--queue-capacity", self.queue_capacity, 1, MAX_BUFFERED)?;
        count(
            "--max-steps-per-epoch",
            self.max_steps_per_epoch,
            0,
            MAX_STEPS,
        )?;
        count(
            "--bn-refresh-batches",
            self.bn_refresh_batches,
            0,
            MAX_STEPS,
        )?;
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::Usage(format!(
                "--lr must be a positive number, got {}",
                self.lr
            )));
        }
        check_threshold(self.threshold)?;
        number("--weight-decay", self.weight_decay, 0.0, 1.0)?;
        number("--tversky-alpha", self.tversky_alpha, 0.0, 10.0)?;
        number("--tversky-beta", self.tversky_beta, 0.0, 10.0)?;
        number("--fg-crop", self.fg_crop, 0.0, 1.0)?;
        number("--min-precision", self.min_precision, 0.0, 1.0)?;
        if !(self.beta > 0.0 && self.beta <= 100.0) {
            return Err(Error::Usage(format!(
                "--beta must be positive (at most 100), got {}",
                self.beta
            )));
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

/// The widest U-Net accepted (4x the notebook's 64): wider ones need more memory than any GPU.
pub const MAX_BASE_CHANNELS: usize = 256;
/// The largest batch accepted.
pub const MAX_BATCH: usize = 1024;
/// The largest training patch side accepted.
pub const MAX_PATCH: usize = 4096;
/// The most epochs accepted.
pub const MAX_EPOCHS: usize = 100_000;
/// The most samples a shuffle buffer or stream queue may hold.
pub const MAX_BUFFERED: usize = 1 << 20;
/// The most steps an epoch may be capped at.
pub const MAX_STEPS: usize = 1 << 30;

/// Checks an integer setting against `lo..=hi`.
fn count(flag: &str, v: usize, lo: usize, hi: usize) -> Result<()> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "{flag} must be between {lo} and {hi}, got {v}"
        )))
    }
}

/// Checks a real setting against `lo..=hi` (NaN is out of every range).
fn number(flag: &str, v: f64, lo: f64, hi: f64) -> Result<()> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "{flag} must be a number between {lo} and {hi}, got {v}"
        )))
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
    /// CUDA arithmetic (configs written before it existed read as the default, TF32).
    #[serde(default)]
    pub precision: Precision,
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

    fn defaults() -> TrainSettings {
        crate::config::load_stage(crate::config::Stage::Train, None).unwrap()
    }

    #[test]
    fn every_out_of_range_or_nan_setting_is_a_usage_error_naming_its_flag() {
        assert!(defaults().validate().is_ok());
        type Edit = fn(&mut TrainSettings);
        let cases: [(&str, Edit); 14] = [
            ("--tversky-alpha", |s| s.tversky_alpha = f64::NAN),
            ("--tversky-beta", |s| s.tversky_beta = -1.0),
            ("--weight-decay", |s| s.weight_decay = f64::NAN),
            ("--lr", |s| s.lr = f64::INFINITY),
            ("--lr", |s| s.lr = 0.0),
            ("--beta", |s| s.beta = f64::NAN),
            ("--fg-crop", |s| s.fg_crop = 1.5),
            ("--min-precision", |s| s.min_precision = f64::NAN),
            ("--threshold", |s| s.threshold = f64::NAN),
            ("--base-channels", |s| s.base_channels = 100_000),
            ("--base-channels", |s| s.base_channels = 0),
            ("--batch-size", |s| s.batch_size = 0),
            ("--patch", |s| s.patch = 30),
            ("--max-epochs", |s| s.max_epochs = usize::MAX),
        ];
        for (flag, edit) in cases {
            let mut s = defaults();
            edit(&mut s);
            let err = s.validate().unwrap_err();
            assert_eq!(err.exit_code(), 2, "{flag}");
            assert!(err.to_string().starts_with(flag), "{flag}: {err}");
        }
    }

    #[test]
    fn thresholds_outside_the_unit_interval_are_usage_errors() {
        assert!(check_threshold(0.0).is_ok());
        assert!(check_threshold(0.35).is_ok());
        for bad in [1.0, -0.1, f64::NAN] {
            assert_eq!(check_threshold(bad).unwrap_err().exit_code(), 2);
        }
    }
}
