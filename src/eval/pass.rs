//! The per-slice bookkeeping of one evaluation pass: each slice's probabilities are scored at the
//! eval threshold and across the sweep, then dropped; only counts, one table row per slice and
//! at most K overlay cases are kept.

use crate::error::Result;
use crate::eval::selection::{LowestRecall, OverlayCase};
use crate::infer::NativeSlice;
use crate::metrics::confusion::ratio_or_one;
use crate::metrics::confusion::ConfusionCounts;
use crate::metrics::lesions::{LesionStats, Truth};
use crate::metrics::sweep::Sweep;
use crate::overlay::{eval_overlay, overlay_name, save_png};
use crate::run::eval_tables::{nodule_of, PerSliceRow};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// One slice at native size, with its probabilities.
pub struct ScoredSlice<'a> {
    /// `patient/nodule/stem`.
    pub slice_id: &'a str,
    /// Patient folder name.
    pub patient_id: &'a str,
    /// Native height.
    pub height: usize,
    /// Native width.
    pub width: usize,
    /// Intensities (for overlays).
    pub image: &'a [f32],
    /// Truth mask (0/1).
    pub mask: &'a [u8],
    /// Probabilities.
    pub probs: &'a [f32],
}

impl<'a> From<&'a NativeSlice<'a>> for ScoredSlice<'a> {
    fn from(s: &'a NativeSlice<'a>) -> Self {
        Self {
            slice_id: s.slice_id,
            patient_id: s.patient_id,
            height: s.height,
            width: s.width,
            image: &s.image,
            mask: &s.mask,
            probs: &s.probs,
        }
    }
}

/// The per-slice metrics at one threshold: the table row and the thresholded prediction.
pub fn score_slice(s: &ScoredSlice, truth: &Truth, threshold: f32) -> (PerSliceRow, Vec<bool>) {
    let pred: Vec<bool> = s.probs.iter().map(|&p| p > threshold).collect();
    let c = ConfusionCounts::from_probs_and_mask(s.probs, s.mask, threshold);
    let l = truth.compare(&pred);
    let row = PerSliceRow {
        slice_id: s.slice_id.to_string(),
        patient_id: s.patient_id.to_string(),
        nodule_id: nodule_of(s.slice_id).to_string(),
        tp: c.tp as i64,
        fp: c.fp as i64,
        fn_: c.fn_ as i64,
        tn: c.tn as i64,
        dice: c.dice(),
        recall: c.recall(),
        lesions: l.lesions as i64,
        lesions_detected: l.detected as i64,
        fp_components: l.fp_components as i64,
    };
    (row, pred)
}

/// Running totals of an evaluation pass.
pub struct Pass {
    threshold: f32,
    overlays_dir: PathBuf,
    /// Pooled pixel counts at the eval threshold.
    pub counts: ConfusionCounts,
    /// Pooled lesion statistics at the eval threshold.
    pub lesions: LesionStats,
    /// One row per slice.
    pub rows: Vec<PerSliceRow>,
    /// The threshold sweep.
    pub sweep: Sweep,
    /// (patient, nodule) of every nodule with truth → detected on some slice.
    pub nodules: BTreeMap<(String, String), bool>,
    dice_sum: f64,
    slices_with_truth: u64,
    lowest: LowestRecall,
    sample: BTreeSet<usize>,
    written: BTreeSet<String>,
}

impl Pass {
    /// A pass at `threshold` that writes overlays under `overlays_dir`: the `k` lowest-recall
    /// slices and the slices at positions `sample`.
    pub fn new(threshold: f64, overlays_dir: PathBuf, k: usize, sample: BTreeSet<usize>) -> Self {
        Self {
            threshold: threshold as f32,
            overlays_dir,
            counts: ConfusionCounts::default(),
            lesions: LesionStats::default(),
            rows: Vec::new(),
            sweep: Sweep::new(),
            nodules: BTreeMap::new(),
            dice_sum: 0.0,
            slices_with_truth: 0,
            lowest: LowestRecall::new(k),
            sample,
            written: BTreeSet::new(),
        }
    }

    /// The eval threshold.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Adds the slice at `position` of the index.
    pub fn add(&mut self, position: usize, s: &ScoredSlice) -> Result<()> {
        let truth = Truth::new(s.mask, s.height, s.width);
        let (row, pred) = score_slice(s, &truth, self.threshold);
        self.sweep.add(s.probs, s.mask, &truth);
        self.counts.add(&ConfusionCounts {
            tp: row.tp as u64,
            fp: row.fp as u64,
            fn_: row.fn_ as u64,
            tn: row.tn as u64,
        });
        self.lesions.add(&LesionStats {
            lesions: row.lesions as u64,
            detected: row.lesions_detected as u64,
            fp_components: row.fp_components as u64,
        });
        self.dice_sum += row.dice;
        if !truth.is_empty() {
            self.slices_with_truth += 1;
            let found = self
                .nodules
                .entry((row.patient_id.clone(), row.nodule_id.clone()))
                .or_insert(false);
            *found |= row.lesions_detected > 0;
        }
        let sampled = self.sample.contains(&position);
        let low = !truth.is_empty() && self.lowest.wants(position, row.recall);
        if sampled || low {
            let case = OverlayCase {
                slice_id: row.slice_id.clone(),
                height: s.height,
                width: s.width,
                image: s.image.to_vec(),
                truth: s.mask.to_vec(),
                pred,
                recall: row.recall,
                dice: row.dice,
            };
            if sampled {
                self.write_overlay(&case)?;
            }
            if low {
                self.lowest.offer(position, case);
            }
        }
        self.rows.push(row);
        Ok(())
    }

    fn write_overlay(&mut self, c: &OverlayCase) -> Result<()> {
        let name = overlay_name(&c.slice_id, c.dice);
        if self.written.contains(&name) {
            return Ok(());
        }
        let img = eval_overlay(&c.image, &c.truth, &c.pred, c.height, c.width);
        save_png(
            image::DynamicImage::ImageRgb8(img),
            &self.overlays_dir.join(&name),
        )?;
        self.written.insert(name);
        Ok(())
    }

    /// Writes the lowest-recall overlays; returns every overlay file name, sorted.
    pub fn finish_overlays(&mut self) -> Result<Vec<String>> {
        let lowest = std::mem::replace(&mut self.lowest, LowestRecall::new(0));
        for case in lowest.into_sorted() {
            self.write_overlay(&case)?;
        }
        Ok(self.written.iter().cloned().collect())
    }

    /// Slices added.
    pub fn slices(&self) -> u64 {
        self.rows.len() as u64
    }

    /// Slices with any truth pixel.
    pub fn slices_with_truth(&self) -> u64 {
        self.slices_with_truth
    }

    /// Mean per-slice Dice (1.0 with no slices).
    pub fn mean_slice_dice(&self) -> f64 {
        if self.rows.is_empty() {
            1.0
        } else {
            self.dice_sum / self.rows.len() as f64
        }
    }

    /// Nodule recall per size band, for the nodules `bands` names ((patient, nodule) → band), in
    /// band order; bands without an evaluated nodule are left out.
    pub fn nodule_recall_by_size(
        &self,
        bands: &std::collections::BTreeMap<(String, String), String>,
    ) -> Vec<crate::run::eval_summary::SizeBandRecall> {
        crate::data::nodule_table::SIZE_BANDS
            .iter()
            .filter_map(|&band| {
                let in_band: Vec<bool> = self
                    .nodules
                    .iter()
                    .filter(|(key, _)| bands.get(*key).is_some_and(|b| b == band))
                    .map(|(_, &d)| d)
                    .collect();
                let nodules = in_band.len() as u64;
                let detected = in_band.iter().filter(|&&d| d).count() as u64;
                (nodules > 0).then(|| crate::run::eval_summary::SizeBandRecall {
                    band: band.to_string(),
                    nodules,
                    detected,
                    recall: ratio_or_one(detected, nodules),
                })
            })
            .collect()
    }

    /// (nodules, detected, recall).
    pub fn nodule_recall(&self) -> (u64, u64, f64) {
        let total = self.nodules.len() as u64;
        let found = self.nodules.values().filter(|&&d| d).count() as u64;
        (total, found, ratio_or_one(found, total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice<'a>(
        id: &'a str,
        mask: &'a [u8],
        probs: &'a [f32],
        image: &'a [f32],
    ) -> ScoredSlice<'a> {
        ScoredSlice {
            slice_id: id,
            patient_id: "p",
            height: 1,
            width: mask.len(),
            image,
            mask,
            probs,
        }
    }

    #[test]
    fn nodule_recall_splits_by_size_band() {
        let dir = tempfile::tempdir().unwrap();
        let mut pass = Pass::new(0.5, dir.path().to_path_buf(), 0, BTreeSet::new());
        let img = [0.5; 2];
        pass.add(0, &slice("p/small/a", &[1, 0], &[0.9, 0.0], &img))
            .unwrap();
        pass.add(1, &slice("p/big/a", &[1, 0], &[0.0, 0.0], &img))
            .unwrap();
        pass.add(2, &slice("p/big2/a", &[1, 0], &[0.9, 0.0], &img))
            .unwrap();
        let bands = std::collections::BTreeMap::from([
            (("p".to_string(), "small".to_string()), "<6mm".to_string()),
            (("p".to_string(), "big".to_string()), ">10mm".to_string()),
            (("p".to_string(), "big2".to_string()), ">10mm".to_string()),
        ]);
        let by = pass.nodule_recall_by_size(&bands);
        let got: Vec<_> = by
            .iter()
            .map(|b| (b.band.as_str(), b.nodules, b.detected))
            .collect();
        assert_eq!(got, [("<6mm", 1, 1), (">10mm", 2, 1)]);
        assert_eq!(by[1].recall, 0.5);
        assert!(pass.nodule_recall_by_size(&Default::default()).is_empty());
    }

    #[test]
    fn per_slice_rows_pool_and_nodules_count_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut pass = Pass::new(0.5, dir.path().to_path_buf(), 1, BTreeSet::from([2]));
        let img = [0.5; 5];
        // n1, slice a: lesion found (tp 1, fn 1), one fp component at the far end.
        pass.add(
            0,
            &slice("p/n1/a", &[1, 1, 0, 0, 0], &[0.9, 0.1, 0.0, 0.0, 0.8], &img),
        )
        .unwrap();
        // n1, slice b: lesion missed.
        pass.add(1, &slice("p/n1/b", &[0, 1, 1, 0, 0], &[0.0; 5], &img))
            .unwrap();
        // n2: empty truth, empty prediction → Dice 1, no nodule.
        pass.add(2, &slice("p/n2/c", &[0; 5], &[0.0; 5], &img))
            .unwrap();
        // n3: missed on its only slice.
        pass.add(3, &slice("p/n3/d", &[0, 0, 0, 0, 1], &[0.0; 5], &img))
            .unwrap();
        assert_eq!(pass.slices(), 4);
        assert_eq!(pass.slices_with_truth(), 3);
        assert_eq!(
            pass.counts,
            ConfusionCounts {
                tp: 1,
                fp: 1,
                fn_: 4,
                tn: 14
            }
        );
        let tp: i64 = pass.rows.iter().map(|r| r.tp).sum();
        assert_eq!(tp, 1);
        assert_eq!(
            pass.lesions,
            LesionStats {
                lesions: 3,
                detected: 1,
                fp_components: 1
            }
        );
        // Dice: a = 2/(2+1+1) = 0.5, b = 0, c = 1, d = 0 → mean 0.375.
        assert!((pass.mean_slice_dice() - 0.375).abs() < 1e-12);
        assert_eq!(pass.nodule_recall(), (2, 1, 0.5));
        let names = pass.finish_overlays().unwrap();
        // The sampled slice c and the lowest-recall slice (b: recall 0, earliest of b and d).
        assert_eq!(
            names,
            vec!["p__n1__b_dice-0.000.png", "p__n2__c_dice-1.000.png"]
        );
        for n in &names {
            assert!(dir.path().join(n).is_file());
        }
    }
}
