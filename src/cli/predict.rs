//! `lungseg predict` arguments.

use crate::cli::shared::{CheckpointArg, DeviceArg, ThresholdArg};
use crate::error::Result;
use crate::predict::PredictConfig;
use clap::Args;
use std::path::PathBuf;

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
    #[command(flatten)]
    pub threshold: ThresholdArg,
    /// Also write <stem>_prob.png: 16-bit, round(p * 65535).
    #[arg(long)]
    pub probabilities: bool,
    #[command(flatten)]
    pub checkpoint: CheckpointArg,
    #[command(flatten)]
    pub device: DeviceArg,
}

impl PredictArgs {
    /// The validated config.
    pub fn resolve(&self) -> Result<PredictConfig> {
        let cfg = PredictConfig {
            run: self.run.clone(),
            input: self.input.clone(),
            out: self.out.clone(),
            threshold: self.threshold.threshold,
            probabilities: self.probabilities,
            checkpoint: self.checkpoint.checkpoint,
            device: self.device.device,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}
