//! `lungseg eval` arguments.

use crate::cli::shared::{CheckpointArg, DeviceArg, ThresholdArg};
use crate::error::Result;
use crate::eval::{EvalConfig, EvalSplit};
use crate::layout::RunDir;
use crate::run::record::read_run_record;
use clap::Args;
use std::path::PathBuf;

/// `lungseg eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A prepared and split data directory [default: the one the run was trained on, from its
    /// config.json].
    #[arg(long, value_name = "DATA_DIR")]
    pub data: Option<PathBuf>,
    /// A run directory written by `lungseg train`; results go to RUN_DIR/eval/.
    #[arg(long, value_name = "RUN_DIR")]
    pub run: PathBuf,
    /// The split to evaluate (the run's fold when it was trained with --fold).
    #[arg(long, value_enum, default_value_t = EvalSplit::Val)]
    pub split: EvalSplit,
    #[command(flatten)]
    pub checkpoint: CheckpointArg,
    #[command(flatten)]
    pub threshold: ThresholdArg,
    /// Report the highest sweep threshold whose pooled recall reaches R.
    #[arg(long, value_name = "R", default_value_t = 0.95)]
    pub target_recall: f64,
    /// Overlays of the K lowest-recall slices plus a seeded sample of K slices.
    #[arg(long, value_name = "K", default_value_t = 8)]
    pub overlays: usize,
    /// Redo a complete evaluation.
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub device: DeviceArg,
}

impl EvalArgs {
    /// The validated config.
    pub fn resolve(&self, quiet: bool) -> Result<EvalConfig> {
        let data = match &self.data {
            Some(d) => d.clone(),
            None => read_run_record(&RunDir::new(&self.run))?.config.data,
        };
        let cfg = EvalConfig {
            data,
            run: self.run.clone(),
            split: self.split,
            checkpoint: self.checkpoint.checkpoint,
            threshold: self.threshold.threshold,
            target_recall: self.target_recall,
            overlays: self.overlays,
            overwrite: self.overwrite,
            device: self.device.device,
            quiet,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}
