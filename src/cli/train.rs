//! `lungseg train` arguments.

use crate::cli::shared::{DeviceArg, ThresholdArg};
use crate::config::{load_stage, Stage};
use crate::data::fusion::RaterFusion;
use crate::error::Result;
use crate::metrics::monitor::Monitor;
use crate::model::gpu::Precision;
use crate::model::loss::LossKind;
use crate::run::settings::{TrainConfig, TrainSettings};
use clap::Args;
use std::path::PathBuf;

/// `lungseg train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// A prepared and split data directory.
    #[arg(long, value_name = "DATA_DIR")]
    pub data: PathBuf,
    /// The run directory (config.json, epochs.parquet, best/last checkpoints).
    #[arg(long, value_name = "RUN_DIR")]
    pub run: PathBuf,
    #[command(flatten)]
    pub device: DeviceArg,
    /// Arithmetic of f32 convolutions and matrix products on CUDA: tf32 (TF32 tensor cores,
    /// PyTorch's default for convolutions, several times faster) or f32 (strict). The CPU is
    /// always strict f32.
    #[arg(long, value_enum, default_value_t = Precision::Tf32, value_name = "P")]
    pub precision: Precision,
    /// A TOML file replacing pipeline/train.toml's defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Use fold k of `split --folds K` as validation, the other folds as training.
    #[arg(long, value_name = "k")]
    pub fold: Option<u32>,
    /// Continue an interrupted run from its last checkpoint.
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Discard an existing run in RUN_DIR and start over.
    #[arg(long)]
    pub overwrite: bool,
    /// U-Net width (64 = the notebook; 8 trains fast on CPU).
    #[arg(long, value_name = "N")]
    pub base_channels: Option<usize>,
    /// Loss: dice (soft Dice pooled over the batch: the notebook's), tversky (weights FP by
    /// --tversky-alpha and FN by --tversky-beta) or dice-bce (Dice plus cross-entropy).
    #[arg(long, value_name = "KIND", hide_possible_values = true)]
    pub loss: Option<LossKind>,
    /// Tversky weight of false positives.
    #[arg(long, value_name = "A")]
    pub tversky_alpha: Option<f64>,
    /// Tversky weight of false negatives (> alpha favours recall).
    #[arg(long, value_name = "B")]
    pub tversky_beta: Option<f64>,
    /// Adam learning rate.
    #[arg(long, value_name = "LR")]
    pub lr: Option<f64>,
    /// Decoupled weight decay (0 = Adam, as the notebook).
    #[arg(long, value_name = "WD")]
    pub weight_decay: Option<f64>,
    /// Training batch size.
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Upper bound on epochs.
    #[arg(long, value_name = "N")]
    pub max_epochs: Option<usize>,
    /// Epochs without improvement before stopping.
    #[arg(long, value_name = "N")]
    pub patience: Option<usize>,
    #[command(flatten)]
    pub threshold: ThresholdArg,
    /// Training patch side (multiple of 4).
    #[arg(long, value_name = "N")]
    pub patch: Option<usize>,
    /// Probability that a crop contains foreground.
    #[arg(long, value_name = "P")]
    pub fg_crop: Option<f64>,
    /// Random flips (true/false).
    #[arg(long, value_name = "BOOL")]
    pub flips: Option<bool>,
    /// Rater fusion: union, majority or at-least-K.
    #[arg(long, value_name = "RULE")]
    pub fusion: Option<RaterFusion>,
    /// Early-stopping monitor: fbeta (alias f2), recall or dice.
    #[arg(long, value_name = "M", value_parser = parse_monitor)]
    pub monitor: Option<Monitor>,
    /// β of the F-β monitor.
    #[arg(long, value_name = "B")]
    pub beta: Option<f64>,
    /// Epochs whose validation precision is below this are never kept as best.
    #[arg(long, value_name = "P")]
    pub min_precision: Option<f64>,
    /// Seed of initialisation, shuffling and cropping.
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Shuffle buffer (samples).
    #[arg(long, value_name = "N")]
    pub shuffle_buffer: Option<usize>,
    /// Reader-thread queue capacity (samples).
    #[arg(long, value_name = "N")]
    pub queue_capacity: Option<usize>,
    /// Validation batch size.
    #[arg(long, value_name = "N")]
    pub val_batch_size: Option<usize>,
    /// Cap on training steps per epoch (0 = none).
    #[arg(long, value_name = "N")]
    pub max_steps_per_epoch: Option<usize>,
    /// Before each validation, replace the batch-norm running averages by the statistics of N
    /// training batches under the current weights (at most one epoch's steps), so validation
    /// and the saved checkpoints use statistics that fit the weights; 0 keeps PyTorch's (and
    /// the notebook's) running averages.
    #[arg(long, value_name = "N")]
    pub bn_refresh_batches: Option<usize>,
}

fn parse_monitor(s: &str) -> std::result::Result<Monitor, String> {
    match s {
        "fbeta" | "f2" => Ok(Monitor::FBeta),
        "recall" => Ok(Monitor::Recall),
        "dice" => Ok(Monitor::Dice),
        _ => Err(format!(
            "unknown monitor `{s}`: use fbeta (f2), recall or dice"
        )),
    }
}

impl TrainArgs {
    /// Defaults, then the config file, then flags; validated.
    pub fn resolve(&self, quiet: bool) -> Result<TrainConfig> {
        let mut s: TrainSettings = load_stage(Stage::Train, self.config.as_deref())?;
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field.clone() { s.$field = v; } )* };
        }
        set!(
            base_channels,
            loss,
            tversky_alpha,
            tversky_beta,
            lr,
            weight_decay,
            batch_size,
            max_epochs,
            patience,
            patch,
            fg_crop,
            flips,
            fusion,
            monitor,
            beta,
            min_precision,
            seed,
            shuffle_buffer,
            queue_capacity,
            val_batch_size,
            max_steps_per_epoch,
            bn_refresh_batches
        );
        if let Some(t) = self.threshold.threshold {
            s.threshold = t;
        }
        s.validate()?;
        Ok(TrainConfig {
            data: self.data.clone(),
            run: self.run.clone(),
            device: self.device.device,
            precision: self.precision,
            fold: self.fold,
            resume: self.resume,
            overwrite: self.overwrite,
            quiet,
            settings: s,
        })
    }
}
