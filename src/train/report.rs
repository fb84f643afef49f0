//! What a `train` run reports: its epoch rows, why it stopped, and the one-line summary.

use crate::run::epochs::EpochMetrics;
use crate::run::status::StopReason;

/// The outcome of a `train` run.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// The run had already finished; nothing was done.
    pub skipped: bool,
    /// Rows of `epochs.parquet`.
    pub epochs: Vec<EpochMetrics>,
    /// Why training ended (or paused).
    pub stop_reason: Option<StopReason>,
    /// The device used.
    pub device: String,
}

impl TrainReport {
    /// The best epoch's row, if any epoch was admissible.
    pub fn best(&self) -> Option<&EpochMetrics> {
        let best = self.epochs.last()?.best_epoch?;
        self.epochs.iter().find(|e| e.epoch == best)
    }

    /// The one-line summary.
    pub fn summary(&self) -> String {
        let reason = self
            .stop_reason
            .map_or_else(|| "unknown".to_string(), |r| r.to_string());
        let prefix = if self.skipped {
            "train: already finished (use --overwrite to retrain)"
        } else {
            "train: done"
        };
        match self.best() {
            Some(b) => format!(
                "{prefix}; {} epochs on {}, stopped: {reason}; best epoch {} (recall {:.3}, precision {:.3}, Dice {:.3}, {} {:.3})",
                self.epochs.len(),
                self.device,
                b.epoch,
                b.val_recall,
                b.val_precision,
                b.val_dice,
                b.monitor,
                b.monitor_value
            ),
            None => format!(
                "{prefix}; {} epochs on {}, stopped: {reason}; no epoch passed the min-precision guard",
                self.epochs.len(),
                self.device
            ),
        }
    }
}
