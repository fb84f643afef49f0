//! Model selection and early stopping as small, serializable pieces (in the style of
//! burn-train): a monitored value from [`EpochScores`], a best-checkpoint tracker, a patience
//! counter and the reason training ended. Their state serializes so a run can resume.
//!
//! Improvement rule: an epoch is *admissible* when its monitored value is finite and its
//! precision is at least `min_precision` (the guard against degenerate "predict everything"
//! epochs, whose recall is 1.0). An admissible epoch improves when its value is strictly
//! greater than the best so far, or equal to it with a strictly higher pooled Dice. The first
//! admissible epoch always improves.

use serde::{Deserialize, Serialize};

use crate::metrics::confusion::EpochScores;
use crate::metrics::monitor::MonitorSpec;
use crate::run::status::StopReason;

/// Tracks the best epoch so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BestCheckpoint {
    /// Monitored value of the best epoch.
    pub best_value: Option<f64>,
    /// Pooled Dice of the best epoch (the tie-breaker).
    pub best_dice: f64,
    /// The best epoch, as numbered by the caller.
    pub best_epoch: Option<usize>,
    /// All scores of the best epoch.
    pub best_scores: Option<EpochScores>,
}

impl BestCheckpoint {
    /// No epoch seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `scores` would improve on the best so far (see the module docs).
    pub fn would_improve(&self, spec: &MonitorSpec, scores: &EpochScores) -> bool {
        if !spec.admissible(scores) {
            return false;
        }
        let value = spec.value(scores);
        match self.best_value {
            None => true,
            Some(best) => value > best || (value == best && scores.dice > self.best_dice),
        }
    }

    /// Records `epoch`; returns whether it improved (the caller then saves a checkpoint).
    pub fn observe(&mut self, epoch: usize, spec: &MonitorSpec, scores: &EpochScores) -> bool {
        let improved = self.would_improve(spec, scores);
        if improved {
            self.best_value = Some(spec.value(scores));
            self.best_dice = scores.dice;
            self.best_epoch = Some(epoch);
            self.best_scores = Some(*scores);
        }
        improved
    }
}

/// Stop after `patience` consecutive epochs without improvement (the notebook's counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoImprovementSince {
    /// Epochs without improvement tolerated; 0 behaves as 1.
    pub patience: usize,
    /// Consecutive epochs without improvement so far.
    pub epochs_without_improvement: usize,
}

impl NoImprovementSince {
    /// A fresh counter.
    pub fn new(patience: usize) -> Self {
        Self {
            patience,
            epochs_without_improvement: 0,
        }
    }

    /// Records one epoch; returns true when training should stop.
    pub fn update(&mut self, improved: bool) -> bool {
        if improved {
            self.epochs_without_improvement = 0;
        } else {
            self.epochs_without_improvement += 1;
        }
        self.should_stop()
    }

    /// Whether patience is exhausted.
    pub fn should_stop(&self) -> bool {
        self.epochs_without_improvement >= self.patience.max(1)
    }
}

/// The outcome of one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochDecision {
    /// Save this epoch as the best checkpoint.
    pub improved: bool,
    /// Stop after this epoch, and why.
    pub stop: Option<StopReason>,
}

/// [`MonitorSpec`] + [`BestCheckpoint`] + [`NoImprovementSince`] + an epoch budget; the whole
/// state a resumed run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    /// What is monitored.
    pub spec: MonitorSpec,
    /// Best epoch so far.
    pub best: BestCheckpoint,
    /// Patience counter.
    pub patience: NoImprovementSince,
    /// Epoch budget: the epoch numbered `max_epochs` (1-based) is the last.
    pub max_epochs: usize,
}

impl EarlyStopping {
    /// A fresh state.
    pub fn new(spec: MonitorSpec, patience: usize, max_epochs: usize) -> Self {
        Self {
            spec,
            best: BestCheckpoint::new(),
            patience: NoImprovementSince::new(patience),
            max_epochs,
        }
    }

    /// Records epoch `epoch` (1-based). Patience wins over the budget when both end training.
    pub fn step(&mut self, epoch: usize, scores: &EpochScores) -> EpochDecision {
        let improved = self.best.observe(epoch, &self.spec, scores);
        let stop = if self.patience.update(improved) {
            Some(StopReason::Patience)
        } else if epoch >= self.max_epochs {
            Some(StopReason::MaxEpochs)
        } else {
            None
        };
        EpochDecision { improved, stop }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::monitor::Monitor;

    fn s(recall: f64, precision: f64, dice: f64) -> EpochScores {
        EpochScores::of(recall, precision, dice)
    }

    struct Case {
        name: &'static str,
        spec: MonitorSpec,
        patience: usize,
        max_epochs: usize,
        scores: Vec<EpochScores>,
        improved: Vec<bool>,
        best_epoch: Option<usize>,
        stop: Option<(usize, StopReason)>,
    }

    fn recall_spec(min_precision: f64) -> MonitorSpec {
        MonitorSpec {
            monitor: Monitor::Recall,
            beta: 2.0,
            min_precision,
        }
    }

    #[test]
    fn early_stopping_table() {
        let cases = vec![
            Case {
                name: "patience exhausted",
                spec: recall_spec(0.0),
                patience: 2,
                max_epochs: 10,
                scores: vec![
                    s(0.5, 0.5, 0.3),
                    s(0.6, 0.5, 0.3),
                    s(0.6, 0.5, 0.3),
                    s(0.55, 0.5, 0.3),
                ],
                improved: vec![true, true, false, false],
                best_epoch: Some(2),
                stop: Some((4, StopReason::Patience)),
            },
            Case {
                name: "counter resets on improvement",
                spec: recall_spec(0.0),
                patience: 2,
                max_epochs: 10,
                scores: vec![
                    s(0.5, 0.5, 0.3),
                    s(0.4, 0.5, 0.3),
                    s(0.7, 0.5, 0.3),
                    s(0.6, 0.5, 0.3),
                    s(0.6, 0.5, 0.3),
                ],
                improved: vec![true, false, true, false, false],
                best_epoch: Some(3),
                stop: Some((5, StopReason::Patience)),
            },
            Case {
                name: "ties broken by higher dice, equal dice is no improvement",
                spec: recall_spec(0.0),
                patience: 3,
                max_epochs: 4,
                scores: vec![
                    s(0.6, 0.5, 0.3),
                    s(0.6, 0.5, 0.4),
                    s(0.6, 0.5, 0.4),
                    s(0.5, 0.5, 0.5),
                ],
                improved: vec![true, true, false, false],
                best_epoch: Some(2),
                stop: Some((4, StopReason::MaxEpochs)),
            },
            Case {
                name: "degenerate recall guard",
                spec: recall_spec(0.05),
                patience: 5,
                max_epochs: 10,
                scores: vec![s(0.5, 0.2, 0.3), s(1.0, 0.01, 0.02), s(0.55, 0.3, 0.35)],
                improved: vec![true, false, true],
                best_epoch: Some(3),
                stop: None,
            },
            Case {
                name: "without the guard the degenerate epoch wins",
                spec: recall_spec(0.0),
                patience: 5,
                max_epochs: 10,
                scores: vec![s(0.5, 0.2, 0.3), s(1.0, 0.01, 0.02), s(0.55, 0.3, 0.35)],
                improved: vec![true, true, false],
                best_epoch: Some(2),
                stop: None,
            },
            Case {
                // F2: e1 = 5·.1·.9/(.4+.9) = .346; e2 = 5·.5·.7/(2+.7) = .648;
                // e3 = 5·.01·1/(.04+1) = .048
                name: "f2 monitor prefers balanced recall",
                spec: MonitorSpec::default(),
                patience: 5,
                max_epochs: 10,
                scores: vec![s(0.9, 0.1, 0.18), s(0.7, 0.5, 0.58), s(1.0, 0.01, 0.02)],
                improved: vec![true, true, false],
                best_epoch: Some(2),
                stop: None,
            },
            Case {
                name: "nothing admissible never improves and patience still runs",
                spec: recall_spec(0.5),
                patience: 2,
                max_epochs: 10,
                scores: vec![s(1.0, 0.01, 0.02), s(1.0, 0.02, 0.04)],
                improved: vec![false, false],
                best_epoch: None,
                stop: Some((2, StopReason::Patience)),
            },
        ];
        for case in cases {
            let mut es = EarlyStopping::new(case.spec, case.patience, case.max_epochs);
            let mut improved = Vec::new();
            let mut stop = None;
            for (i, sc) in case.scores.iter().enumerate() {
                let epoch = i + 1;
                let d = es.step(epoch, sc);
                improved.push(d.improved);
                if let Some(reason) = d.stop {
                    stop = Some((epoch, reason));
                    break;
                }
            }
            assert_eq!(improved, case.improved, "{}: improved flags", case.name);
            assert_eq!(
                es.best.best_epoch, case.best_epoch,
                "{}: best epoch",
                case.name
            );
            assert_eq!(stop, case.stop, "{}: stop", case.name);
        }
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut es = EarlyStopping::new(recall_spec(0.05), 3, 20);
        es.step(1, &s(0.5, 0.2, 0.3));
        es.step(2, &s(0.4, 0.2, 0.3));
        let json = serde_json::to_string(&es).unwrap_or_default();
        let back: EarlyStopping = serde_json::from_str(&json).expect("state deserializes");
        assert_eq!(back, es);
        assert_eq!(back.patience.epochs_without_improvement, 1);
    }

    #[test]
    fn stop_reason_display() {
        assert_eq!(
            StopReason::Patience.to_string(),
            "no improvement within patience"
        );
        assert_eq!(
            StopReason::MaxEpochs.to_string(),
            "reached the maximum number of epochs"
        );
        assert_eq!(StopReason::Interrupted.to_string(), "interrupted");
        assert_eq!(
            serde_json::to_string(&StopReason::MaxEpochs)
                .ok()
                .as_deref(),
            Some("\"max-epochs\"")
        );
    }
}
