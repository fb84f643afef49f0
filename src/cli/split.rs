//! `lungseg split` arguments.

use crate::config::{load_stage, Stage};
use crate::data::split_record::{SplitConfig, SplitSettings};
use crate::error::Result;
use clap::Args;
use std::path::PathBuf;

/// `lungseg split`.
#[derive(Debug, Args)]
pub struct SplitArgs {
    /// A data directory written by `lungseg prepare`.
    #[arg(long, value_name = "DATA_DIR")]
    pub data: PathBuf,
    /// Target fraction of patients in validation, in (0, 1) [default: 0.2].
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
