//! The score that selects the best epoch and drives early stopping: F-β (recall-weighted),
//! recall or Dice, with a minimum-precision guard.

use crate::metrics::confusion::{f_beta, EpochScores};
use serde::{Deserialize, Serialize};

/// Which score selects the best checkpoint. Config names: `fbeta` (alias `f2`), `recall`,
/// `dice`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Monitor {
    /// Pooled F-β (β from [`MonitorSpec::beta`], default 2: recall-weighted).
    #[default]
    #[serde(rename = "fbeta", alias = "f2")]
    FBeta,
    /// Pooled recall (the notebook's choice); pair it with a `min_precision` guard.
    Recall,
    /// Pooled Dice.
    Dice,
}

/// A [`Monitor`] with its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorSpec {
    /// The monitored score.
    pub monitor: Monitor,
    /// β of the F-β monitor.
    pub beta: f64,
    /// Epochs with precision below this are never an improvement (any monitor). 0 disables.
    pub min_precision: f64,
}

impl Default for MonitorSpec {
    fn default() -> Self {
        Self {
            monitor: Monitor::FBeta,
            beta: 2.0,
            min_precision: 0.0,
        }
    }
}

impl MonitorSpec {
    /// The monitored value of `scores`. F-β is `(1+β²)·P·R / (β²·P + R)`, 0 when `P = R = 0`.
    pub fn value(&self, scores: &EpochScores) -> f64 {
        match self.monitor {
            Monitor::Recall => scores.recall,
            Monitor::Dice => scores.dice,
            Monitor::FBeta => f_beta(scores.precision, scores.recall, self.beta),
        }
    }

    /// Whether `scores` may be selected at all (finite value, precision guard).
    pub fn admissible(&self, scores: &EpochScores) -> bool {
        self.value(scores).is_finite() && scores.precision >= self.min_precision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(recall: f64, precision: f64, dice: f64) -> EpochScores {
        EpochScores::of(recall, precision, dice)
    }

    #[test]
    fn fbeta_value_and_monitor_names() {
        let spec = MonitorSpec::default();
        let v = spec.value(&s(0.6, 0.75, 0.0));
        assert!((v - 5.0 * 0.75 * 0.6 / (4.0 * 0.75 + 0.6)).abs() < 1e-12);
        assert_eq!(spec.value(&s(0.0, 0.0, 0.0)), 0.0);
        let names: Vec<Monitor> =
            serde_json::from_str(r#"["f2","fbeta","recall","dice"]"#).unwrap_or_default();
        assert_eq!(
            names,
            [
                Monitor::FBeta,
                Monitor::FBeta,
                Monitor::Recall,
                Monitor::Dice
            ]
        );
        assert_eq!(
            serde_json::to_string(&Monitor::FBeta).ok().as_deref(),
            Some("\"fbeta\"")
        );
    }
}
