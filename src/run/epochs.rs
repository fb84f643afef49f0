//! The per-epoch metrics table, `epochs.parquet`, rewritten atomically after every epoch.

use crate::error::{Error, Result};
use crate::schema::Table;
use crate::table::{column, read_table, write_table};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, StringArray,
};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// One row of `epochs.parquet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Run directory name.
    pub run_id: String,
    /// 1-based epoch.
    pub epoch: i32,
    /// Mean training loss.
    pub train_loss: f64,
    /// Mean validation loss per slice.
    pub val_loss: f64,
    /// Pooled recall.
    pub val_recall: f64,
    /// Pooled precision.
    pub val_precision: f64,
    /// Pooled Dice.
    pub val_dice: f64,
    /// Mean per-slice Dice (`mean_slice_dice` in `eval/summary.json`).
    pub val_mean_slice_dice: f64,
    /// Pooled confusion matrix.
    pub tp: i64,
    /// False positives.
    pub fp: i64,
    /// False negatives.
    pub fn_: i64,
    /// True negatives.
    pub tn: i64,
    /// Probability threshold.
    pub threshold: f64,
    /// Learning rate.
    pub lr: f64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Training patches per second.
    pub train_patches_per_s: f64,
    /// Monitor name.
    pub monitor: String,
    /// Monitor value.
    pub monitor_value: f64,
    /// Became the best checkpoint.
    pub improved: bool,
    /// Best epoch so far; `None` until an epoch passes the min-precision guard.
    pub best_epoch: Option<i32>,
}

/// Writes all rows to `path`, atomically.
pub fn write_epochs(path: &Path, rows: &[EpochMetrics]) -> Result<u64> {
    let f64s = |f: fn(&EpochMetrics) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(rows.iter().map(f)))
    };
    let i64s = |f: fn(&EpochMetrics) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(rows.iter().map(f)))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.run_id),
        )),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.epoch))),
        f64s(|r| r.train_loss),
        f64s(|r| r.val_loss),
        f64s(|r| r.val_recall),
        f64s(|r| r.val_precision),
        f64s(|r| r.val_dice),
        f64s(|r| r.val_mean_slice_dice),
        i64s(|r| r.tp),
        i64s(|r| r.fp),
        i64s(|r| r.fn_),
        i64s(|r| r.tn),
        f64s(|r| r.threshold),
        f64s(|r| r.lr),
        f64s(|r| r.seconds),
        f64s(|r| r.train_patches_per_s),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.monitor),
        )),
        f64s(|r| r.monitor_value),
        Arc::new(BooleanArray::from(
            rows.iter().map(|r| r.improved).collect::<Vec<_>>(),
        )),
        Arc::new(Int32Array::from(
            rows.iter().map(|r| r.best_epoch).collect::<Vec<_>>(),
        )),
    ];
    write_table(path, Table::Epochs.spec(), columns)
}

/// Reads `epochs.parquet` back (for `--resume` and reports).
pub fn read_epochs(path: &Path) -> Result<Vec<EpochMetrics>> {
    let mut rows = Vec::new();
    for b in read_table(path, &Table::Epochs.spec())? {
        let s = |name| column::<StringArray>(&b, name, path);
        let f = |name| column::<Float64Array>(&b, name, path);
        let i = |name| column::<Int64Array>(&b, name, path);
        let e = |name| column::<Int32Array>(&b, name, path);
        let (run_id, monitor) = (s("run_id")?, s("monitor")?);
        let improved = column::<BooleanArray>(&b, "improved", path)?;
        for r in 0..b.num_rows() {
            if improved.is_null(r) {
                return Err(Error::input(path, "null in column `improved`"));
            }
            rows.push(EpochMetrics {
                run_id: run_id.value(r).to_string(),
                epoch: e("epoch")?.value(r),
                train_loss: f("train_loss")?.value(r),
                val_loss: f("val_loss")?.value(r),
                val_recall: f("val_recall")?.value(r),
                val_precision: f("val_precision")?.value(r),
                val_dice: f("val_dice")?.value(r),
                val_mean_slice_dice: f("val_mean_slice_dice")?.value(r),
                tp: i("tp")?.value(r),
                fp: i("fp")?.value(r),
                fn_: i("fn")?.value(r),
                tn: i("tn")?.value(r),
                threshold: f("threshold")?.value(r),
                lr: f("lr")?.value(r),
                seconds: f("seconds")?.value(r),
                train_patches_per_s: f("train_patches_per_s")?.value(r),
                monitor: monitor.value(r).to_string(),
                monitor_value: f("monitor_value")?.value(r),
                improved: improved.value(r),
                best_epoch: {
                    let best = e("best_epoch")?;
                    best.is_valid(r).then(|| best.value(r))
                },
            });
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("epochs.parquet");
        let row = EpochMetrics {
            run_id: "r".into(),
            epoch: 1,
            train_loss: 0.5,
            val_loss: 0.4,
            val_recall: 0.9,
            val_precision: 0.5,
            val_dice: 0.6,
            val_mean_slice_dice: 0.55,
            tp: 9,
            fp: 9,
            fn_: 1,
            tn: 100,
            threshold: 0.35,
            lr: 1e-4,
            seconds: 1.0,
            train_patches_per_s: 8.0,
            monitor: "fbeta(beta=2)".into(),
            monitor_value: 0.77,
            improved: true,
            best_epoch: Some(1),
        };
        let rows = vec![
            row.clone(),
            EpochMetrics {
                epoch: 2,
                improved: false,
                ..row
            },
        ];
        write_epochs(&p, &rows).unwrap();
        assert_eq!(read_epochs(&p).unwrap(), rows);
    }
}
