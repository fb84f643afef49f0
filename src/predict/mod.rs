//! The `predict` command: runs a trained run's checkpoint on PNG files of any size (8- or
//! 16-bit, read with the same intensity rules as `prepare`) and writes a 0/255 mask, a red
//! overlay and optionally a 16-bit probability map per file.
//!
//! A file that cannot be read or decoded is reported (path first) and skipped; the others are
//! still processed. The report lists the failures; the binary then exits with 1.

use crate::atomic::write_atomic;
use crate::data::prepare_record::PrepareSettings;
use crate::data::SliceSample;
use crate::device::DeviceSpec;
use crate::error::{Error, IoContext, Result};
use crate::infer::model::LoadedModel;
use crate::infer::NativeSlice;
use crate::layout::{DataDir, RunDir};
use crate::overlay::{png_bytes, prediction_overlay};
use crate::pixels::decode::{decode_png, DecodeFailure};
use crate::pixels::intensity::IntensityRules;
use crate::run::checkpoint::CheckpointChoice;
use crate::run::record::read_run_record;
use crate::run::settings::check_threshold;
use image::{DynamicImage, GrayImage, ImageBuffer, Luma};
use std::path::{Path, PathBuf};

/// The resolved, validated `predict` config.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictConfig {
    /// Run directory.
    pub run: PathBuf,
    /// A PNG file, or a directory whose `*.png` files (not recursive) are read.
    pub input: PathBuf,
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
}

impl PredictConfig {
    /// Checks value ranges before any work starts.
    pub fn validate(&self) -> Result<()> {
        match self.threshold {
            Some(t) => check_threshold(t),
            None => Ok(()),
        }
    }
}

/// The outcome of `predict`.
#[derive(Debug, Clone, Default)]
pub struct PredictReport {
    /// Inputs whose outputs were written.
    pub written: Vec<PathBuf>,
    /// Inputs that failed, with the error (path first).
    pub failed: Vec<(PathBuf, String)>,
    /// The threshold used.
    pub threshold: f64,
    /// The output directory.
    pub out: PathBuf,
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

/// Runs the command. A missing run, an unusable checkpoint or a missing input is an error;
/// per-file failures are collected in the report.
pub fn run(cfg: &PredictConfig) -> Result<PredictReport> {
    cfg.validate()?;
    let run_dir = RunDir::new(&cfg.run);
    let model = LoadedModel::load(&run_dir, cfg.checkpoint, cfg.device)?;
    let threshold = cfg.threshold.unwrap_or(model.threshold());
    let rules = intensity_rules(&run_dir)?;
    let inputs = list_inputs(&cfg.input)?;
    std::fs::create_dir_all(&cfg.out).at(&cfg.out)?;
    let mut report = PredictReport {
        threshold,
        out: cfg.out.clone(),
        ..PredictReport::default()
    };
    for path in inputs {
        match predict_one(&model, &rules, &path, cfg, threshold) {
            Ok(()) => report.written.push(path),
            Err(e) => {
                tracing::error!("{e}");
                report.failed.push((path, e.to_string()));
            }
        }
    }
    Ok(report)
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

/// The PNG files to read: the file itself, or a directory's `*.png` files, sorted.
fn list_inputs(input: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(input).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::input(input, "not found")
        } else {
            Error::io(input, e)
        }
    })?;
    if meta.is_file() {
        return Ok(vec![input.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(input).at(input)? {
        let path = entry.at(input)?.path();
        let is_png = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("png"));
        if is_png && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(Error::input(input, "no .png files in this directory"));
    }
    Ok(files)
}

fn decode_failure(path: &Path, f: DecodeFailure) -> Error {
    let message = match f {
        DecodeFailure::Corrupt(m) => format!("not a readable PNG: {m}"),
        DecodeFailure::Unsupported(m) => m,
        DecodeFailure::Empty => "empty image".to_string(),
    };
    Error::input(path, message)
}

fn predict_one(
    model: &LoadedModel,
    rules: &IntensityRules,
    path: &Path,
    cfg: &PredictConfig,
    threshold: f64,
) -> Result<()> {
    let bytes = std::fs::read(path).at(path)?;
    let plane = decode_png(&bytes).map_err(|f| decode_failure(path, f))?;
    let (h, w) = (plane.height, plane.width);
    let image: Vec<f32> = plane
        .samples
        .iter()
        .map(|&s| rules.map(s, plane.bits))
        .collect();
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "input".into());
    let predictions = model.predict(vec![SliceSample {
        slice_id: stem.clone(),
        patient_id: String::new(),
        height: h,
        width: w,
        image,
        mask: vec![0; h * w],
    }])?;
    let NativeSlice { image, probs, .. } = predictions.slice(0);
    let t = threshold as f32;
    let pred: Vec<bool> = probs.iter().map(|&p| p > t).collect();
    let [mask_name, overlay_name, prob_name] = output_names(&stem);

    let mask = GrayImage::from_raw(
        w as u32,
        h as u32,
        pred.iter().map(|&p| if p { 255 } else { 0 }).collect(),
    );
    write_image(mask.map(DynamicImage::ImageLuma8), &cfg.out.join(mask_name))?;
    let overlay = prediction_overlay(&image, &pred, h, w);
    write_image(
        Some(DynamicImage::ImageRgb8(overlay)),
        &cfg.out.join(overlay_name),
    )?;
    if cfg.probabilities {
        let prob = ImageBuffer::<Luma<u16>, Vec<u16>>::from_raw(
            w as u32,
            h as u32,
            probs.iter().map(|&p| probability_sample(p)).collect(),
        );
        write_image(
            prob.map(DynamicImage::ImageLuma16),
            &cfg.out.join(prob_name),
        )?;
    }
    Ok(())
}

/// A probability as a 16-bit sample: `round(p * 65535)`, clamped.
pub fn probability_sample(p: f32) -> u16 {
    (f64::from(p.clamp(0.0, 1.0)) * 65535.0).round() as u16
}

fn write_image(img: Option<DynamicImage>, path: &Path) -> Result<()> {
    let img = img.ok_or_else(|| Error::io(path, std::io::Error::other("image buffer size")))?;
    write_atomic(path, &png_bytes(&img, path)?)
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
    fn names_and_inputs() {
        assert_eq!(output_names("a")[0], "a_mask.png");
        let dir = tempfile::tempdir().unwrap();
        let err = list_inputs(&dir.path().join("missing")).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = list_inputs(dir.path()).unwrap_err();
        assert!(err.to_string().contains("no .png files"), "{err}");
        std::fs::write(dir.path().join("b.PNG"), b"x").unwrap();
        std::fs::write(dir.path().join("a.png"), b"x").unwrap();
        std::fs::write(dir.path().join("c.txt"), b"x").unwrap();
        let files = list_inputs(dir.path()).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["a.png", "b.PNG"]);
    }
}
