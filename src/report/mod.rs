//! The `report` stage: polars queries over every run under a folder, written as `report.md`
//! with a learning-curve chart per run and a recall–precision chart per evaluated run.

pub mod markdown;
pub mod plots;
pub mod runs;

use crate::atomic::write_atomic;
use crate::error::{IoContext, Result};
use crate::json::read_json;
use crate::layout::RunDir;
use crate::run::eval_summary::EvalSummary;
use crate::wording::count;
use markdown::{BrokenRun, RunPage};
use runs::RunSummary;
use serde::{Deserialize, Serialize};
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
            "report: {}, {} -> {}",
            count(self.runs.len(), "run"),
            count(self.charts.len(), "chart"),
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
    let mut pages = Vec::new();
    let mut broken = Vec::new();
    for dir in &dirs {
        let name = runs::run_name(&cfg.runs, dir);
        match page_with_charts(cfg, dir, &name) {
            Ok(page) => pages.push(page),
            Err(e) => {
                tracing::warn!("{e}; reported as unreadable");
                broken.push(BrokenRun {
                    name,
                    why: e.to_string(),
                });
            }
        }
    }
    let md_path = cfg.out.join("report.md");
    let text = markdown::render(&cfg.runs, &cfg.out, &pages, &broken);
    write_atomic(&md_path, text.as_bytes())?;
    let charts = pages
        .iter()
        .flat_map(|p| p.charts.iter().map(|c| cfg.out.join(c)))
        .collect();
    Ok(ReportOutcome {
        runs: pages.into_iter().map(|p| p.summary).collect(),
        markdown: md_path,
        charts,
    })
}

/// One run's page: its summary, evaluation and threshold sweep (if evaluated), and its charts,
/// drawn into the report folder.
fn page_with_charts(cfg: &ReportConfig, dir: &Path, name: &str) -> Result<RunPage> {
    let summary = runs::summarise(dir, name)?;
    let kept = summary.best_epoch;
    let mut charts = vec![chart_name(&summary, "curve")];
    plots::learning_curve(&cfg.out.join(&charts[0]), name, &runs::curves(dir)?, kept)?;
    let sweep = runs::sweep(dir)?;
    if let Some(rows) = &sweep {
        let pr = chart_name(&summary, "recall_precision");
        plots::recall_precision(&cfg.out.join(&pr), name, rows)?;
        charts.push(pr);
    }
    let eval = read_json::<EvalSummary>(&RunDir::new(dir).eval_summary())?;
    Ok(RunPage {
        summary,
        eval,
        sweep,
        charts,
    })
}
