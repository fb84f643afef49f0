//! `lungseg synth` arguments.

use crate::synth::SynthFormat;
use clap::Args;
use std::path::PathBuf;

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
    /// Which layout: slices (the Kaggle PNG slice tree) or tcia (DICOM CT series with the
    /// readers' XML, for `prepare --source tcia`).
    #[arg(long, value_enum, default_value_t = SynthFormat::Slices, value_name = "FORMAT")]
    pub format: SynthFormat,
    /// With --format tcia: slices per CT series.
    #[arg(long, default_value_t = 60, value_name = "N")]
    pub slices: usize,
    /// With --format tcia: rows and columns of every slice (512 as in the real scans).
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub size: usize,
}
