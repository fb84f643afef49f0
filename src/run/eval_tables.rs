//! Writes and reads the eval tables `per_slice.parquet` and `thresholds.parquet` against their
//! contracts.

use crate::error::Result;
use crate::metrics::sweep::SweepRow;
use crate::schema::Table;
use crate::slice_id::SliceId;
use crate::table::{column, read_table, write_table};
use arrow_array::{ArrayRef, Float64Array, Int64Array, StringArray};
use std::path::Path;
use std::sync::Arc;

/// One row of `per_slice.parquet`.
#[derive(Debug, Clone, PartialEq)]
pub struct PerSliceRow {
    /// `patient/nodule/stem`.
    pub slice_id: String,
    /// Patient folder name.
    pub patient_id: String,
    /// Nodule folder name.
    pub nodule_id: String,
    /// True-positive pixels.
    pub tp: i64,
    /// False-positive pixels.
    pub fp: i64,
    /// False-negative pixels.
    pub fn_: i64,
    /// True-negative pixels.
    pub tn: i64,
    /// Slice Dice.
    pub dice: f64,
    /// Slice recall.
    pub recall: f64,
    /// Truth components.
    pub lesions: i64,
    /// Truth components overlapped by the prediction.
    pub lesions_detected: i64,
    /// Predicted components overlapping no truth.
    pub fp_components: i64,
}

/// The nodule folder of a slice id `patient/nodule/stem` (empty when it has no such part).
pub fn nodule_of(slice_id: &str) -> &str {
    SliceId::parse(slice_id).map_or("", |id| id.nodule)
}

fn strings(rows: &[PerSliceRow], f: impl Fn(&PerSliceRow) -> &str) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
}

fn ints(rows: &[PerSliceRow], f: impl Fn(&PerSliceRow) -> i64) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(rows.iter().map(f)))
}

fn floats<T>(rows: &[T], f: impl Fn(&T) -> f64) -> ArrayRef {
    Arc::new(Float64Array::from_iter_values(rows.iter().map(f)))
}

/// Writes `per_slice.parquet` atomically.
pub fn write_per_slice(path: &Path, rows: &[PerSliceRow]) -> Result<u64> {
    let columns = vec![
        strings(rows, |r| &r.slice_id),
        strings(rows, |r| &r.patient_id),
        strings(rows, |r| &r.nodule_id),
        ints(rows, |r| r.tp),
        ints(rows, |r| r.fp),
        ints(rows, |r| r.fn_),
        ints(rows, |r| r.tn),
        floats(rows, |r| r.dice),
        floats(rows, |r| r.recall),
        ints(rows, |r| r.lesions),
        ints(rows, |r| r.lesions_detected),
        ints(rows, |r| r.fp_components),
    ];
    write_table(path, Table::PerSlice.spec(), columns)
}

/// Writes `thresholds.parquet` atomically.
pub fn write_thresholds(path: &Path, rows: &[SweepRow]) -> Result<u64> {
    let columns = vec![
        floats(rows, |r| r.threshold),
        floats(rows, |r| r.recall),
        floats(rows, |r| r.precision),
        floats(rows, |r| r.dice),
        floats(rows, |r| r.lesion_recall),
        floats(rows, |r| r.fp_components_per_slice),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.predicted_pixels as i64),
        )),
    ];
    write_table(path, Table::Thresholds.spec(), columns)
}

/// Reads `per_slice.parquet` back, checking its contract.
pub fn read_per_slice(path: &Path) -> Result<Vec<PerSliceRow>> {
    let mut out = Vec::new();
    for b in read_table(path, &Table::PerSlice.spec())? {
        let s = |n| column::<StringArray>(&b, n, path);
        let i = |n| column::<Int64Array>(&b, n, path);
        let f = |n| column::<Float64Array>(&b, n, path);
        let (sid, pid, nid) = (s("slice_id")?, s("patient_id")?, s("nodule_id")?);
        let (tp, fp, fn_, tn) = (i("tp")?, i("fp")?, i("fn")?, i("tn")?);
        let (dice, recall) = (f("dice")?, f("recall")?);
        let (les, det, fpc) = (i("lesions")?, i("lesions_detected")?, i("fp_components")?);
        for r in 0..b.num_rows() {
            out.push(PerSliceRow {
                slice_id: sid.value(r).to_string(),
                patient_id: pid.value(r).to_string(),
                nodule_id: nid.value(r).to_string(),
                tp: tp.value(r),
                fp: fp.value(r),
                fn_: fn_.value(r),
                tn: tn.value(r),
                dice: dice.value(r),
                recall: recall.value(r),
                lesions: les.value(r),
                lesions_detected: det.value(r),
                fp_components: fpc.value(r),
            });
        }
    }
    Ok(out)
}

/// Reads `thresholds.parquet` back, checking its contract.
pub fn read_thresholds(path: &Path) -> Result<Vec<SweepRow>> {
    let mut out = Vec::new();
    for b in read_table(path, &Table::Thresholds.spec())? {
        let f = |n| column::<Float64Array>(&b, n, path);
        let (t, r, p, d) = (f("threshold")?, f("recall")?, f("precision")?, f("dice")?);
        let (lr, fpc) = (f("lesion_recall")?, f("fp_components_per_slice")?);
        let predicted = column::<Int64Array>(&b, "predicted_pixels", path)?;
        for i in 0..b.num_rows() {
            out.push(SweepRow {
                threshold: t.value(i),
                recall: r.value(i),
                precision: p.value(i),
                dice: d.value(i),
                lesion_recall: lr.value(i),
                fp_components_per_slice: fpc.value(i),
                predicted_pixels: u64::try_from(predicted.value(i)).unwrap_or(0),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodule_is_the_middle_part() {
        assert_eq!(nodule_of("LIDC-0001/Nodule 2/slice-7"), "Nodule 2");
        assert_eq!(nodule_of("p/n/a/b"), "n");
        assert_eq!(nodule_of("flat"), "");
    }

    #[test]
    fn tables_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let rows = vec![PerSliceRow {
            slice_id: "p/n/s".into(),
            patient_id: "p".into(),
            nodule_id: "n".into(),
            tp: 1,
            fp: 2,
            fn_: 3,
            tn: 4,
            dice: 0.25,
            recall: 0.25,
            lesions: 1,
            lesions_detected: 1,
            fp_components: 0,
        }];
        let p = dir.path().join("per_slice.parquet");
        write_per_slice(&p, &rows).unwrap();
        assert_eq!(read_per_slice(&p).unwrap(), rows);
        let sweep = crate::metrics::sweep::Sweep::new().rows();
        let p = dir.path().join("thresholds.parquet");
        write_thresholds(&p, &sweep).unwrap();
        assert_eq!(read_thresholds(&p).unwrap(), sweep);
    }
}
