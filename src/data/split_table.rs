//! `split.parquet` (one row per patient: side and fold) and the train/validation slice indexes a
//! pass reads, for the split's own sides or for one cross-validation fold.

use crate::data::index::{IndexEntry, SliceIndex};
use crate::error::{Error, Result};
use crate::layout::DataDir;
use crate::schema::Table;
use crate::table::{column, read_table, write_table};
use arrow_array::{Array, ArrayRef, Int32Array, Int64Array, StringArray};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;

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

/// Writes `split.parquet`.
pub fn write_split_table(data: &DataDir, patients: &[PatientSplit]) -> Result<u64> {
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
    write_table(&data.split_table(), Table::Split.spec(), columns)
}

/// The train and validation indexes for the config (split tables, or folds).
pub fn train_val_indexes(data: &DataDir, fold: Option<u32>) -> Result<(SliceIndex, SliceIndex)> {
    if crate::data::split_record::read(data)?.is_none() {
        return Err(Error::input(
            data.root(),
            "no split (split.json missing); run `lungseg split` first",
        ));
    }
    let train = SliceIndex::read(&data.train_index())?;
    let val = SliceIndex::read(&data.val_index())?;
    let Some(k) = fold else {
        return Ok((train, val));
    };
    let path = data.split_table();
    let mut val_patients = HashSet::new();
    let mut any_fold = false;
    for b in read_table(&path, &Table::Split.spec())? {
        let ids = column::<StringArray>(&b, "patient_id", &path)?;
        let folds = column::<Int32Array>(&b, "fold", &path)?;
        for i in 0..b.num_rows() {
            if folds.is_valid(i) {
                any_fold = true;
                if folds.value(i) == k as i32 {
                    val_patients.insert(ids.value(i).to_string());
                }
            }
        }
    }
    if !any_fold {
        return Err(Error::Usage(format!(
            "--fold {k}: the split has no folds; run `lungseg split --folds K --overwrite`"
        )));
    }
    if val_patients.is_empty() {
        return Err(Error::Usage(format!(
            "--fold {k}: no patient is in fold {k}"
        )));
    }
    let (v, t): (Vec<IndexEntry>, Vec<IndexEntry>) = train
        .into_entries()
        .into_iter()
        .chain(val.into_entries())
        .partition(|e| val_patients.contains(&e.patient_id));
    Ok((SliceIndex::from_entries(t), SliceIndex::from_entries(v)))
}
