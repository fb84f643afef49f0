//! The `report` stage: polars queries over every run under a folder, written as `report.md`
//! with a learning-curve chart per run and a recall–precision chart per evaluated run.

pub mod plots;
pub mod runs;

use crate::atomic::write_atomic;
use crate::error::{IoContext, Result};
use crate::json::read_json;
use crate::layout::RunDir;
use crate::metrics::sweep::SweepRow;
use crate::run::eval_summary::EvalSummary;
use runs::RunSummary;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A resolved `report` invocation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportConfig {
    /// Folder searched for runs (directories holding `epochs.parquet`).
    pub runs: PathBuf,
    /// Where `report.md` and the charts go.
    pub out: PathBuf,
}

/// What `report` produced.
#[derive(Debug, Clone)]
pub struct ReportOutcome {
    /// One row per run found.
    pub runs: Vec<RunSummary>,
    /// Path of `report.md`.
    pub markdown: PathBuf,
    /// Charts written.
    pub charts: Vec<PathBuf>,
}

impl ReportOutcome {
    /// The one-line summary.
    pub fn summary(&self) -> String {
        format!(
            "report: {} runs, {} charts -> {}",
            self.runs.len(),
            self.charts.len(),
            self.markdown.display()
        )
    }
}

fn chart_name(run: &RunSummary, kind: &str) -> String {
    let stem: String = run
        .run_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{stem}_{kind}.png")
}

fn fmt3(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "—".into()
    }
}

/// Flat numeric and text fields of `eval/summary.json`, by name.
fn eval_fields(dir: &Path) -> Option<Vec<(String, String)>> {
    let summary: EvalSummary = read_json(&RunDir::new(dir).eval_summary()).ok()??;
    let v = serde_json::to_value(summary).ok()?;
    let obj = v.as_object()?;
    Some(
        obj.iter()
            .filter_map(|(k, v)| match v {
                serde_json::Value::Number(n) => n.as_f64().map(|f| {
                    let text = if n.is_f64() {
                        format!("{f:.4}")
                    } else {
                        n.to_string()
                    };
                    (k.clone(), text)
                }),
                serde_json::Value::String(s) => Some((k.clone(), s.clone())),
                serde_json::Value::Null => Some((k.clone(), "—".into())),
                _ => None,
            })
            .collect(),
    )
}

fn markdown(
    runs: &[RunSummary],
    sweeps: &[Option<Vec<SweepRow>>],
    charts: &[Vec<String>],
) -> String {
    let mut md = String::from("# lungseg report\n\n");
    let _ = writeln!(
        md,
        "| run | best epoch | best recall | best precision | best Dice | epochs run | stop reason | device | minutes |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} |",
            r.run_id,
            r.best_epoch,
            fmt3(r.best_recall),
            fmt3(r.best_precision),
            fmt3(r.best_dice),
            r.epochs,
            r.stop_reason,
            r.device,
            r.minutes
        );
    }
    for ((r, sweep), images) in runs.iter().zip(sweeps).zip(charts) {
        let _ = writeln!(md, "\n## {}\n\n`{}`\n", r.run_id, r.dir.display());
        for img in images {
            let _ = writeln!(md, "![{img}]({img})\n");
        }
        if let Some(fields) = eval_fields(&r.dir) {
            let _ = writeln!(md, "### Evaluation\n\n| measure | value |\n|---|---|");
            for (k, v) in fields {
                let _ = writeln!(md, "| {k} | {v} |");
            }
        }
        if let Some(rows) = sweep {
            let _ = writeln!(
                md,
                "\n### Thresholds\n\n| threshold | recall | precision | Dice | lesion recall | FP components / slice |\n|---|---|---|---|---|---|"
            );
            for s in rows {
                let _ = writeln!(
                    md,
                    "| {:.2} | {} | {} | {} | {} | {} |",
                    s.threshold,
                    fmt3(s.recall),
                    fmt3(s.precision),
                    fmt3(s.dice),
                    fmt3(s.lesion_recall),
                    fmt3(s.fp_components_per_slice)
                );
            }
        }
    }
    md
}

/// Runs the stage.
pub fn run(cfg: &ReportConfig) -> Result<ReportOutcome> {
    let dirs = runs::find_runs(&cfg.runs)?;
    if dirs.is_empty() {
        return Err(crate::Error::input(
            &cfg.runs,
            "no runs found (no epochs.parquet up to four levels down)",
        ));
    }
    std::fs::create_dir_all(&cfg.out).at(&cfg.out)?;
    let mut summaries = Vec::new();
    let mut sweeps = Vec::new();
    let mut chart_names = Vec::new();
    let mut charts = Vec::new();
    for dir in &dirs {
        let s = runs::summarise(dir)?;
        let mut names = Vec::new();
        let curve = cfg.out.join(chart_name(&s, "curve"));
        plots::learning_curve(&curve, &s.run_id, &runs::curves(dir)?)?;
        names.push(chart_name(&s, "curve"));
        charts.push(curve);
        let sweep = runs::sweep(dir)?;
        if let Some(rows) = &sweep {
            let pr = cfg.out.join(chart_name(&s, "recall_precision"));
            plots::recall_precision(&pr, &s.run_id, rows)?;
            names.push(chart_name(&s, "recall_precision"));
            charts.push(pr);
        }
        summaries.push(s);
        sweeps.push(sweep);
        chart_names.push(names);
    }
    let md_path = cfg.out.join("report.md");
    write_atomic(
        &md_path,
        markdown(&summaries, &sweeps, &chart_names).as_bytes(),
    )?;
    Ok(ReportOutcome {
        runs: summaries,
        markdown: md_path,
        charts,
    })
}
