//! The `split` stage: a deterministic patient-level train/val split (and optional folds) written
//! as `split.parquet`, `train.parquet` and `val.parquet`, so no patient leaks across splits.

pub mod assign;

use crate::atomic::remove_if_exists;
use crate::data::{write_index, IndexEntry};
use crate::error::{Error, Result};
use crate::json::write_json_atomic;
use crate::layout::DataDir;
use crate::natural::natural_cmp;
use crate::schema;
use crate::table::{column, read_table, write_table};
use arrow_array::{ArrayRef, Int32Array, Int64Array, StringArray};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

/// The stage settings (`pipeline/split.toml`, overridable by flags).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSettings {
    /// Target fraction of patients in validation, in [0, 1).
    pub val_ratio: f64,
    /// Seed of the patient hash.
    pub seed: u64,
    /// Number of folds (0 = none).
    pub folds: u32,
}

impl SplitSettings {
    /// Checks value ranges before any work starts.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.val_ratio) {
            return Err(Error::Usage(format!(
                "--val-ratio must be in [0, 1), got {}",
                self.val_ratio
            )));
        }
        if self.folds == 1 {
            return Err(Error::Usage(
                "--folds must be 0 (none) or at least 2".into(),
            ));
        }
        Ok(())
    }
}

/// A resolved `split` invocation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SplitConfig {
    /// The prepared data directory.
    pub data: PathBuf,
    /// Rewrite even when a split with these settings exists.
    pub overwrite: bool,
    /// Stage settings.
    pub settings: SplitSettings,
}

/// One patient's assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientSplit {
    /// Patient folder name.
    pub patient_id: String,
    /// In validation?
    pub val: bool,
    /// Fold, when folds are assigned.
    pub fold: Option<u32>,
    /// Slices of the patient.
    pub slices: i64,
    /// Union-mask pixels of the patient.
    pub mask_pixels: i64,
}

/// Achieved sizes and ratios; saved in `split.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitCounts {
    /// Patients in train.
    pub train_patients: usize,
    /// Patients in validation.
    pub val_patients: usize,
    /// Slices in train.
    pub train_slices: usize,
    /// Slices in validation.
    pub val_slices: usize,
    /// val_patients / patients.
    pub patient_ratio: f64,
    /// val_slices / slices.
    pub slice_ratio: f64,
}

/// What `split.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SplitRecord {
    /// lungseg version.
    pub version: String,
    /// The resolved config.
    pub config: SplitConfig,
    /// The hash rule, spelled out.
    pub rule: String,
    /// Achieved counts.
    pub counts: SplitCounts,
}

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

/// The rule recorded in `split.json`.
pub const RULE: &str = "val iff mix64(fnv1a64(\"<seed>:<patient_id>\")) / 2^64 < val_ratio (if that leaves a side empty, the patient with the lowest hash joins val); fold = mix64(fnv1a64(\"<seed>:<patient_id>\") ^ 0x5851F42D4C957F2D) mod folds (mix64 = SplitMix64 finaliser)";

/// One manifest row, as the split needs it: the index entry it becomes, plus its mask pixels.
#[derive(Debug, Clone)]
struct IndexRow {
    entry: IndexEntry,
    mask_pixels: i64,
}

impl std::ops::Deref for IndexRow {
    type Target = IndexEntry;

    fn deref(&self) -> &IndexEntry {
        &self.entry
    }
}

fn read_manifest(data: &DataDir) -> Result<Vec<IndexRow>> {
    if crate::prepare::read_record(data)?.is_none() {
        return Err(Error::input(
            data.root(),
            "not a complete prepared data directory (no prepare.json); run `lungseg prepare` first",
        ));
    }
    let path = data.manifest();
    let mut rows = Vec::new();
    for batch in read_table(&path, &schema::spec("manifest"))? {
        let ids = column::<StringArray>(&batch, "slice_id", &path)?;
        let shards = column::<StringArray>(&batch, "shard", &path)?;
        let rws = column::<Int64Array>(&batch, "row", &path)?;
        let patients = column::<StringArray>(&batch, "patient_id", &path)?;
        let pixels = column::<Int64Array>(&batch, "mask_pixels", &path)?;
        for i in 0..batch.num_rows() {
            rows.push(IndexRow {
                entry: IndexEntry {
                    slice_id: ids.value(i).to_string(),
                    shard: shards.value(i).to_string(),
                    row: rws.value(i),
                    patient_id: patients.value(i).to_string(),
                },
                mask_pixels: pixels.value(i),
            });
        }
    }
    Ok(rows)
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
    if patients.len() < 2 || s.val_ratio <= 0.0 {
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
    let rows = read_manifest(&data)?;
    if let Some(previous) = read_record(&data)? {
        if !cfg.overwrite && previous.config.settings == *s {
            return Ok(SplitReport {
                skipped: true,
                counts: previous.counts,
                target: s.val_ratio,
            });
        }
    }
    let mut per_patient: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for r in &rows {
        let e = per_patient.entry(&r.patient_id).or_default();
        e.0 += 1;
        e.1 += r.mask_pixels;
    }
    match per_patient.len() {
        0 => {
            return Err(Error::input(
                data.manifest(),
                "manifest has no slices, so there are no patients to split",
            ))
        }
        1 if s.val_ratio > 0.0 => {
            return Err(Error::input(
                data.manifest(),
                "manifest has a single patient; a patient-level split needs at least two (or pass --val-ratio 0 to train on it without validation)",
            ))
        }
        _ => {}
    }
    let patients = assign_patients(per_patient.iter().map(|(p, (n, m))| (*p, *n, *m)), s);
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
        },
    )?;
    Ok(SplitReport {
        skipped: false,
        counts,
        target: s.val_ratio,
    })
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

/// Reads `split.json` if a split exists.
pub fn read_record(data: &DataDir) -> Result<Option<SplitRecord>> {
    crate::json::read_json(&data.split_record())
}

fn write_split_table(data: &DataDir, patients: &[PatientSplit]) -> Result<u64> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            patients.iter().map(|p| &p.patient_id),
        )),
        Arc::new(StringArray::from_iter_values(patients.iter().map(|p| {
            if p.val {
                "val"
            } else {
                "train"
            }
        }))),
        Arc::new(Int32Array::from(
            patients
                .iter()
                .map(|p| p.fold.map(|f| f as i32))
                .collect::<Vec<_>>(),
        )),
        Arc::new(Int64Array::from_iter_values(
            patients.iter().map(|p| p.slices),
        )),
        Arc::new(Int64Array::from_iter_values(
            patients.iter().map(|p| p.mask_pixels),
        )),
    ];
    write_table(&data.split_table(), schema::spec("split"), columns)
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
