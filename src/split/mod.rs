//! The `split` stage: a deterministic patient-level train/val split (and optional folds) written
//! as `split.parquet`, `train.parquet` and `val.parquet`, so no patient leaks across splits.

pub mod assign;

use crate::atomic::remove_if_exists;
use crate::data::manifest::{read_index_rows, IndexRow};
use crate::data::split_record::{self, SplitConfig, SplitCounts, SplitRecord, SplitSettings, RULE};
use crate::data::split_table::{write_split_table, PatientSplit};
use crate::data::{write_index, IndexEntry};
use crate::error::{Error, Result};
use crate::fingerprint::fingerprint;
use crate::json::write_json_atomic;
use crate::layout::DataDir;
use crate::lock::DirLock;
use crate::natural::natural_cmp;
use std::collections::{BTreeMap, HashSet};

/// The outcome of `run`.
#[derive(Debug, Clone)]
pub struct SplitReport {
    /// Nothing was done: an identical split exists.
    pub skipped: bool,
    /// Achieved counts.
    pub counts: SplitCounts,
    /// Target ratio, for the warning.
    pub target: f64,
}

impl SplitReport {
    /// Whether the achieved slice ratio is more than 5 points off target.
    pub fn ratio_warning(&self) -> Option<String> {
        let off = (self.counts.slice_ratio - self.target).abs();
        (off > 0.05).then(|| {
            format!(
                "val slice ratio {:.3} is {:.1} points off the target {:.2} (few patients, or patients of very different sizes)",
                self.counts.slice_ratio,
                off * 100.0,
                self.target
            )
        })
    }

    /// The one-line summary.
    pub fn summary(&self) -> String {
        let c = &self.counts;
        format!(
            "split{}: train {} patients / {} slices, val {} patients / {} slices; val ratio {:.3} of patients, {:.3} of slices (target {:.2})",
            if self.skipped { " (already done; use --overwrite to redo)" } else { "" },
            c.train_patients,
            c.train_slices,
            c.val_patients,
            c.val_slices,
            c.patient_ratio,
            c.slice_ratio,
            self.target
        )
    }
}

/// Assigns every patient of the manifest. Pure: the same rows and settings give the same answer.
pub fn assign_patients<'a>(
    patients: impl IntoIterator<Item = (&'a str, i64, i64)>,
    s: &SplitSettings,
) -> Vec<PatientSplit> {
    let mut out: Vec<PatientSplit> = patients
        .into_iter()
        .map(|(id, slices, mask_pixels)| PatientSplit {
            patient_id: id.to_string(),
            val: assign::is_val(id, s.seed, s.val_ratio),
            fold: (s.folds >= 2).then(|| assign::fold_of(id, s.seed, s.folds)),
            slices,
            mask_pixels,
        })
        .collect();
    out.sort_by(|a, b| natural_cmp(&a.patient_id, &b.patient_id));
    ensure_both_sides(&mut out, s);
    out
}

/// With few patients the hash can leave a side empty. Then the patient whose hash lies closest
/// to the ratio crosses over (lowest hash into validation, or highest into training), so every
/// split with at least two patients has both sides. The stability guarantee holds for every
/// split where the hash alone fills both sides.
fn ensure_both_sides(patients: &mut [PatientSplit], s: &SplitSettings) {
    if patients.len() < 2 {
        return;
    }
    let unit = |p: &PatientSplit| assign::patient_unit(&p.patient_id, s.seed);
    let total = patients.len();
    let pick = |want_val: bool, patients: &mut [PatientSplit]| {
        let chosen = patients.iter_mut().min_by(|a, b| {
            let (ua, ub) = (unit(a), unit(b));
            if want_val {
                ua.total_cmp(&ub)
            } else {
                ub.total_cmp(&ua)
            }
        });
        if let Some(p) = chosen {
            tracing::warn!(
                "patient {} moved to {} so that neither split is empty ({} patients)",
                p.patient_id,
                if want_val { "val" } else { "train" },
                total
            );
            p.val = want_val;
        }
    };
    if !patients.iter().any(|p| p.val) {
        pick(true, patients);
    } else if patients.iter().all(|p| p.val) {
        pick(false, patients);
    }
}

/// Runs the stage.
pub fn run(cfg: &SplitConfig) -> Result<SplitReport> {
    let s = &cfg.settings;
    s.validate()?;
    let data = DataDir::new(&cfg.data);
    crate::data::prepare_record::require(&data)?;
    let _lock = DirLock::acquire(data.root(), "split --data")?;
    let rows = read_index_rows(&data.manifest())?;
    let manifest_fingerprint = fingerprint(&data.manifest())?;
    if let Some(previous) = split_record::read(&data)? {
        let outputs_there = data.split_outputs().iter().all(|p| p.exists());
        let same_input = previous.manifest_fingerprint.as_deref() == Some(&manifest_fingerprint);
        if !cfg.overwrite && previous.config.settings == *s && same_input && outputs_there {
            return Ok(SplitReport {
                skipped: true,
                counts: previous.counts,
                target: s.val_ratio,
            });
        }
    }
    let per_patient = patient_totals(&rows, &data)?;
    let patients = assign_patients(per_patient.iter().map(|(p, (n, m))| (*p, *n, *m)), s);
    ensure_every_fold_used(&patients, s, &data)?;
    let val_set: HashSet<&str> = patients
        .iter()
        .filter(|p| p.val)
        .map(|p| p.patient_id.as_str())
        .collect();
    let (val_rows, train_rows): (Vec<&IndexRow>, Vec<&IndexRow>) = rows
        .iter()
        .partition(|r| val_set.contains(r.patient_id.as_str()));
    ensure_disjoint(&train_rows, &val_rows, &data)?;
    let counts = SplitCounts {
        train_patients: patients.len() - val_set.len(),
        val_patients: val_set.len(),
        train_slices: train_rows.len(),
        val_slices: val_rows.len(),
        patient_ratio: val_set.len() as f64 / patients.len() as f64,
        slice_ratio: val_rows.len() as f64 / rows.len() as f64,
    };
    remove_if_exists(&data.split_record())?;
    write_split_table(&data, &patients)?;
    write_rows(&data.train_index(), &train_rows)?;
    write_rows(&data.val_index(), &val_rows)?;
    write_json_atomic(
        &data.split_record(),
        &SplitRecord {
            version: env!("CARGO_PKG_VERSION").to_string(),
            config: cfg.clone(),
            rule: RULE.to_string(),
            counts: counts.clone(),
            manifest_fingerprint: Some(manifest_fingerprint),
        },
    )?;
    Ok(SplitReport {
        skipped: false,
        counts,
        target: s.val_ratio,
    })
}

/// Slices and mask pixels per patient; an error when there is nobody to split.
fn patient_totals<'a>(
    rows: &'a [IndexRow],
    data: &DataDir,
) -> Result<BTreeMap<&'a str, (i64, i64)>> {
    let mut per_patient: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for r in rows {
        let e = per_patient.entry(&r.patient_id).or_default();
        e.0 += 1;
        e.1 += r.mask_pixels;
    }
    match per_patient.len() {
        0 => Err(Error::input(
            data.manifest(),
            "manifest has no slices, so there are no patients to split",
        )),
        1 => Err(Error::input(
            data.manifest(),
            "manifest has a single patient; a patient-level split needs at least two",
        )),
        _ => Ok(per_patient),
    }
}

/// Refuses folds that leave one empty (more folds than the patients fill).
fn ensure_every_fold_used(
    patients: &[PatientSplit],
    s: &SplitSettings,
    data: &DataDir,
) -> Result<()> {
    if s.folds < 2 {
        return Ok(());
    }
    let used: HashSet<u32> = patients.iter().filter_map(|p| p.fold).collect();
    match (0..s.folds).find(|k| !used.contains(k)) {
        Some(k) => Err(Error::input(
            data.manifest(),
            format!(
                "--folds {} leaves fold {k} without patients ({} patients); use fewer folds",
                s.folds,
                patients.len()
            ),
        )),
        None => Ok(()),
    }
}

/// Refuses a split in which a patient appears on both sides.
fn ensure_disjoint(train: &[&IndexRow], val: &[&IndexRow], data: &DataDir) -> Result<()> {
    let train_patients: HashSet<&str> = train.iter().map(|r| r.patient_id.as_str()).collect();
    if let Some(leak) = val
        .iter()
        .find(|r| train_patients.contains(r.patient_id.as_str()))
    {
        return Err(Error::input(
            data.manifest(),
            format!(
                "patient {} would be in both train and val; refusing to write a leaking split",
                leak.patient_id
            ),
        ));
    }
    Ok(())
}

fn write_rows(path: &std::path::Path, rows: &[&IndexRow]) -> Result<u64> {
    let entries: Vec<&IndexEntry> = rows.iter().map(|r| &r.entry).collect();
    write_index(path, &entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(folds: u32) -> SplitSettings {
        SplitSettings {
            val_ratio: 0.2,
            seed: 42,
            folds,
        }
    }

    #[test]
    fn adding_patients_never_moves_existing_ones() {
        let ids: Vec<String> = (0..120).map(|i| format!("LIDC-IDRI-{i:04}")).collect();
        let small = assign_patients(ids[..80].iter().map(|p| (p.as_str(), 1, 0)), &settings(5));
        let large = assign_patients(ids.iter().map(|p| (p.as_str(), 1, 0)), &settings(5));
        for p in &small {
            let q = large.iter().find(|q| q.patient_id == p.patient_id).unwrap();
            assert_eq!((p.val, p.fold), (q.val, q.fold), "{}", p.patient_id);
        }
    }

    #[test]
    fn every_patient_has_exactly_one_fold_and_all_folds_are_used() {
        let ids: Vec<String> = (0..100).map(|i| format!("P{i}")).collect();
        let out = assign_patients(ids.iter().map(|p| (p.as_str(), 1, 0)), &settings(5));
        let mut used = [0usize; 5];
        for p in &out {
            used[p.fold.unwrap() as usize] += 1;
        }
        assert!(used.iter().all(|&n| n > 0), "{used:?}");
        assert_eq!(used.iter().sum::<usize>(), 100);
        let none = assign_patients(ids.iter().map(|p| (p.as_str(), 1, 0)), &settings(0));
        assert!(none.iter().all(|p| p.fold.is_none()));
    }

    #[test]
    fn few_patients_always_fill_both_sides() {
        let ids = ["A", "B", "C"];
        for seed in 0..200 {
            let s = SplitSettings {
                seed,
                ..settings(0)
            };
            let out = assign_patients(ids.iter().map(|p| (*p, 1, 0)), &s);
            let val = out.iter().filter(|p| p.val).count();
            assert!((1..=2).contains(&val), "seed {seed}: {val} in val");
        }
    }

    #[test]
    fn settings_are_validated() {
        let mut s = settings(0);
        s.val_ratio = 1.0;
        assert_eq!(s.validate().unwrap_err().exit_code(), 2);
        let s = SplitSettings {
            folds: 1,
            ..settings(0)
        };
        assert!(s.validate().is_err());
    }
}
