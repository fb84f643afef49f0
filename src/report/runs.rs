//! Finds training runs under a folder and summarises each with polars lazy queries over its
//! `epochs.parquet` (and `eval/thresholds.parquet` when an evaluation exists).

use crate::error::{Error, Result};
use crate::layout::RunDir;
use crate::metrics::sweep::SweepRow;
use crate::run::eval_tables::read_thresholds;
use crate::run::record::read_run_record;
use crate::run::status::RunStatus;
use polars::prelude::*;
use std::path::{Path, PathBuf};

/// One row of the report's runs table.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// Run directory.
    pub dir: PathBuf,
    /// Run id (the directory name, as in `epochs.parquet`).
    pub run_id: String,
    /// The run's path relative to `--runs` (its name in the report).
    pub name: String,
    /// Best epoch by the run's monitor (`None` when none was admissible).
    pub best_epoch: Option<i32>,
    /// Validation recall at the best epoch.
    pub best_recall: f64,
    /// Validation precision at the best epoch.
    pub best_precision: f64,
    /// Validation Dice at the best epoch.
    pub best_dice: f64,
    /// Epochs run.
    pub epochs: usize,
    /// Why training stopped (from `train_state.json`).
    pub stop_reason: String,
    /// Device (from `config.json`).
    pub device: String,
    /// Wall-clock minutes over all epochs.
    pub minutes: f64,
}

/// The per-epoch curves of one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Curves {
    /// Epoch numbers.
    pub epoch: Vec<f64>,
    /// Training loss.
    pub train_loss: Vec<f64>,
    /// Validation loss.
    pub val_loss: Vec<f64>,
    /// Validation recall.
    pub val_recall: Vec<f64>,
    /// Validation precision.
    pub val_precision: Vec<f64>,
    /// Validation Dice.
    pub val_dice: Vec<f64>,
}

fn polars_err(path: &Path) -> impl Fn(PolarsError) -> Error + '_ {
    move |e| Error::input(path, format!("cannot query: {e}"))
}

fn scan(path: &Path) -> Result<LazyFrame> {
    let p = PlRefPath::try_from_path(path).map_err(polars_err(path))?;
    LazyFrame::scan_parquet(p, ScanArgsParquet::default()).map_err(polars_err(path))
}

fn f64_column(df: &DataFrame, name: &str, path: &Path) -> Result<Vec<f64>> {
    let col = df
        .column(name)
        .and_then(|c| c.cast(&DataType::Float64))
        .map_err(polars_err(path))?;
    let ca = col.f64().map_err(polars_err(path))?;
    Ok(ca.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
}

/// Every run directory (one holding `epochs.parquet`) under `root`, up to four levels deep,
/// sorted by path.
pub fn find_runs(root: &Path) -> Result<Vec<PathBuf>> {
    if !root.is_dir() {
        return Err(Error::input(root, "not a directory of runs"));
    }
    let mut found = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        if RunDir::new(&dir).epochs().is_file() {
            found.push(dir.clone());
        }
        if depth == 4 {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && !p.ends_with("eval") {
                stack.push((p, depth + 1));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Summarises one run: best epoch (from the last row's `best_epoch`) and its scores, epochs run
/// and total minutes.
pub fn summarise(dir: &Path, name: &str) -> Result<RunSummary> {
    let run = RunDir::new(dir);
    let path = run.epochs();
    let lf = scan(&path)?;
    let best = lf
        .clone()
        .filter(col("epoch").eq(col("best_epoch").last()))
        .select([
            col("run_id"),
            col("epoch"),
            col("val_recall"),
            col("val_precision"),
            col("val_dice"),
        ])
        .collect()
        .map_err(polars_err(&path))?;
    let totals = lf
        .select([
            col("epoch").count().alias("epochs"),
            col("seconds").sum().alias("seconds"),
            col("run_id").first().alias("run_id"),
        ])
        .collect()
        .map_err(polars_err(&path))?;
    let first = |df: &DataFrame, name: &str| -> Result<f64> {
        Ok(f64_column(df, name, &path)?
            .first()
            .copied()
            .unwrap_or(f64::NAN))
    };
    let run_id = totals
        .column("run_id")
        .ok()
        .and_then(|c| c.str().ok()?.get(0).map(str::to_string))
        .unwrap_or_default();
    let has_best = best.height() > 0;
    Ok(RunSummary {
        dir: dir.to_path_buf(),
        run_id,
        name: name.to_string(),
        best_epoch: if has_best {
            Some(first(&best, "epoch")? as i32)
        } else {
            None
        },
        best_recall: if has_best {
            first(&best, "val_recall")?
        } else {
            f64::NAN
        },
        best_precision: if has_best {
            first(&best, "val_precision")?
        } else {
            f64::NAN
        },
        best_dice: if has_best {
            first(&best, "val_dice")?
        } else {
            f64::NAN
        },
        epochs: first(&totals, "epochs")? as usize,
        stop_reason: stop_reason(&run),
        device: read_run_record(&run).map_or_else(|_| "?".into(), |r| r.device),
        minutes: first(&totals, "seconds")? / 60.0,
    })
}

/// The learning curves of one run, in epoch order.
pub fn curves(dir: &Path) -> Result<Curves> {
    let path = RunDir::new(dir).epochs();
    let df = scan(&path)?
        .sort(["epoch"], SortMultipleOptions::default())
        .select([
            col("epoch"),
            col("train_loss"),
            col("val_loss"),
            col("val_recall"),
            col("val_precision"),
            col("val_dice"),
        ])
        .collect()
        .map_err(polars_err(&path))?;
    Ok(Curves {
        epoch: f64_column(&df, "epoch", &path)?,
        train_loss: f64_column(&df, "train_loss", &path)?,
        val_loss: f64_column(&df, "val_loss", &path)?,
        val_recall: f64_column(&df, "val_recall", &path)?,
        val_precision: f64_column(&df, "val_precision", &path)?,
        val_dice: f64_column(&df, "val_dice", &path)?,
    })
}

/// The run's path relative to the folder of runs, with `/` between parts (the folder's own name
/// when the run is the folder itself).
pub fn run_name(runs: &Path, dir: &Path) -> String {
    let relative = dir.strip_prefix(runs).unwrap_or(dir);
    let parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.is_empty() {
        dir.file_name()
            .map_or_else(|| "run".into(), |n| n.to_string_lossy().into_owned())
    } else {
        parts.join("/")
    }
}

/// Why the run stopped, by its `train_state.json`; for a run that has not stopped, whether a
/// `train` is writing it now ("running") or it was killed or interrupted ("unfinished").
fn stop_reason(run: &RunDir) -> String {
    match RunStatus::read(run) {
        Ok(Some(RunStatus {
            stop_reason: Some(reason),
            finished: true,
        })) => reason.name().to_string(),
        Ok(_) if crate::lock::is_locked(run.root()) => "running".into(),
        Ok(_) => "unfinished (train --resume continues it)".into(),
        Err(e) => {
            tracing::warn!("{e}");
            "unreadable".into()
        }
    }
}

/// The threshold sweep of a run's evaluation, if it has one, read with `eval`'s own reader.
pub fn sweep(dir: &Path) -> Result<Option<Vec<SweepRow>>> {
    let path = RunDir::new(dir).eval_thresholds();
    if !path.is_file() {
        return Ok(None);
    }
    let mut rows = read_thresholds(&path)?;
    rows.sort_by(|a, b| a.threshold.total_cmp(&b.threshold));
    Ok(Some(rows))
}
