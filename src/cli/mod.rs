//! Command-line arguments, and their conversion into validated stage configs before any work:
//! one file per stage, and one argument group per concern that several stages share.

mod eval;
mod predict;
mod prepare;
mod report;
pub mod shared;
mod split;
mod synth;
mod train;

pub use eval::EvalArgs;
pub use predict::PredictArgs;
pub use prepare::PrepareArgs;
pub use report::ReportArgs;
pub use split::SplitArgs;
pub use synth::SynthArgs;
pub use train::TrainArgs;

use clap::{Parser, Subcommand};

/// Lung-nodule segmentation on LIDC-IDRI slices: prepare shards, split by patient, train a U-Net.
#[derive(Debug, Parser)]
#[command(
    name = "lungseg",
    version,
    about,
    long_about = None,
    propagate_version = true,
    args_override_self = true
)]
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
