//! `prepare.json`: the resolved `prepare` settings and counts, written last, so its presence marks
//! a complete data directory. Read by every later stage.

use crate::data::shards::ImageCompression;
use crate::error::{Error, Result};
use crate::json::read_json;
use crate::layout::DataDir;
use crate::pixels::intensity::{IntensityRules, WindowMode};
use crate::pixels::limits::DEFAULT_MAX_PIXELS;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The stage settings (`pipeline/prepare.toml`, overridable by flags).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareSettings {
    /// Intensity mapping.
    pub window: WindowMode,
    /// Lung window centre (HU).
    pub lung_center: i32,
    /// Lung window width (HU).
    pub lung_width: i32,
    /// 16-bit PNGs hold HU + this.
    pub hu_offset: i32,
    /// Keep slices with an empty fused mask.
    pub keep_empty: bool,
    /// Drop slices smaller than this (0 = keep all).
    pub min_size: usize,
    /// Rows per shard.
    pub shard_rows: usize,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// Decoding threads (0 = all cores). Does not change the output.
    pub threads: usize,
    /// How the shards' `image` column is stored (the other columns are always zstd).
    #[serde(default = "ImageCompression::before_the_setting")]
    pub image_compression: ImageCompression,
    /// PNGs declaring more pixels (width x height) are rejected as `too_large` before anything
    /// is allocated for them; files longer than such an image can be are not read to the end.
    #[serde(default = "default_max_pixels")]
    pub max_pixels: u64,
    /// What the input is: the Kaggle PNG slice tree or the TCIA download (DICOM + XML).
    #[serde(default)]
    pub source: Source,
    /// TCIA source: crop size in pixels, centred on each nodule.
    #[serde(default = "default_crop_size")]
    pub crop_size: usize,
    /// TCIA source: whole slices instead of crops.
    #[serde(default)]
    pub full_slices: bool,
}

/// What `prepare --input` holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The Kaggle LIDC-IDRI-slices tree: <patient>/<nodule>/images/*.png with mask-0..mask-3.
    #[default]
    Slices,
    /// The TCIA download: DICOM CT series with the readers' XML (LIDC-IDRI-NNNN/<study>/<series>/).
    Tcia,
}

/// The crop of the Kaggle slice tree.
fn default_crop_size() -> usize {
    128
}

/// The cap of data directories written before the setting existed, and the built-in default.
fn default_max_pixels() -> u64 {
    DEFAULT_MAX_PIXELS
}

impl PrepareSettings {
    /// The intensity rules these settings describe.
    pub fn intensity(&self) -> IntensityRules {
        IntensityRules {
            mode: self.window,
            center: self.lung_center,
            width: self.lung_width,
            hu_offset: self.hu_offset,
        }
    }

    /// Checks value ranges before any work starts.
    pub fn validate(&self) -> Result<()> {
        if self.lung_width <= 1 {
            return Err(Error::Usage(format!(
                "lung_width must be > 1, got {}",
                self.lung_width
            )));
        }
        if self.shard_rows == 0 || self.row_group_rows == 0 {
            return Err(Error::Usage(
                "shard_rows and row_group_rows must be positive".into(),
            ));
        }
        if self.max_pixels == 0 {
            return Err(Error::Usage("max_pixels must be positive".into()));
        }
        let crops = self.source == Source::Tcia && !self.full_slices;
        if self.crop_size == 0
            || self.crop_size > 4096
            || (crops && (self.crop_size * self.crop_size) as u64 > self.max_pixels)
        {
            return Err(Error::Usage(format!(
                "crop_size must be between 1 and 4096, and its square at most max_pixels ({}); got {}",
                self.max_pixels, self.crop_size
            )));
        }
        Ok(())
    }

    /// The settings that change the output (everything but `threads`).
    pub fn output_identity(&self) -> Self {
        Self {
            threads: 0,
            ..self.clone()
        }
    }
}

/// A fully resolved `prepare` invocation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrepareConfig {
    /// The LIDC tree (read only).
    pub input: PathBuf,
    /// TCIA source: a separate folder of the readers' XML files (the XML-only download).
    #[serde(default)]
    pub xml_root: Option<PathBuf>,
    /// The data directory to write.
    pub out: PathBuf,
    /// Rebuild even when the data directory is complete.
    pub overwrite: bool,
    /// Hide the progress bar.
    pub quiet: bool,
    /// Stage settings.
    pub settings: PrepareSettings,
}

/// Counts and timings of a `prepare` run; saved in `prepare.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PrepareCounts {
    /// Patient folders.
    pub patients: usize,
    /// Nodule folders with images.
    pub nodules: usize,
    /// PNG files found in image folders.
    pub slices_seen: usize,
    /// Slices written to shards.
    pub slices_kept: usize,
    /// Slices whose fused mask was empty (kept only with `keep_empty`).
    pub slices_empty: usize,
    /// Slices dropped by `min_size`.
    pub slices_too_small: usize,
    /// Slices whose image was rejected.
    pub slices_rejected: usize,
    /// All rows of `rejects.parquet` (images, masks, folders).
    pub rejects: usize,
    /// Stray files and unknown folders skipped.
    pub files_ignored: usize,
    /// Images and masks that had colour channels and were converted to gray.
    pub colour_files: usize,
    /// Kept slices that came from 16-bit PNGs.
    pub slices_16bit: usize,
    /// Shard files.
    pub shards: usize,
    /// Bytes written (shards and tables).
    pub bytes: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Which tree a data directory was prepared from, so that a rerun from another tree (or from a
/// tree that changed) is not taken for "already complete".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputIdentity {
    /// The input tree's canonical path.
    pub path: PathBuf,
    /// Image files the walk found (slice jobs and duplicates).
    pub slice_files: usize,
    /// FNV-1a 64 (hex) of the walk's result: every image's path relative to the root with the
    /// raters that have a mask for it, and every rejected path with its reason. Computed from
    /// the listing alone, so it sees added, removed and renamed files but not edits in place.
    pub signature: String,
}

/// What `prepare.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrepareRecord {
    /// lungseg version that wrote it.
    pub version: String,
    /// The resolved config.
    pub config: PrepareConfig,
    /// The input tree; absent in records written before it was kept.
    #[serde(default)]
    pub input: Option<InputIdentity>,
    /// The counts.
    pub counts: PrepareCounts,
}

/// Reads `prepare.json` if the data directory is complete.
pub fn read(data: &DataDir) -> Result<Option<PrepareRecord>> {
    read_json(&data.prepare_record())
}

/// The record of a complete data directory, or the input error that names the command to run.
pub fn require(data: &DataDir) -> Result<PrepareRecord> {
    read(data)?.ok_or_else(|| {
        Error::input(
            data.root(),
            "not a complete prepared data directory (no prepare.json); run `lungseg prepare` first",
        )
    })
}
