//! `lungseg prepare` arguments.

use crate::config::{load_stage, Stage};
use crate::data::prepare_record::{PrepareConfig, PrepareSettings};
use crate::data::shards::ImageCompression;
use crate::error::Result;
use crate::pixels::intensity::WindowMode;
use clap::Args;
use std::path::PathBuf;

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
    /// Reject PNGs whose header declares more than N pixels (width x height) as too_large,
    /// before decoding them; no file is read past what such an image can take
    /// [default: 16777216 = 4096x4096].
    #[arg(long, value_name = "N")]
    pub max_pixels: Option<u64>,
    /// A TOML file replacing pipeline/prepare.toml's defaults.
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
        s.max_pixels = self.max_pixels.unwrap_or(s.max_pixels);
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
