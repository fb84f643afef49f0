//! Argument groups that several stages share (`#[command(flatten)]`), each declared once.

use crate::device::DeviceSpec;
use crate::run::checkpoint::CheckpointChoice;
use clap::Args;

/// `--device`.
#[derive(Debug, Clone, Copy, Args)]
pub struct DeviceArg {
    /// Compute device: auto (cuda, then metal, then cpu), cpu, cuda, cuda:N or metal. When given
    /// twice, the later one is used.
    #[arg(long, default_value = "auto", value_parser = parse_device, overrides_with = "device")]
    pub device: DeviceSpec,
}

fn parse_device(s: &str) -> std::result::Result<DeviceSpec, String> {
    s.parse()
}

/// `--checkpoint`.
#[derive(Debug, Clone, Copy, Args)]
pub struct CheckpointArg {
    /// The checkpoint to load.
    #[arg(long, value_enum, default_value_t = CheckpointChoice::Best)]
    pub checkpoint: CheckpointChoice,
}

/// `--threshold`.
#[derive(Debug, Clone, Copy, Args)]
pub struct ThresholdArg {
    /// Probability threshold in [0, 1): a pixel with p > T is a nodule pixel [default: train
    /// takes pipeline/train.toml's 0.35; eval and predict take the run's own].
    #[arg(long, value_name = "T")]
    pub threshold: Option<f64>,
}
