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

/// A chart's file name: the run's path relative to `--runs` (unique where directory names are
/// not), flattened to one file name.
fn chart_name(run: &RunSummary, kind: &str) -> String {
    let stem: String = run
        .name
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
    broken: &[(String, String)],
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
            r.name,
            if r.best_epoch > 0 {
                r.best_epoch.to_string()
            } else {
                "—".into()
            },
            fmt3(r.best_recall),
            fmt3(r.best_precision),
            fmt3(r.best_dice),
            r.epochs,
            r.stop_reason,
            r.device,
            r.minutes
        );
    }
    for (name, why) in broken {
        let _ = writeln!(
            md,
            "| {name} | — | — | — | — | — | unreadable: {why} | — | — |"
        );
    }
    for ((r, sweep), images) in runs.iter().zip(sweeps).zip(charts) {
        let _ = writeln!(md, "\n## {}\n\n`{}`\n", r.name, r.dir.display());
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

/// Runs the stage. A run that cannot be read (a damaged table) is reported as a row saying
/// so; the others are still summarised.
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
    let mut broken = Vec::new();
    for dir in &dirs {
        let name = runs::run_name(&cfg.runs, dir);
        match summarise_with_charts(cfg, dir, &name) {
            Ok((s, sweep, names)) => {
                charts.extend(names.iter().map(|n| cfg.out.join(n)));
                summaries.push(s);
                sweeps.push(sweep);
                chart_names.push(names);
            }
            Err(e) => {
                tracing::warn!("{e}; reported as unreadable");
                broken.push((name, e.to_string()));
            }
        }
    }
    let md_path = cfg.out.join("report.md");
    write_atomic(
        &md_path,
        markdown(&summaries, &sweeps, &chart_names, &broken).as_bytes(),
    )?;
    Ok(ReportOutcome {
        runs: summaries,
        markdown: md_path,
        charts,
    })
}

/// One run's summary, its threshold sweep (if evaluated) and its charts' file names.
fn summarise_with_charts(
    cfg: &ReportConfig,
    dir: &Path,
    name: &str,
) -> Result<(RunSummary, Option<Vec<SweepRow>>, Vec<String>)> {
    let s = runs::summarise(dir, name)?;
    let mut names = vec![chart_name(&s, "curve")];
    plots::learning_curve(&cfg.out.join(&names[0]), &s.name, &runs::curves(dir)?)?;
    let sweep = runs::sweep(dir)?;
    if let Some(rows) = &sweep {
        let pr = chart_name(&s, "recall_precision");
        plots::recall_precision(&cfg.out.join(&pr), &s.name, rows)?;
        names.push(pr);
    }
    Ok((s, sweep, names))
}
