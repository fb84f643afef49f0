//! `eval/summary.json`: the pooled, lesion- and nodule-level results of one evaluation and the
//! settings that produced them.

use crate::run::checkpoint::CheckpointChoice;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Which split an evaluation reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum EvalSplit {
    /// The validation slices (`val.parquet`, or the run's fold).
    #[default]
    Val,
    /// The training slices.
    Train,
}

impl std::fmt::Display for EvalSplit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Val => "val",
            Self::Train => "train",
        })
    }
}

/// The rule for a slice whose ground truth is empty, as stated in the summary.
pub const EMPTY_TRUTH_RULE: &str =
    "per-slice Dice is 2TP/(2TP+FP+FN); a slice with empty truth scores 1 if its prediction is also empty, else 0";

/// Nodule recall within one size band.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SizeBandRecall {
    /// `<6mm`, `6-10mm` or `>10mm`.
    pub band: String,
    /// Evaluated nodules in the band (with any truth).
    pub nodules: u64,
    /// Those detected.
    pub detected: u64,
    /// `detected / nodules` (1 when there are none).
    pub recall: f64,
}

/// The contents of `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    /// lungseg version that wrote it.
    pub version: String,
    /// The run directory.
    pub run: PathBuf,
    /// The data directory.
    pub data: PathBuf,
    /// The evaluated split.
    pub split: EvalSplit,
    /// The checkpoint choice.
    pub checkpoint: CheckpointChoice,
    /// The checkpoint file loaded.
    pub checkpoint_file: PathBuf,
    /// Fingerprint of that checkpoint's bytes when it was evaluated (absent in older summaries).
    #[serde(default)]
    pub checkpoint_fingerprint: Option<String>,
    /// Fingerprint of the data directory's `manifest.parquet` when it was evaluated.
    #[serde(default)]
    pub data_fingerprint: Option<String>,
    /// p > threshold is positive.
    pub threshold: f64,
    /// Rater fusion of the truth (from the run's config).
    pub fusion: String,
    /// Device used for inference.
    pub device: String,
    /// Slices evaluated.
    pub slices: u64,
    /// Slices with any truth pixel.
    pub slices_with_truth: u64,
    /// Pooled true-positive pixels.
    pub tp: u64,
    /// Pooled false-positive pixels.
    pub fp: u64,
    /// Pooled false-negative pixels.
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// Pooled true-negative pixels.
    pub tn: u64,
    /// Pooled pixel recall.
    pub recall: f64,
    /// Pooled pixel precision.
    pub precision: f64,
    /// Pooled pixel Dice.
    pub dice: f64,
    /// Mean per-slice Dice.
    pub mean_slice_dice: f64,
    /// How empty-truth slices score.
    pub mean_slice_dice_rule: String,
    /// Lesions: 8-connected truth components, counted per slice.
    pub lesions: u64,
    /// Lesions overlapped by a predicted pixel.
    pub lesions_detected: u64,
    /// `lesions_detected / lesions` (1 when there are none).
    pub lesion_recall: f64,
    /// Predicted components overlapping no truth pixel, in total.
    pub fp_components: u64,
    /// `fp_components / slices`.
    pub fp_components_per_slice: f64,
    /// (patient, nodule) pairs with any truth.
    pub nodules: u64,
    /// Those with a detected lesion on any of their slices.
    pub nodules_detected: u64,
    /// `nodules_detected / nodules` (1 when there are none).
    pub nodule_recall: f64,
    /// Nodule recall per size band (`<6mm`, `6-10mm`, `>10mm` by `nodules.parquet`'s diameter);
    /// empty when the data has no `nodules.parquet` (the PNG slice tree).
    #[serde(default)]
    pub nodule_recall_by_size: Vec<SizeBandRecall>,
    /// The recall the sweep looks for.
    pub target_recall: f64,
    /// The highest sweep threshold whose pooled recall reaches `target_recall`; null if none.
    pub threshold_at_target_recall: Option<f64>,
    /// Overlays asked for per kind (lowest recall, seeded sample).
    pub overlays_per_kind: usize,
    /// Overlay file names under `overlays/`.
    pub overlays: Vec<String>,
    /// Wall-clock seconds of the evaluation.
    pub seconds: f64,
}

impl EvalSummary {
    /// The one-line summary printed by the command.
    pub fn line(&self) -> String {
        let target = match self.threshold_at_target_recall {
            Some(t) => format!(
                "recall >= {} at thresholds up to {t:.2}",
                self.target_recall
            ),
            None => format!("no swept threshold reaches recall {}", self.target_recall),
        };
        let by_size: String = self
            .nodule_recall_by_size
            .iter()
            .map(|b| format!(" {} {:.3} ({}/{})", b.band, b.recall, b.detected, b.nodules))
            .collect::<Vec<_>>()
            .join(",");
        let by_size = if by_size.is_empty() {
            by_size
        } else {
            format!(" [by size:{by_size}]")
        };
        format!(
            "{} slices of {} at threshold {} ({} checkpoint): recall {:.3}, precision {:.3}, Dice {:.3}, mean slice Dice {:.3}; lesion recall {:.3} ({}/{}), nodule recall {:.3} ({}/{}){by_size}, {:.2} FP components/slice; {target}; {} overlays; {:.1} s",
            self.slices,
            self.split,
            self.threshold,
            self.checkpoint,
            self.recall,
            self.precision,
            self.dice,
            self.mean_slice_dice,
            self.lesion_recall,
            self.lesions_detected,
            self.lesions,
            self.nodule_recall,
            self.nodules_detected,
            self.nodules,
            self.fp_components_per_slice,
            self.overlays.len(),
            self.seconds
        )
    }
}
