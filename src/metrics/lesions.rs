//! Lesion-level statistics of one slice: each 8-connected component of the ground truth is a
//! lesion, detected when any predicted pixel overlaps it; each 8-connected predicted component
//! that overlaps no truth pixel is a false-positive component.

use crate::metrics::components::{label8, Components};

/// Lesion counts of one slice at one threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LesionStats {
    /// Connected components of the ground truth.
    pub lesions: u64,
    /// Those overlapped by at least one predicted pixel.
    pub detected: u64,
    /// Predicted components that overlap no truth pixel.
    pub fp_components: u64,
}

impl LesionStats {
    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &Self) {
        self.lesions += other.lesions;
        self.detected += other.detected;
        self.fp_components += other.fp_components;
    }
}

/// A slice's ground truth, labelled once and compared with many predictions.
#[derive(Debug, Clone)]
pub struct Truth {
    height: usize,
    width: usize,
    components: Components,
}

impl Truth {
    /// Labels `mask` (0 = background; `height * width`, row-major).
    pub fn new(mask: &[u8], height: usize, width: usize) -> Self {
        let fg: Vec<bool> = mask.iter().map(|&m| m != 0).collect();
        Self {
            height,
            width,
            components: label8(&fg, height, width),
        }
    }

    /// Number of lesions.
    pub fn lesions(&self) -> usize {
        self.components.count
    }

    /// Whether the slice has any truth pixel.
    pub fn is_empty(&self) -> bool {
        self.components.count == 0
    }

    /// Per lesion (index = label − 1): whether `pred` overlaps it.
    pub fn detected(&self, pred: &[bool]) -> Vec<bool> {
        let mut hit = vec![false; self.components.count];
        for (&l, &p) in self.components.labels.iter().zip(pred) {
            if p && l != 0 {
                hit[l as usize - 1] = true;
            }
        }
        hit
    }

    /// The slice's lesion statistics for the predicted plane `pred`.
    ///
    /// # Panics
    /// When `pred` is not the truth's size.
    pub fn compare(&self, pred: &[bool]) -> LesionStats {
        assert_eq!(pred.len(), self.components.labels.len(), "prediction size");
        let detected = self.detected(pred).iter().filter(|&&d| d).count() as u64;
        let predicted = label8(pred, self.height, self.width);
        let mut touches = vec![false; predicted.count];
        for (&pl, &tl) in predicted.labels.iter().zip(&self.components.labels) {
            if pl != 0 && tl != 0 {
                touches[pl as usize - 1] = true;
            }
        }
        LesionStats {
            lesions: self.components.count as u64,
            detected,
            fp_components: touches.iter().filter(|&&t| !t).count() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(rows: &[&str], on: char) -> Vec<bool> {
        rows.iter()
            .flat_map(|r| r.chars().map(move |c| c == on || c == '*'))
            .collect()
    }

    /// `t` truth only, `p` prediction only, `*` both, `.` neither.
    fn case(rows: &[&str]) -> (Truth, Vec<bool>) {
        let (h, w) = (rows.len(), rows[0].len());
        let truth: Vec<u8> = parse(rows, 't').into_iter().map(u8::from).collect();
        (Truth::new(&truth, h, w), parse(rows, 'p'))
    }

    #[test]
    fn two_lesions_one_missed_and_an_fp_blob() {
        let (t, p) = case(&[
            "tt....tt", //
            "t*....tt", //
            "........", //
            "...pp...", //
            "...p....", //
        ]);
        let s = t.compare(&p);
        assert_eq!(
            s,
            LesionStats {
                lesions: 2,
                detected: 1,
                fp_components: 1
            }
        );
        assert_eq!(t.detected(&p), vec![true, false]);
    }

    #[test]
    fn empty_truth_counts_only_false_positive_components() {
        let (t, p) = case(&["p..p", "....", "pp.."]);
        assert!(t.is_empty());
        assert_eq!(
            t.compare(&p),
            LesionStats {
                lesions: 0,
                detected: 0,
                fp_components: 3
            }
        );
    }

    #[test]
    fn empty_prediction_detects_nothing() {
        let (t, p) = case(&["tt..", "....", "..t."]);
        assert_eq!(
            t.compare(&p),
            LesionStats {
                lesions: 2,
                detected: 0,
                fp_components: 0
            }
        );
    }

    #[test]
    fn a_prediction_spilling_over_a_lesion_is_no_false_positive() {
        // One predicted component that covers a lesion and extends beyond it, diagonally.
        let (t, p) = case(&["*p..", "..p.", "...p"]);
        assert_eq!(
            t.compare(&p),
            LesionStats {
                lesions: 1,
                detected: 1,
                fp_components: 0
            }
        );
    }

    #[test]
    fn stats_add_up() {
        let mut a = LesionStats {
            lesions: 1,
            detected: 1,
            fp_components: 2,
        };
        a.add(&LesionStats {
            lesions: 3,
            detected: 0,
            fp_components: 1,
        });
        assert_eq!((a.lesions, a.detected, a.fp_components), (4, 1, 3));
    }
}
