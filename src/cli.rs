//! Command-line arguments, and their conversion into validated stage configs before any work.

use crate::config::load_stage;
use crate::error::Result;
use crate::prepare::intensity::WindowMode;
use crate::prepare::{PrepareConfig, PrepareSettings};
use crate::split::{SplitConfig, SplitSettings};
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
    /// Turn an LIDC slice tree into Parquet shards, a manifest and a rejects table.
    Prepare(PrepareArgs),
    /// Split a prepared data directory into train and val by patient, deterministically.
    Split(SplitArgs),
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
        let mut s: PrepareSettings = load_stage("prepare", self.config.as_deref())?;
        if self.keep_empty {
            s.keep_empty = true;
        }
        s.window = self.window.unwrap_or(s.window);
        s.shard_rows = self.shard_rows.unwrap_or(s.shard_rows);
        s.row_group_rows = self.row_group_rows.unwrap_or(s.row_group_rows);
        s.threads = self.threads.unwrap_or(s.threads);
        s.min_size = self.min_size.unwrap_or(s.min_size);
        s.hu_offset = self.hu_offset.unwrap_or(s.hu_offset);
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
        let mut s: SplitSettings = load_stage("split", self.config.as_deref())?;
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
