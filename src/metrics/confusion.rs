//! Thresholded segmentation metrics pooled over a whole validation pass (one confusion matrix
//! for all pixels), replacing the notebook's mean of per-batch ratios, which over-weights
//! small and empty batches.
//!
//! A pixel is predicted positive when `p > threshold` (strictly greater, as the notebook).
//! Empty cases are defined, never NaN:
//!
//! | metric      | denominator zero when      | value |
//! |-------------|----------------------------|-------|
//! | recall      | no true positives exist    | 1.0   |
//! | precision   | nothing predicted positive | 1.0   |
//! | Dice, F-β   | both of the above          | 1.0   |
//!
//! With those conventions F-β computed from counts equals the usual
//! `(1+β²)·P·R / (β²·P + R)` in every case where that is defined.

use serde::{Deserialize, Serialize};

/// Pixel confusion matrix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfusionCounts {
    /// Predicted positive, truly positive.
    pub tp: u64,
    /// Predicted positive, truly negative.
    pub fp: u64,
    /// Predicted negative, truly positive.
    pub fn_: u64,
    /// Predicted negative, truly negative.
    pub tn: u64,
}

/// `num / den`, or 1.0 when `den` is 0 (the empty-case convention of every ratio here).
pub fn ratio_or_one(num: u64, den: u64) -> f64 {
    if den == 0 {
        1.0
    } else {
        num as f64 / den as f64
    }
}

/// F-β from precision and recall: `(1+β²)·P·R / (β²·P + R)`, 0 when `P = R = 0`. `beta = 1`
/// is Dice; `beta = 2` weighs recall four times as much as precision. The one definition that
/// both [`ConfusionCounts::f_beta`] and the early-stopping monitor use.
pub fn f_beta(precision: f64, recall: f64, beta: f64) -> f64 {
    let b2 = beta * beta;
    let den = b2 * precision + recall;
    if den == 0.0 {
        0.0
    } else {
        (1.0 + b2) * precision * recall / den
    }
}

impl ConfusionCounts {
    /// Counts `probs > threshold` against `mask != 0`, element by element. Extra elements of
    /// the longer slice are ignored (callers pass equal lengths).
    pub fn from_probs_and_mask(probs: &[f32], mask: &[u8], threshold: f32) -> Self {
        let mut c = Self::default();
        for (&p, &m) in probs.iter().zip(mask) {
            match (p > threshold, m != 0) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, true) => c.fn_ += 1,
                (false, false) => c.tn += 1,
            }
        }
        c
    }

    /// Adds `other`'s counts to `self`.
    pub fn add(&mut self, other: &Self) {
        self.tp += other.tp;
        self.fp += other.fp;
        self.fn_ += other.fn_;
        self.tn += other.tn;
    }

    /// Number of pixels counted.
    pub fn total(&self) -> u64 {
        self.tp + self.fp + self.fn_ + self.tn
    }

    /// `tp / (tp + fn)`; 1.0 when there are no positives.
    pub fn recall(&self) -> f64 {
        ratio_or_one(self.tp, self.tp + self.fn_)
    }

    /// `tp / (tp + fp)`; 1.0 when nothing is predicted positive.
    pub fn precision(&self) -> f64 {
        ratio_or_one(self.tp, self.tp + self.fp)
    }

    /// `2·tp / (2·tp + fp + fn)`; 1.0 when prediction and truth are both empty.
    pub fn dice(&self) -> f64 {
        ratio_or_one(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }

    /// [`f_beta`] of this matrix's precision and recall, which equals
    /// `(1+β²)·tp / ((1+β²)·tp + β²·fn + fp)`; 1.0 when prediction and truth are both empty.
    pub fn f_beta(&self, beta: f64) -> f64 {
        f_beta(self.precision(), self.recall(), beta)
    }
}

/// Thresholded Dice of each slice: `probs` and `mask` are `n` slices of `slice_len` pixels
/// each, back to back. A slice with an empty mask and an empty prediction scores 1.0.
/// A `slice_len` of 0 gives an empty vector.
pub fn per_slice_dice(probs: &[f32], mask: &[u8], slice_len: usize, threshold: f32) -> Vec<f64> {
    if slice_len == 0 {
        return Vec::new();
    }
    probs
        .chunks(slice_len)
        .zip(mask.chunks(slice_len))
        .map(|(p, m)| ConfusionCounts::from_probs_and_mask(p, m, threshold).dice())
        .collect()
}

/// Scores of one validation pass; the input of early stopping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochScores {
    /// Pooled recall.
    pub recall: f64,
    /// Pooled precision.
    pub precision: f64,
    /// Pooled Dice (one confusion matrix over all pixels).
    pub dice: f64,
    /// Mean over slices of the per-slice Dice (empty-empty slices count 1.0).
    pub mean_slice_dice: f64,
    /// Mean loss per slice.
    pub loss: f64,
}

/// Pools a validation pass batch by batch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochAccumulator {
    /// Probability threshold (`p > threshold` is positive).
    pub threshold: f32,
    /// Pooled confusion matrix.
    pub counts: ConfusionCounts,
    slice_dice_sum: f64,
    slices: u64,
    loss_sum: f64,
}

impl EpochAccumulator {
    /// An empty accumulator for the given threshold (the notebook uses 0.35).
    pub fn new(threshold: f32) -> Self {
        Self {
            threshold,
            ..Self::default()
        }
    }

    /// Adds one batch: `probs`/`mask` hold its slices back to back, `slice_len` pixels each,
    /// and `batch_loss` is the batch's mean loss, weighted here by its number of slices.
    pub fn add_batch(&mut self, probs: &[f32], mask: &[u8], slice_len: usize, batch_loss: f64) {
        self.counts.add(&ConfusionCounts::from_probs_and_mask(
            probs,
            mask,
            self.threshold,
        ));
        let dices = per_slice_dice(probs, mask, slice_len, self.threshold);
        self.slice_dice_sum += dices.iter().sum::<f64>();
        self.slices += dices.len() as u64;
        self.loss_sum += batch_loss * dices.len() as f64;
    }

    /// Number of slices added so far.
    pub fn slices(&self) -> u64 {
        self.slices
    }

    /// The pass's scores. With no slices, `mean_slice_dice` is 1.0 and `loss` is 0.0.
    pub fn finish(&self) -> EpochScores {
        let (mean_slice_dice, loss) = if self.slices == 0 {
            (1.0, 0.0)
        } else {
            let n = self.slices as f64;
            (self.slice_dice_sum / n, self.loss_sum / n)
        };
        EpochScores {
            recall: self.counts.recall(),
            precision: self.counts.precision(),
            dice: self.counts.dice(),
            mean_slice_dice,
            loss,
        }
    }
}

#[cfg(test)]
impl EpochScores {
    /// Scores with the given pooled recall, precision and Dice (mean slice Dice = Dice, loss 0).
    pub(crate) fn of(recall: f64, precision: f64, dice: f64) -> Self {
        Self {
            recall,
            precision,
            dice,
            mean_slice_dice: dice,
            loss: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn counts_from_probs_threshold_is_strict() {
        // p:    0.9  0.35 0.36 0.1  0.8  0.2
        // mask: 1    1    0    0    0    1
        // pred: 1    0    1    0    1    0   (0.35 is not > 0.35)
        let c = ConfusionCounts::from_probs_and_mask(
            &[0.9, 0.35, 0.36, 0.1, 0.8, 0.2],
            &[1, 1, 0, 0, 0, 1],
            0.35,
        );
        assert_eq!(
            c,
            ConfusionCounts {
                tp: 1,
                fp: 2,
                fn_: 2,
                tn: 1
            }
        );
    }

    #[test]
    fn metrics_from_hand_built_matrix() {
        let c = ConfusionCounts {
            tp: 30,
            fp: 10,
            fn_: 20,
            tn: 940,
        };
        assert!(close(c.recall(), 30.0 / 50.0));
        assert!(close(c.precision(), 30.0 / 40.0));
        assert!(close(c.dice(), 60.0 / 90.0));
        assert!(close(c.f_beta(1.0), c.dice()));
        // F2 = 5·30 / (5·30 + 4·20 + 10) = 150 / 240; also 5PR/(4P+R) with P=.75, R=.6
        assert!(close(c.f_beta(2.0), 150.0 / 240.0));
        assert!(close(c.f_beta(2.0), 5.0 * 0.75 * 0.6 / (4.0 * 0.75 + 0.6)));
        assert_eq!(c.total(), 1000);
    }

    #[test]
    fn metrics_empty_cases() {
        let all_neg = ConfusionCounts {
            tn: 5,
            ..Default::default()
        };
        assert_eq!(
            (all_neg.recall(), all_neg.precision(), all_neg.dice()),
            (1.0, 1.0, 1.0)
        );
        assert_eq!(all_neg.f_beta(2.0), 1.0);
        let missed = ConfusionCounts {
            fn_: 3,
            tn: 5,
            ..Default::default()
        };
        assert_eq!(
            (missed.recall(), missed.precision(), missed.dice()),
            (0.0, 1.0, 0.0)
        );
        assert_eq!(missed.f_beta(2.0), 0.0);
        let false_alarm = ConfusionCounts {
            fp: 3,
            tn: 5,
            ..Default::default()
        };
        assert_eq!(
            (
                false_alarm.recall(),
                false_alarm.precision(),
                false_alarm.dice()
            ),
            (1.0, 0.0, 0.0)
        );
        assert_eq!(false_alarm.f_beta(2.0), 0.0);
        assert_eq!(ConfusionCounts::default().dice(), 1.0);
    }

    #[test]
    fn add_pools_counts() {
        let mut a = ConfusionCounts {
            tp: 1,
            fp: 2,
            fn_: 3,
            tn: 4,
        };
        a.add(&ConfusionCounts {
            tp: 10,
            fp: 20,
            fn_: 30,
            tn: 40,
        });
        assert_eq!(
            a,
            ConfusionCounts {
                tp: 11,
                fp: 22,
                fn_: 33,
                tn: 44
            }
        );
    }

    #[test]
    fn per_slice_dice_values() {
        // slice 0: pred [1,1,0,0], mask [1,0,0,0] → 2·1/(2+1+0) = 2/3
        // slice 1: empty/empty → 1
        // slice 2: pred [0,0,0,0], mask [0,1,0,0] → 0
        let probs = [0.9, 0.9, 0.1, 0.1, 0.0, 0.0, 0.0, 0.0, 0.1, 0.2, 0.3, 0.0];
        let mask = [1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0];
        let d = per_slice_dice(&probs, &mask, 4, 0.5);
        assert_eq!(d.len(), 3);
        assert!(close(d[0], 2.0 / 3.0) && close(d[1], 1.0) && close(d[2], 0.0));
        assert!(per_slice_dice(&probs, &mask, 0, 0.5).is_empty());
    }

    #[test]
    fn accumulator_pools_instead_of_averaging_batches() {
        let mut acc = EpochAccumulator::new(0.5);
        // batch 1 (2 slices of 4): tp 3, fn 1 → per-batch recall 0.75
        acc.add_batch(
            &[0.9, 0.9, 0.9, 0.1, 0.0, 0.0, 0.0, 0.0],
            &[1, 1, 1, 1, 0, 0, 0, 0],
            4,
            0.2,
        );
        // batch 2 (1 slice of 4): tp 0, fn 1 → per-batch recall 0.0
        acc.add_batch(&[0.0, 0.0, 0.0, 0.0], &[1, 0, 0, 0], 4, 0.8);
        let s = acc.finish();
        // pooled: tp 3, fn 2, fp 0 → recall 3/5, not (0.75 + 0)/2
        assert!(close(s.recall, 0.6));
        assert!(close(s.precision, 1.0));
        assert!(close(s.dice, 6.0 / 8.0));
        // slice Dice: [6/7, 1.0, 0.0] → mean 13/21
        assert!(close(s.mean_slice_dice, (6.0 / 7.0 + 1.0) / 3.0));
        // loss weighted by slices: (0.2·2 + 0.8·1) / 3
        assert!(close(s.loss, 0.4));
        assert_eq!(acc.slices(), 3);
        let empty = EpochAccumulator::new(0.5).finish();
        assert_eq!(
            (empty.recall, empty.mean_slice_dice, empty.loss),
            (1.0, 1.0, 0.0)
        );
    }
}
