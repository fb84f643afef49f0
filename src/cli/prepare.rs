//! `lungseg prepare` arguments.

use crate::config::{load_stage, Stage};
use crate::data::prepare_record::{PrepareConfig, PrepareSettings, Source};
use crate::data::shards::ImageCompression;
use crate::error::Result;
use crate::pixels::intensity::WindowMode;
use clap::Args;
use std::path::PathBuf;

/// `lungseg prepare`.
#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// The LIDC tree: <patient>/<nodule>/images/*.png with mask-0..mask-3/<same name>, or with
    /// --source tcia the TCIA download (LIDC-IDRI-NNNN/<study>/<series>/*.dcm with each series'
    /// XML reading). Never written to.
    #[arg(long, value_name = "LIDC_ROOT")]
    pub input: PathBuf,
    /// What --input holds: slices (the Kaggle PNG slice tree) or tcia (the original DICOM CT
    /// series and the readers' XML, turned into 128x128 crops around each nodule)
    /// [default: slices].
    #[arg(long, value_enum, value_name = "SOURCE")]
    pub source: Option<Source>,
    /// With --source tcia: a folder holding the readers' XML files apart from the DICOM tree
    /// (the XML-only download, tcia-lidc-xml/<site>/NNN.xml); searched as well as --input.
    #[arg(long, value_name = "DIR")]
    pub xml_root: Option<PathBuf>,
    /// With --source tcia: keep whole slices (e.g. 512x512) instead of crops around each nodule:
    /// the slices nodules touch, or with --keep-empty every slice of each series.
    #[arg(long)]
    pub full_slices: bool,
    /// With --source tcia: the crops' size in pixels, centred on each nodule and padded with air
    /// (-1024 HU) beyond the slice [default: 128, the Kaggle slices' size].
    #[arg(long, value_name = "N")]
    pub crop_size: Option<usize>,
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
        s.source = self.source.unwrap_or(s.source);
        s.crop_size = self.crop_size.unwrap_or(s.crop_size);
        if self.full_slices {
            s.full_slices = true;
        }
        if s.source != Source::Tcia && (self.xml_root.is_some() || s.full_slices) {
            return Err(crate::error::Error::Usage(
                "--xml-root and --full-slices apply only to --source tcia".into(),
            ));
        }
        s.validate()?;
        Ok(PrepareConfig {
            input: self.input.clone(),
            xml_root: self.xml_root.clone(),
            out: self.out.clone(),
            overwrite: self.overwrite,
            quiet,
            settings: s,
        })
    }
}
