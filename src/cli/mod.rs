//! Command-line arguments, and their conversion into validated stage configs before any work.

use crate::config::{load_stage, Stage};
use crate::data::fusion::RaterFusion;
use crate::data::prepare_record::{PrepareConfig, PrepareSettings};
use crate::data::shards::writer::ImageCompression;
use crate::data::split_record::{SplitConfig, SplitSettings};
use crate::device::DeviceSpec;
use crate::error::Result;
use crate::eval::{EvalConfig, EvalSplit};
use crate::metrics::monitor::Monitor;
use crate::model::loss::LossKind;
use crate::pixels::intensity::WindowMode;
use crate::predict::PredictConfig;
use crate::run::checkpoint::CheckpointChoice;
use crate::run::settings::{TrainConfig, TrainSettings};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Lung-nodule segmentation on LIDC-IDRI slices: prepare shards, split by patient, train a U-Net.
#[derive(Debug, Parser)]
#[command(name = "lungseg", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors; no progress bars.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// The stage to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The stages.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a deterministic synthetic LIDC-style tree (for tests and the demo).
    Synth(SynthArgs),
    /// Turn an LIDC slice tree into Parquet shards, a manifest and a rejects table.
    Prepare(PrepareArgs),
    /// Split a prepared data directory into train and val by patient, deterministically.
    Split(SplitArgs),
    /// Train the U-Net on the split, stopping early on a recall-first validation score.
    Train(Box<TrainArgs>),
    /// Evaluate a run on whole slices: pooled, per-slice, lesion- and nodule-level metrics, a
    /// threshold sweep and overlays, written to RUN_DIR/eval/.
    Eval(EvalArgs),
    /// Segment PNG files of any size with a trained run; writes masks and overlays.
    Predict(PredictArgs),
    /// Summarise every run under a folder: report.md, learning curves, recall-precision curves.
    Report(ReportArgs),
}

/// `lungseg report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Folder holding run directories (each with epochs.parquet, maybe eval/).
    #[arg(long, value_name = "DIR")]
    pub runs: PathBuf,
    /// Where report.md and the charts go [default: RUNS/report].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

impl ReportArgs {
    /// The validated config.
    pub fn resolve(&self) -> crate::report::ReportConfig {
        crate::report::ReportConfig {
            runs: self.runs.clone(),
            out: self.out.clone().unwrap_or_else(|| self.runs.join("report")),
        }
    }
}

/// `lungseg synth`.
#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Where to write the tree (missing, empty, or an earlier synthetic tree).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Number of patients.
    #[arg(long, default_value_t = 12, value_name = "N")]
    pub patients: usize,
    /// Seed: the same seed gives a byte-identical tree.
    #[arg(long, default_value_t = 7, value_name = "S")]
    pub seed: u64,
    /// Give some nodules slice sizes other than 128x128 (smaller and larger).
    #[arg(long)]
    pub odd_sizes: bool,
    /// Write some nodules as 16-bit PNGs holding HU + 1024.
    #[arg(long)]
    pub hu16: bool,
}

/// `lungseg prepare`.
#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// The LIDC tree: <patient>/<nodule>/images/*.png with mask-0..mask-3/<same name>. Never
    /// written to.
    #[arg(long, value_name = "LIDC_ROOT")]
    pub input: PathBuf,
    /// The data directory to write (shards/, manifest.parquet, rejects.parquet, prepare.json).
    #[arg(long, value_name = "DATA_DIR")]
    pub out: PathBuf,
    /// Rebuild even if DATA_DIR is complete (also removes its split).
    #[arg(long)]
    pub overwrite: bool,
    /// Keep slices whose fused mask is empty, as negatives for training.
    #[arg(long)]
    pub keep_empty: bool,
    /// Intensity mapping: auto (8-bit → v/255, 16-bit HU → lung window) or seed-compat (the
    /// notebook's formula, which squeezes 8-bit values into [0.9, 1]).
    #[arg(long, value_enum)]
    pub window: Option<WindowMode>,
    /// Rows per shard file [default from pipeline/prepare.toml: 2048].
    #[arg(long, value_name = "N")]
    pub shard_rows: Option<usize>,
    /// Rows per Parquet row group, the unit the trainer streams [default: 64].
    #[arg(long, value_name = "N")]
    pub row_group_rows: Option<usize>,
    /// Decoding threads; 0 = all cores. The output does not depend on it.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Drop slices smaller than N pixels in either dimension (128 reproduces the notebook).
    #[arg(long, value_name = "N")]
    pub min_size: Option<usize>,
    /// 16-bit PNGs store HU + this offset [default: 1024].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub hu_offset: Option<i32>,
    /// How the shards' f32 image column is stored: none (plain; fastest to write and to
    /// stream) or zstd (~3x smaller shards, ~2.5x slower prepare). Other columns are always
    /// zstd [default: none].
    #[arg(long, value_enum, value_name = "CODEC")]
    pub image_compression: Option<ImageCompression>,
    /// A TOML file replacing pipeline/prepare.toml's defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `lungseg split`.
#[derive(Debug, Args)]
pub struct SplitArgs {
    /// A data directory written by `lungseg prepare`.
    #[arg(long, value_name = "DATA_DIR")]
    pub data: PathBuf,
    /// Target fraction of patients in validation, in [0, 1) [default: 0.2].
    #[arg(long, value_name = "R")]
    pub val_ratio: Option<f64>,
    /// Seed of the patient hash [default: 42].
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Also assign every patient one of K folds (for `train --fold k`).
    #[arg(long, value_name = "K")]
    pub folds: Option<u32>,
    /// Rewrite an existing split.
    #[arg(long)]
    pub overwrite: bool,
    /// A TOML file replacing pipeline/split.toml's defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl PrepareArgs {
    /// Defaults, then the config file, then flags; validated.
    pub fn resolve(&self, quiet: bool) -> Result<PrepareConfig> {
        let mut s: PrepareSettings = load_stage(Stage::Prepare, self.config.as_deref())?;
        if self.keep_empty {
            s.keep_empty = true;
        }
        s.window = self.window.unwrap_or(s.window);
        s.shard_rows = self.shard_rows.unwrap_or(s.shard_rows);
        s.row_group_rows = self.row_group_rows.unwrap_or(s.row_group_rows);
        s.threads = self.threads.unwrap_or(s.threads);
        s.min_size = self.min_size.unwrap_or(s.min_size);
        s.hu_offset = self.hu_offset.unwrap_or(s.hu_offset);
        s.image_compression = self.image_compression.unwrap_or(s.image_compression);
        s.validate()?;
        Ok(PrepareConfig {
            input: self.input.clone(),
            out: self.out.clone(),
            overwrite: self.overwrite,
            quiet,
            settings: s,
        })
    }
}

impl SplitArgs {
    /// Defaults, then the config file, then flags; validated.
    pub fn resolve(&self) -> Result<SplitConfig> {
        let mut s: SplitSettings = load_stage(Stage::Split, self.config.as_deref())?;
        s.val_ratio = self.val_ratio.unwrap_or(s.val_ratio);
        s.seed = self.seed.unwrap_or(s.seed);
        s.folds = self.folds.unwrap_or(s.folds);
        s.validate()?;
        Ok(SplitConfig {
            data: self.data.clone(),
            overwrite: self.overwrite,
            settings: s,
        })
    }
}

/// `lungseg train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// A prepared and split data directory.
    #[arg(long, value_name = "DATA_DIR")]
    pub data: PathBuf,
    /// The run directory (config.json, epochs.parquet, best/last checkpoints).
    #[arg(long, value_name = "RUN_DIR")]
    pub run: PathBuf,
    /// auto (cuda, then metal, then cpu), cpu, cuda, cuda:N or metal. The last one given wins.
    #[arg(long, default_value = "auto", value_parser = parse_device, overrides_with = "device")]
    pub device: DeviceSpec,
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
    /// Loss: dice, tversky or dice-bce.
    #[arg(long, value_name = "KIND")]
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
    /// Probability threshold (p > T is a nodule pixel).
    #[arg(long, value_name = "T")]
    pub threshold: Option<f64>,
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
}

fn parse_device(s: &str) -> std::result::Result<DeviceSpec, String> {
    s.parse()
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
            threshold,
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
            max_steps_per_epoch
        );
        s.validate()?;
        Ok(TrainConfig {
            data: self.data.clone(),
            run: self.run.clone(),
            device: self.device,
            fold: self.fold,
            resume: self.resume,
            overwrite: self.overwrite,
            quiet,
            settings: s,
        })
    }
}

/// `lungseg eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A prepared and split data directory.
    #[arg(long, value_name = "DATA_DIR")]
    pub data: PathBuf,
    /// A run directory written by `lungseg train`; results go to RUN_DIR/eval/.
    #[arg(long, value_name = "RUN_DIR")]
    pub run: PathBuf,
    /// The split to evaluate (the run's fold when it was trained with --fold).
    #[arg(long, value_enum, default_value_t = EvalSplit::Val)]
    pub split: EvalSplit,
    /// The checkpoint to load.
    #[arg(long, value_enum, default_value_t = CheckpointChoice::Best)]
    pub checkpoint: CheckpointChoice,
    /// Probability threshold (p > T is a nodule pixel) [default: the run's].
    #[arg(long, value_name = "T")]
    pub threshold: Option<f64>,
    /// Report the highest sweep threshold whose pooled recall reaches R.
    #[arg(long, value_name = "R", default_value_t = 0.95)]
    pub target_recall: f64,
    /// Overlays of the K lowest-recall slices plus a seeded sample of K slices.
    #[arg(long, value_name = "K", default_value_t = 8)]
    pub overlays: usize,
    /// Redo a complete evaluation.
    #[arg(long)]
    pub overwrite: bool,
    /// auto (cuda, then metal, then cpu), cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto", value_parser = parse_device, overrides_with = "device")]
    pub device: DeviceSpec,
}

impl EvalArgs {
    /// The validated config.
    pub fn resolve(&self, quiet: bool) -> Result<EvalConfig> {
        let cfg = EvalConfig {
            data: self.data.clone(),
            run: self.run.clone(),
            split: self.split,
            checkpoint: self.checkpoint,
            threshold: self.threshold,
            target_recall: self.target_recall,
            overlays: self.overlays,
            overwrite: self.overwrite,
            device: self.device,
            quiet,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// `lungseg predict`. Exit code 1 when some files failed (each is reported, path first),
/// 2 when the run, its checkpoint or the input is unusable.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// A run directory written by `lungseg train`.
    #[arg(long, value_name = "RUN_DIR")]
    pub run: PathBuf,
    /// A PNG file, or a directory whose *.png files are read (not recursively).
    #[arg(long, value_name = "PNG|DIR")]
    pub input: PathBuf,
    /// Where to write <stem>_mask.png, <stem>_overlay.png (and <stem>_prob.png).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Probability threshold (p > T is a nodule pixel) [default: the run's].
    #[arg(long, value_name = "T")]
    pub threshold: Option<f64>,
    /// Also write <stem>_prob.png: 16-bit, round(p * 65535).
    #[arg(long)]
    pub probabilities: bool,
    /// The checkpoint to load.
    #[arg(long, value_enum, default_value_t = CheckpointChoice::Best)]
    pub checkpoint: CheckpointChoice,
    /// auto (cuda, then metal, then cpu), cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto", value_parser = parse_device, overrides_with = "device")]
    pub device: DeviceSpec,
}

impl PredictArgs {
    /// The config (validated by `predict::run`).
    pub fn resolve(&self) -> PredictConfig {
        PredictConfig {
            run: self.run.clone(),
            input: self.input.clone(),
            out: self.out.clone(),
            threshold: self.threshold,
            probabilities: self.probabilities,
            checkpoint: self.checkpoint,
            device: self.device,
        }
    }
}
