//! The threshold sweep: pooled pixel counts and lesion statistics at the thresholds
//! 0.05, 0.10, …, 0.95, accumulated slice by slice in the one inference pass, so no probability
//! plane outlives its slice.

use crate::metrics::confusion::ratio_or_one;
use crate::metrics::confusion::ConfusionCounts;
use crate::metrics::lesions::{LesionStats, Truth};

/// Number of sweep thresholds.
pub const STEPS: usize = 19;

/// The sweep thresholds: `k * 0.05` for k = 1..=19, rounded to 2 decimals.
pub fn thresholds() -> [f64; STEPS] {
    std::array::from_fn(|i| ((i + 1) as f64 * 0.05 * 100.0).round() / 100.0)
}

/// One row of `thresholds.parquet`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SweepRow {
    /// The threshold (`p > threshold` is positive).
    pub threshold: f64,
    /// Pooled pixel recall.
    pub recall: f64,
    /// Pooled pixel precision.
    pub precision: f64,
    /// Pooled pixel Dice.
    pub dice: f64,
    /// Detected lesions / lesions (1.0 when there are no lesions).
    pub lesion_recall: f64,
    /// False-positive components per slice (0.0 with no slices).
    pub fp_components_per_slice: f64,
    /// Pixels predicted positive (TP + FP); 0 makes precision undefined.
    pub predicted_pixels: u64,
}

impl SweepRow {
    /// Precision, or `None` where nothing is predicted (the table then holds 1.0).
    pub fn defined_precision(&self) -> Option<f64> {
        (self.predicted_pixels > 0).then_some(self.precision)
    }
}

/// Per-threshold running totals.
#[derive(Debug, Clone)]
pub struct Sweep {
    thresholds: [f64; STEPS],
    counts: [ConfusionCounts; STEPS],
    lesions: [LesionStats; STEPS],
    slices: u64,
}

impl Default for Sweep {
    fn default() -> Self {
        Self::new()
    }
}

impl Sweep {
    /// An empty sweep over [`thresholds`].
    pub fn new() -> Self {
        Self {
            thresholds: thresholds(),
            counts: [ConfusionCounts::default(); STEPS],
            lesions: [LesionStats::default(); STEPS],
            slices: 0,
        }
    }

    /// Adds one slice: its probabilities, its truth mask and the labelled truth.
    pub fn add(&mut self, probs: &[f32], mask: &[u8], truth: &Truth) {
        let mut pred = vec![false; probs.len()];
        for (k, &t) in self.thresholds.iter().enumerate() {
            let t = t as f32;
            for (p, &prob) in pred.iter_mut().zip(probs) {
                *p = prob > t;
            }
            self.counts[k].add(&ConfusionCounts::from_probs_and_mask(probs, mask, t));
            self.lesions[k].add(&truth.compare(&pred));
        }
        self.slices += 1;
    }

    /// The table rows, by rising threshold.
    pub fn rows(&self) -> Vec<SweepRow> {
        (0..STEPS)
            .map(|k| {
                let c = &self.counts[k];
                let l = &self.lesions[k];
                SweepRow {
                    threshold: self.thresholds[k],
                    recall: c.recall(),
                    precision: c.precision(),
                    dice: c.dice(),
                    lesion_recall: ratio_or_one(l.detected, l.lesions),
                    fp_components_per_slice: if self.slices == 0 {
                        0.0
                    } else {
                        l.fp_components as f64 / self.slices as f64
                    },
                    predicted_pixels: c.tp + c.fp,
                }
            })
            .collect()
    }
}

/// The highest sweep threshold whose pooled pixel recall reaches `target`, if any.
pub fn threshold_for_recall(rows: &[SweepRow], target: f64) -> Option<f64> {
    rows.iter()
        .filter(|r| r.recall >= target)
        .map(|r| r.threshold)
        .fold(None, |best, t| Some(best.map_or(t, |b: f64| b.max(t))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    #[test]
    fn thresholds_are_rounded_multiples_of_a_twentieth() {
        let t = thresholds();
        assert_eq!(t[0], 0.05);
        assert_eq!(t[2], 0.15);
        assert_eq!(t[6], 0.35);
        assert_eq!(t[18], 0.95);
        assert!(t.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn recall_never_rises_with_the_threshold_on_random_data() {
        let mut rng = SplitMix64::new(11);
        let mut sweep = Sweep::new();
        for _ in 0..20 {
            let (h, w) = (16, 12);
            let probs: Vec<f32> = (0..h * w).map(|_| rng.next_f64() as f32).collect();
            let mask: Vec<u8> = (0..h * w).map(|_| u8::from(rng.chance(0.3))).collect();
            let truth = Truth::new(&mask, h, w);
            sweep.add(&probs, &mask, &truth);
        }
        let rows = sweep.rows();
        assert_eq!(rows.len(), STEPS);
        for pair in rows.windows(2) {
            assert!(pair[1].recall <= pair[0].recall, "{pair:?}");
            assert!(pair[1].lesion_recall <= pair[0].lesion_recall, "{pair:?}");
        }
        assert!(rows[0].recall > rows[18].recall);
    }

    #[test]
    fn counts_match_a_hand_built_slice() {
        // probs 0.9 (truth), 0.3 (truth), 0.6 (background), 0.0 (background) in a 1x4 row.
        let probs = [0.9, 0.3, 0.6, 0.0];
        let mask = [1, 1, 0, 0];
        let truth = Truth::new(&mask, 1, 4);
        let mut sweep = Sweep::new();
        sweep.add(&probs, &mask, &truth);
        let rows = sweep.rows();
        let at = |t: f64| rows.iter().find(|r| r.threshold == t).copied().unwrap();
        // t = 0.25: predicted 0.9, 0.3, 0.6 → tp 2, fp 1; one lesion (pixels 0-1) found, the
        // predicted run 0..=2 is one component touching truth → no fp component.
        let r = at(0.25);
        assert_eq!((r.recall, r.precision), (1.0, 2.0 / 3.0));
        assert_eq!((r.lesion_recall, r.fp_components_per_slice), (1.0, 0.0));
        // t = 0.5: predicted 0.9 and 0.6 → tp 1, fn 1, fp 1; they are not adjacent, so 0.6 is
        // a false-positive component.
        let r = at(0.5);
        assert_eq!((r.recall, r.precision), (0.5, 0.5));
        assert_eq!((r.lesion_recall, r.fp_components_per_slice), (1.0, 1.0));
        // t = 0.95: nothing predicted.
        let r = at(0.95);
        assert_eq!((r.recall, r.precision, r.dice), (0.0, 1.0, 0.0));
        assert_eq!(r.lesion_recall, 0.0);
        assert_eq!(threshold_for_recall(&rows, 1.0), Some(0.25));
        assert_eq!(threshold_for_recall(&rows, 0.5), Some(0.85));
        assert_eq!(threshold_for_recall(&[], 0.5), None);
    }

    #[test]
    fn an_empty_sweep_is_defined() {
        let rows = Sweep::new().rows();
        assert!(rows
            .iter()
            .all(|r| r.recall == 1.0 && r.fp_components_per_slice == 0.0));
    }
}
