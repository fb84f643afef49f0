//! `lungseg predict` arguments.

use crate::cli::shared::{CheckpointArg, DeviceArg, ThresholdArg};
use crate::error::Result;
use crate::infer::tiled::DEFAULT_WINDOW_BYTES;
use crate::pixels::limits::DEFAULT_MAX_PIXELS;
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
    /// A slice file, or a directory of them: PNG (8- or 16-bit gray, as prepare reads), JPEG,
    /// or DICOM CT (*.dcm or files starting with the DICOM magic; true HU through the lung
    /// window). Every other file there is named as skipped.
    #[arg(long, value_name = "PNG|DIR")]
    pub input: PathBuf,
    /// Also read the slice files of every subfolder of --input (a DICOM series folder, a TCIA
    /// download); outputs go to the same subfolders under --out. Links to folders are not
    /// followed.
    #[arg(long)]
    pub recursive: bool,
    /// Where to write <stem>_mask.png, <stem>_overlay.png (and <stem>_prob.png); DICOM slices
    /// use their SOPInstanceUID as the stem and are listed in dicom_masks.parquet.
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
    /// A slice whose header declares more than N pixels (width x height) fails before it is
    /// decoded, and no file is read past what such an image can take. Slices of any size under
    /// the cap run in tiles of bounded memory (the rest grows by ~12 bytes a pixel).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
    /// Memory budget of the network's pass over one tile, in MiB: slices that need more run in
    /// overlapping tiles that fit it (same result, some recomputation at the tile edges).
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_WINDOW_BYTES >> 20)]
    pub tile_mib: u64,
}

impl PredictArgs {
    /// The validated config.
    pub fn resolve(&self) -> Result<PredictConfig> {
        let cfg = PredictConfig {
            run: self.run.clone(),
            input: self.input.clone(),
            recursive: self.recursive,
            out: self.out.clone(),
            threshold: self.threshold.threshold,
            probabilities: self.probabilities,
            checkpoint: self.checkpoint.checkpoint,
            device: self.device.device,
            max_pixels: self.max_pixels,
            window_bytes: self.tile_mib.saturating_mul(1 << 20),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}
