//! The `predict` command: runs a trained run's checkpoint on slices of any size (8- or 16-bit
//! PNG read with the same intensity rules as `prepare`, JPEG, or DICOM CT slices in true HU
//! through the lung window) and writes a 0/255 mask, a red overlay and optionally a 16-bit
//! probability map per file. DICOM outputs are named by SOP instance UID and listed, with their
//! series and z, in `dicom_masks.parquet`: the mask series.
//!
//! With `--recursive` the slices of subfolders are read too, and their outputs go to the same
//! subfolders under `--out`. Every other file in the folders is named as skipped, with why. A
//! file that cannot be read or decoded is reported (path first) and skipped; the others are
//! still processed. The report lists the failures; the binary then exits with 1. Only regular
//! files are read, none past the size an image of `--max-pixels` can take, and PNGs declaring
//! more pixels are refused before decoding; large slices run through the network in tiles, so
//! memory grows with the image only by a few bytes a pixel. No output ever replaces an input.

mod dicom_index;
mod inputs;
mod png_out;
mod slice_file;

use crate::data::prepare_record::PrepareSettings;
use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::infer::model::LoadedModel;
use crate::layout::{DataDir, RunDir};
use crate::overlay::{prediction_overlay, SCALE};
use crate::pixels::intensity::{IntensityLut, IntensityRules};
use crate::run::checkpoint::CheckpointChoice;
use crate::run::record::read_run_record;
use crate::run::settings::check_threshold;
use dicom_index::{write_dicom_masks, DicomMask};
use inputs::{check_no_overwrite, list_inputs, Input};
use png_out::{write_png_rows, RowFormat};
use slice_file::{read_slice, Intensities};
use std::path::{Path, PathBuf};

/// The resolved, validated `predict` config.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictConfig {
    /// Run directory.
    pub run: PathBuf,
    /// A slice file (PNG, JPEG, DICOM), or a directory whose slice files are read.
    pub input: PathBuf,
    /// Read the slice files of `input`'s subfolders too; outputs mirror the folders.
    pub recursive: bool,
    /// Output directory (created).
    pub out: PathBuf,
    /// Threshold; `None` takes the run's.
    pub threshold: Option<f64>,
    /// Also write `<stem>_prob.png`.
    pub probabilities: bool,
    /// Which checkpoint.
    pub checkpoint: CheckpointChoice,
    /// Inference device.
    pub device: DeviceSpec,
    /// Slices declaring more pixels (width x height) fail before they are decoded.
    pub max_pixels: u64,
    /// Memory budget of one tile's forward pass, in bytes.
    pub window_bytes: u64,
}

impl PredictConfig {
    /// Checks value ranges before any work starts.
    pub fn validate(&self) -> Result<()> {
        if self.max_pixels == 0 || self.window_bytes == 0 {
            return Err(Error::Usage(
                "--max-pixels and --tile-mib must be positive".into(),
            ));
        }
        match self.threshold {
            Some(t) => check_threshold(t),
            None => Ok(()),
        }
    }

    /// The output files written for an input stem, with `--probabilities` or not.
    fn outputs(&self, stem: &str) -> Vec<String> {
        let names = output_names(stem);
        let n = if self.probabilities { 3 } else { 2 };
        names.into_iter().take(n).collect()
    }
}

/// The outcome of `predict`.
#[derive(Debug, Clone, Default)]
pub struct PredictReport {
    /// Inputs whose outputs were written.
    pub written: Vec<PathBuf>,
    /// Inputs that failed, with the error (path first).
    pub failed: Vec<(PathBuf, String)>,
    /// Entries of the input folder that were not read, with why (each also logged).
    pub skipped: Vec<(PathBuf, String)>,
    /// The threshold used.
    pub threshold: f64,
    /// The output directory.
    pub out: PathBuf,
    /// `dicom_masks.parquet`, when DICOM slices were written.
    pub dicom_index: Option<PathBuf>,
}

impl PredictReport {
    /// The one-line summary.
    pub fn summary(&self) -> String {
        let total = self.written.len() + self.failed.len();
        let mut line = format!(
            "predict: {} of {total} files written to {} at threshold {}",
            self.written.len(),
            self.out.display(),
            self.threshold
        );
        if !self.failed.is_empty() {
            line.push_str(&format!("; {} failed", self.failed.len()));
        }
        if let Some(index) = &self.dicom_index {
            line.push_str(&format!("; DICOM masks listed in {}", index.display()));
        }
        if !self.skipped.is_empty() {
            line.push_str(&format!(
                "; {} skipped (not slice files; each named above)",
                self.skipped.len()
            ));
        }
        line
    }
}

/// The output names for an input stem.
pub fn output_names(stem: &str) -> [String; 3] {
    [
        format!("{stem}_mask.png"),
        format!("{stem}_overlay.png"),
        format!("{stem}_prob.png"),
    ]
}

/// Runs the command. A missing run, an unusable checkpoint, a missing input or an output that
/// would replace an input is an error; per-file failures are collected in the report.
pub fn run(cfg: &PredictConfig) -> Result<PredictReport> {
    cfg.validate()?;
    let run_dir = RunDir::new(&cfg.run);
    let model = LoadedModel::load(&run_dir, cfg.checkpoint, cfg.device)?;
    let threshold = cfg.threshold.unwrap_or(model.threshold());
    let rules = intensity_rules(&run_dir)?;
    let intensities = Intensities {
        lut: IntensityLut::new(&rules),
        rules,
    };
    let mut listing = list_inputs(&cfg.input, cfg.recursive, cfg.max_pixels)?;
    refuse_shared_names(&mut listing.files);
    check_no_overwrite(&listing.files, &cfg.out, |stem| cfg.outputs(stem))?;
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    // An index from an earlier run into this folder would describe other masks.
    crate::atomic::remove_if_exists(&cfg.out.join(dicom_index::DICOM_MASKS))?;
    for (path, why) in &listing.skipped {
        tracing::warn!("{}: skipped: {why}", path.display());
    }
    let mut report = PredictReport {
        threshold,
        out: cfg.out.clone(),
        skipped: listing.skipped,
        ..PredictReport::default()
    };
    let mut dicom_masks = Vec::new();
    for input in listing.files {
        let out = cfg.out.join(&input.folder);
        let outcome = match &input.unusable {
            Some(why) => Err(Error::input(&input.path, why.clone())),
            None => std::fs::create_dir_all(&out)
                .map_err(|e| Error::io(&out, e))
                .and_then(|()| predict_one(&model, &intensities, &input, &out, cfg, threshold)),
        };
        match outcome {
            Ok(dicom) => {
                dicom_masks.extend(dicom);
                report.written.push(input.path);
            }
            Err(e) => {
                tracing::error!("{e}");
                report.failed.push((input.path, e.to_string()));
            }
        }
    }
    if !dicom_masks.is_empty() {
        report.dicom_index = Some(write_dicom_masks(&cfg.out, dicom_masks)?);
    }
    Ok(report)
}

/// Marks every input whose outputs would carry the same names as an earlier one's (two DICOM
/// copies of one slice, a SOP UID equal to a PNG's stem) as unusable, so that no output is
/// written over another input's.
fn refuse_shared_names(files: &mut [Input]) {
    let mut owner: std::collections::HashMap<(PathBuf, String), PathBuf> = Default::default();
    for input in files.iter_mut().filter(|i| i.unusable.is_none()) {
        let key = (input.folder.clone(), input.stem.clone());
        match owner.get(&key) {
            Some(first) => {
                input.unusable = Some(format!(
                    "its outputs would be named {}_* like those of {}; not read",
                    input.stem,
                    first.display()
                ))
            }
            None => {
                owner.insert(key, input.path.clone());
            }
        }
    }
}

/// The intensity rules of the data the run was trained on (its `prepare.json`), or the
/// embedded `pipeline/prepare.toml` defaults when that directory is not available.
fn intensity_rules(run: &RunDir) -> Result<IntensityRules> {
    let record = read_run_record(run)?;
    let data = DataDir::new(&record.config.data);
    match crate::data::prepare_record::read(&data) {
        Ok(Some(p)) => return Ok(p.config.settings.intensity()),
        Ok(None) => {}
        Err(e) => tracing::warn!("{e}"),
    }
    tracing::debug!(
        "{}: not available; using the default intensity rules",
        data.prepare_record().display()
    );
    let defaults: PrepareSettings = crate::config::load_stage(crate::config::Stage::Prepare, None)?;
    Ok(defaults.intensity())
}

/// Writes the outputs of `input` into the folder `out`; for a DICOM slice, returns its row of
/// `dicom_masks.parquet`.
fn predict_one(
    model: &LoadedModel,
    intensities: &Intensities,
    input: &Input,
    out: &Path,
    cfg: &PredictConfig,
    threshold: f64,
) -> Result<Option<DicomMask>> {
    let slice = read_slice(&input.path, input.kind, intensities, cfg.max_pixels)?;
    let (image, (h, w)) = (&slice.image, slice.size);
    let probs = model.probabilities(image, (h, w), cfg.window_bytes)?;
    let t = threshold as f32;
    let row = |y: usize| y * w..(y + 1) * w;
    let names = cfg.outputs(&input.stem);
    write_png_rows(&out.join(&names[0]), (w, h), RowFormat::Gray8, |y, out| {
        for (o, &p) in out.iter_mut().zip(&probs[row(y)]) {
            *o = if p > t { 255 } else { 0 };
        }
    })?;
    // The overlay is rendered one slice row at a time (SCALE output rows each).
    let mut rendered: Option<(usize, image::RgbImage)> = None;
    let size = (w * SCALE, h * SCALE);
    write_png_rows(&out.join(&names[1]), size, RowFormat::Rgb8, |y, out| {
        let src = y / SCALE;
        if rendered.as_ref().is_none_or(|(at, _)| *at != src) {
            let pred: Vec<bool> = probs[row(src)].iter().map(|&p| p > t).collect();
            rendered = Some((src, prediction_overlay(&image[row(src)], &pred, 1, w)));
        }
        if let Some((_, band)) = &rendered {
            let line = out.len();
            let at = (y % SCALE) * line;
            out.copy_from_slice(&band.as_raw()[at..at + line]);
        }
    })?;
    if let Some(prob_name) = names.get(2) {
        write_png_rows(&out.join(prob_name), (w, h), RowFormat::Gray16, |y, out| {
            for (o, &p) in out.chunks_exact_mut(2).zip(&probs[row(y)]) {
                o.copy_from_slice(&probability_sample(p).to_be_bytes());
            }
        })?;
    }
    Ok(slice.dicom.map(|header| DicomMask {
        input: input.path.display().to_string(),
        header,
        mask_file: input.folder.join(&names[0]).display().to_string(),
        mask_pixels: probs.iter().filter(|&&p| p > t).count() as u64,
    }))
}

/// A probability as a 16-bit sample: `round(p * 65535)`, clamped.
pub fn probability_sample(p: f32) -> u16 {
    (f64::from(p.clamp(0.0, 1.0)) * 65535.0).round() as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_map_to_16_bit() {
        assert_eq!(probability_sample(0.0), 0);
        assert_eq!(probability_sample(1.0), 65535);
        assert_eq!(probability_sample(0.5), 32768);
        assert_eq!(probability_sample(-1.0), 0);
    }

    #[test]
    fn names() {
        assert_eq!(output_names("a")[0], "a_mask.png");
    }
}
