//! The `eval` stage: runs a trained run's checkpoint over a split's whole slices at native size
//! and writes pooled, per-slice, lesion- and nodule-level metrics, a threshold sweep and overlay
//! images into `RUN_DIR/eval/`.
//!
//! Everything is computed in one streaming inference pass; each slice's probabilities live only
//! while that slice is scored. The outputs are written into `eval.tmp/` (with `summary.json`
//! last) and the directory is renamed into place, so `eval/` is either complete or absent.

pub mod pass;
pub mod selection;

use crate::atomic::remove_if_exists;
use crate::data::batcher::Batcher;
use crate::data::nodule_table::read_size_bands;
use crate::data::{Order, ShardStream, SliceIndex, StreamOptions};
use crate::device::{self, DeviceSpec};
use crate::error::{Error, IoContext, Result};
use crate::fingerprint::fingerprint;
use crate::infer::model::LoadedModel;
use crate::json::read_json;
use crate::json::write_json_atomic;
use crate::layout::{temporary_name, DataDir, RunDir};
use crate::lock::DirLock;
use crate::metrics::confusion::ratio_or_one;
use crate::metrics::sweep::threshold_for_recall;
use crate::run::checkpoint::CheckpointChoice;
use crate::run::eval_summary::EMPTY_TRUTH_RULE;
pub use crate::run::eval_summary::{EvalSplit, EvalSummary};
use crate::run::eval_tables::{write_per_slice, write_thresholds};
use crate::run::record::read_run_record;
use crate::run::settings::check_threshold;
use pass::{Pass, ScoredSlice};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The resolved, validated `eval` config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalConfig {
    /// Prepared and split data directory.
    pub data: PathBuf,
    /// Run directory (config.json and checkpoints).
    pub run: PathBuf,
    /// Which split to evaluate.
    pub split: EvalSplit,
    /// Which checkpoint.
    pub checkpoint: CheckpointChoice,
    /// Threshold; `None` takes the run's.
    pub threshold: Option<f64>,
    /// The recall the threshold sweep looks for.
    pub target_recall: f64,
    /// Overlays per kind (lowest recall, seeded sample).
    pub overlays: usize,
    /// Redo a complete evaluation.
    pub overwrite: bool,
    /// Inference device.
    pub device: DeviceSpec,
    /// Hide progress bars.
    pub quiet: bool,
}

impl EvalConfig {
    /// Checks value ranges before any work starts.
    pub fn validate(&self) -> Result<()> {
        if let Some(t) = self.threshold {
            check_threshold(t)?;
        }
        if !(self.target_recall > 0.0 && self.target_recall <= 1.0) {
            return Err(Error::Usage(format!(
                "--target-recall must be in (0, 1], got {}",
                self.target_recall
            )));
        }
        Ok(())
    }
}

/// The outcome of `eval`.
#[derive(Debug, Clone)]
pub struct EvalReport {
    /// A complete evaluation with the same settings existed; nothing was done.
    pub skipped: bool,
    /// The summary (read back when skipped).
    pub summary: EvalSummary,
    /// The eval directory.
    pub dir: PathBuf,
}

impl EvalReport {
    /// The one-line summary.
    pub fn summary(&self) -> String {
        let prefix = if self.skipped {
            "eval: already done (use --overwrite to redo)"
        } else {
            "eval: done"
        };
        format!(
            "{prefix}; {}; in {}",
            self.summary.line(),
            self.dir.display()
        )
    }
}

/// Runs the stage.
pub fn run(cfg: &EvalConfig) -> Result<EvalReport> {
    cfg.validate()?;
    let started = Instant::now();
    let run_dir = RunDir::new(&cfg.run);
    let record = read_run_record(&run_dir)?;
    let _lock = DirLock::acquire(run_dir.root(), "eval --run")?;
    let threshold = cfg.threshold.unwrap_or(record.config.settings.threshold);
    let eval_dir = run_dir.eval_dir();
    if let Some(done) = reusable(cfg, &run_dir, threshold)? {
        return Ok(EvalReport {
            skipped: true,
            summary: done,
            dir: eval_dir,
        });
    }
    let data = DataDir::new(&cfg.data);
    let index = index_to_evaluate(&data, cfg.split, record.config.fold)?;
    let model = LoadedModel::load(&run_dir, cfg.checkpoint, cfg.device)?;
    let data_fingerprint = fingerprint(&data.manifest())?;
    if data_fingerprint != record.data_fingerprint {
        tracing::warn!(
            "{}: differs from the data the run was trained on; evaluating anyway",
            data.manifest().display()
        );
    }
    let tmp = temporary_name(&eval_dir);
    remove_if_exists(&tmp)?;
    let overlays_dir = tmp.join(RunDir::EVAL_OVERLAYS);
    std::fs::create_dir_all(&overlays_dir).at(&overlays_dir)?;
    let sample = selection::seeded_sample(index.len(), cfg.overlays, record.seed);
    let mut pass = Pass::new(threshold, overlays_dir, cfg.overlays, sample);
    score_every_slice(cfg, &data, &index, &model, &mut pass)?;
    let inputs = Fingerprints {
        checkpoint: fingerprint(&model.checkpoint)?,
        data: data_fingerprint,
    };
    let summary = write_outputs(cfg, &tmp, &model, pass, (threshold, inputs), started)?;
    remove_if_exists(&eval_dir)?;
    std::fs::rename(&tmp, &eval_dir).at(&eval_dir)?;
    Ok(EvalReport {
        skipped: false,
        summary,
        dir: eval_dir,
    })
}

/// A complete evaluation of the same checkpoint and data with the same settings, to report
/// instead of redoing it. One of another checkpoint or other data is stale: it is redone. One
/// with other settings is an error (unless `--overwrite`).
fn reusable(cfg: &EvalConfig, run_dir: &RunDir, threshold: f64) -> Result<Option<EvalSummary>> {
    let Some(done) = complete(run_dir)? else {
        return Ok(None);
    };
    if cfg.overwrite {
        return Ok(None);
    }
    let checkpoint = cfg.checkpoint.path(run_dir);
    let inputs_now = (
        checkpoint
            .is_file()
            .then(|| fingerprint(&checkpoint))
            .transpose()?,
        fingerprint(&DataDir::new(&cfg.data).manifest()).ok(),
    );
    if (
        done.checkpoint_fingerprint.clone(),
        done.data_fingerprint.clone(),
    ) != inputs_now
    {
        tracing::info!(
            "{}: stale (the checkpoint or the data changed since); evaluating again",
            run_dir.eval_summary().display()
        );
        return Ok(None);
    }
    let same = done.split == cfg.split
        && done.checkpoint == cfg.checkpoint
        && done.threshold == threshold
        && done.target_recall == cfg.target_recall
        && done.overlays_per_kind == cfg.overlays;
    if !same {
        return Err(Error::Usage(format!(
            "{}: evaluated with other settings; pass --overwrite to redo",
            run_dir.eval_summary().display()
        )));
    }
    Ok(Some(done))
}

/// The slices of `split` (the run's fold when it was trained on one); an error when empty.
fn index_to_evaluate(data: &DataDir, split: EvalSplit, fold: Option<u32>) -> Result<SliceIndex> {
    crate::data::prepare_record::require(data)?;
    let (train_index, val_index) = crate::data::split_table::train_val_indexes(data, fold)?;
    let (index, index_path) = match split {
        EvalSplit::Val => (val_index, data.val_index()),
        EvalSplit::Train => (train_index, data.train_index()),
    };
    if index.is_empty() {
        return Err(Error::input(index_path, "the split has no slices"));
    }
    Ok(index)
}

/// Streams the slices of `index` through the model and scores each one in `pass`.
fn score_every_slice(
    cfg: &EvalConfig,
    data: &DataDir,
    index: &SliceIndex,
    model: &LoadedModel,
    pass: &mut Pass,
) -> Result<()> {
    let settings = &model.record.config.settings;
    tracing::info!(
        "evaluating {} {} slices with {} on {} at threshold {}",
        index.len(),
        cfg.split,
        model.checkpoint.display(),
        device::describe(&model.device),
        pass.threshold()
    );
    let options = StreamOptions {
        fusion: settings.fusion,
        capacity: settings.queue_capacity,
        order: Order::Index,
    };
    let stream = ShardStream::open(data, index, &options)?;
    let bar = crate::progress::bar(index.len() as u64, "eval", cfg.quiet);
    let mut position = 0usize;
    for batch in Batcher::new(stream).batch_size(settings.val_batch_size) {
        let predictions = model.predict(batch?)?;
        for slice in predictions.slices() {
            pass.add(position, &ScoredSlice::from(&slice))?;
            position += 1;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// What an evaluation's result depends on besides its settings.
struct Fingerprints {
    /// The evaluated checkpoint file's.
    checkpoint: String,
    /// The data directory's manifest's.
    data: String,
}

/// Writes the overlays, `per_slice.parquet`, `thresholds.parquet` and, last, `summary.json`
/// into the temporary directory `tmp`.
fn write_outputs(
    cfg: &EvalConfig,
    tmp: &Path,
    model: &LoadedModel,
    mut pass: Pass,
    (threshold, inputs): (f64, Fingerprints),
    started: Instant,
) -> Result<EvalSummary> {
    let overlays = pass.finish_overlays()?;
    let sweep_rows = pass.sweep.rows();
    write_per_slice(&tmp.join(RunDir::EVAL_PER_SLICE), &pass.rows)?;
    write_thresholds(&tmp.join(RunDir::EVAL_THRESHOLDS), &sweep_rows)?;
    let (nodules, nodules_detected, nodule_recall) = pass.nodule_recall();
    let nodules_table = DataDir::new(&cfg.data).nodules();
    let nodule_recall_by_size = if nodules_table.exists() {
        pass.nodule_recall_by_size(&read_size_bands(&nodules_table)?)
    } else {
        Vec::new()
    };
    let c = pass.counts;
    let l = pass.lesions;
    let slices = pass.slices();
    let summary = EvalSummary {
        version: env!("CARGO_PKG_VERSION").to_string(),
        run: cfg.run.clone(),
        data: cfg.data.clone(),
        split: cfg.split,
        checkpoint: cfg.checkpoint,
        checkpoint_file: model.checkpoint.clone(),
        checkpoint_fingerprint: Some(inputs.checkpoint),
        data_fingerprint: Some(inputs.data),
        threshold,
        fusion: model.record.config.settings.fusion.to_string(),
        device: device::describe(&model.device),
        slices,
        slices_with_truth: pass.slices_with_truth(),
        tp: c.tp,
        fp: c.fp,
        fn_: c.fn_,
        tn: c.tn,
        recall: c.recall(),
        precision: c.precision(),
        dice: c.dice(),
        mean_slice_dice: pass.mean_slice_dice(),
        mean_slice_dice_rule: EMPTY_TRUTH_RULE.to_string(),
        lesions: l.lesions,
        lesions_detected: l.detected,
        lesion_recall: ratio_or_one(l.detected, l.lesions),
        fp_components: l.fp_components,
        fp_components_per_slice: l.fp_components as f64 / slices.max(1) as f64,
        nodules,
        nodules_detected,
        nodule_recall,
        nodule_recall_by_size,
        target_recall: cfg.target_recall,
        threshold_at_target_recall: threshold_for_recall(&sweep_rows, cfg.target_recall),
        overlays_per_kind: cfg.overlays,
        overlays,
        seconds: started.elapsed().as_secs_f64(),
    };
    write_json_atomic(&tmp.join(RunDir::EVAL_SUMMARY), &summary)?;
    Ok(summary)
}

/// The summary of a complete evaluation in `run`, if there is one.
fn complete(run: &RunDir) -> Result<Option<EvalSummary>> {
    match read_json::<EvalSummary>(&run.eval_summary()) {
        Ok(s) => Ok(s),
        // An unreadable summary (an older format, a damaged file) is an incomplete eval.
        Err(e) => {
            tracing::warn!("{e}; evaluating again");
            Ok(None)
        }
    }
}
