//! `report.md`: the runs table, then per run its learning curve, the evaluation's chosen measures,
//! the threshold table and chart and the slices worth looking at, and last what to do next.

use crate::metrics::sweep::SweepRow;
use crate::report::runs::RunSummary;
use crate::run::eval_summary::EvalSummary;
use crate::wording::count;
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

/// Everything the report shows of one run.
pub struct RunPage {
    /// The runs-table row.
    pub summary: RunSummary,
    /// The evaluation, if the run has one.
    pub eval: Option<EvalSummary>,
    /// Its threshold sweep.
    pub sweep: Option<Vec<SweepRow>>,
    /// Chart file names in the report folder: the learning curve, then (if evaluated) the
    /// recall–precision chart.
    pub charts: Vec<String>,
}

/// A run that could not be read, and why.
pub struct BrokenRun {
    /// Its path below `--runs`.
    pub name: String,
    /// The error.
    pub why: String,
}

/// How many of the lowest-Dice overlays each run links to.
const WORST_OVERLAYS: usize = 4;

fn fmt3(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "—".into()
    }
}

/// The whole `report.md`; links are relative to `out`, the report's folder.
pub fn render(runs: &Path, out: &Path, pages: &[RunPage], broken: &[BrokenRun]) -> String {
    let mut md = String::from("# lungseg report\n\n");
    let _ = writeln!(
        md,
        "{} under `{}`. Best epoch is the epoch training kept (by its monitor, recall-weighted F2 by default); its validation scores are pooled over every validation pixel.\n",
        count(pages.len() + broken.len(), "run"),
        runs.display()
    );
    runs_table(&mut md, pages, broken);
    for page in pages {
        run_section(&mut md, out, page);
    }
    next_steps(&mut md, pages);
    md
}

fn runs_table(md: &mut String, pages: &[RunPage], broken: &[BrokenRun]) {
    let _ = writeln!(
        md,
        "| run | best epoch | best recall | best precision | best Dice | epochs run | stop reason | device | minutes |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
    for r in pages.iter().map(|p| &p.summary) {
        let best = r.best_epoch.map_or_else(|| "—".into(), |e| e.to_string());
        let _ = writeln!(
            md,
            "| {} | {best} | {} | {} | {} | {} | {} | {} | {:.1} |",
            r.name,
            fmt3(r.best_recall),
            fmt3(r.best_precision),
            fmt3(r.best_dice),
            r.epochs,
            r.stop_reason,
            r.device,
            r.minutes
        );
    }
    for b in broken {
        let _ = writeln!(
            md,
            "| {} | — | — | — | — | — | unreadable: {} | — | — |",
            b.name, b.why
        );
    }
}

fn run_section(md: &mut String, out: &Path, page: &RunPage) {
    let r = &page.summary;
    let _ = writeln!(md, "\n## {}\n\n`{}`\n", r.name, r.dir.display());
    if let Some(curve) = page.charts.first() {
        let _ = writeln!(md, "![{} learning curve]({curve})\n", r.name);
    }
    let Some(e) = &page.eval else {
        let _ = writeln!(md, "Not evaluated yet.");
        return;
    };
    evaluation_table(md, e);
    if let Some(chart) = page.charts.get(1) {
        let _ = writeln!(md, "\n![{} recall vs precision]({chart})", r.name);
    }
    if let Some(rows) = &page.sweep {
        threshold_table(md, rows);
    }
    worst_slices(md, out, &r.dir, e);
}

/// The evaluation's measures, recall first, in the order a reader weighs them.
fn evaluation_table(md: &mut String, e: &EvalSummary) {
    let _ = writeln!(
        md,
        "### Evaluation\n\n{} slices of {} with the {} checkpoint at threshold {}.\n\n| measure | value |\n|---|---|",
        e.slices, e.split, e.checkpoint, e.threshold
    );
    let rows = [
        ("pixel recall", fmt3(e.recall)),
        ("pixel precision", fmt3(e.precision)),
        ("Dice (pooled)", fmt3(e.dice)),
        ("mean slice Dice", fmt3(e.mean_slice_dice)),
        (
            "lesion recall",
            format!(
                "{} ({} of {})",
                fmt3(e.lesion_recall),
                e.lesions_detected,
                e.lesions
            ),
        ),
        (
            "nodule recall",
            format!(
                "{} ({} of {})",
                fmt3(e.nodule_recall),
                e.nodules_detected,
                e.nodules
            ),
        ),
        (
            "false-positive components per slice",
            format!("{:.2}", e.fp_components_per_slice),
        ),
        (
            &format!("highest threshold with recall >= {}", e.target_recall),
            e.threshold_at_target_recall
                .map_or_else(|| "none of the sweep".into(), |t| format!("{t:.2}")),
        ),
    ];
    for (name, value) in rows {
        let _ = writeln!(md, "| {name} | {value} |");
        if name == "nodule recall" {
            // By size band, from nodules.parquet (TCIA source only).
            for b in &e.nodule_recall_by_size {
                let _ = writeln!(
                    md,
                    "| nodule recall, {} | {} ({} of {}) |",
                    b.band,
                    fmt3(b.recall),
                    b.detected,
                    b.nodules
                );
            }
        }
    }
}

fn threshold_table(md: &mut String, rows: &[SweepRow]) {
    let _ = writeln!(
        md,
        "\n### Thresholds\n\n| threshold | recall | precision | Dice | lesion recall | FP components / slice |\n|---|---|---|---|---|---|"
    );
    for s in rows {
        let precision = s
            .defined_precision()
            .map_or_else(|| "undefined (nothing predicted)".into(), fmt3);
        let _ = writeln!(
            md,
            "| {:.2} | {} | {precision} | {} | {} | {} |",
            s.threshold,
            fmt3(s.recall),
            fmt3(s.dice),
            fmt3(s.lesion_recall),
            fmt3(s.fp_components_per_slice)
        );
    }
}

/// Links to the overlays of the lowest-Dice slices (overlay names end in `_dice-0.123.png`).
fn worst_slices(md: &mut String, out: &Path, run: &Path, e: &EvalSummary) {
    let dice_of = |name: &str| {
        name.rsplit_once("_dice-")
            .and_then(|(_, d)| d.trim_end_matches(".png").parse::<f64>().ok())
            .unwrap_or(f64::INFINITY)
    };
    let mut names: Vec<&String> = e.overlays.iter().collect();
    names.sort_by(|a, b| dice_of(a).total_cmp(&dice_of(b)));
    if names.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\n### Slices to look at\n\nThe lowest-Dice slices of the evaluation (truth and prediction: TP green, FN red, FP yellow):\n"
    );
    for name in names.into_iter().take(WORST_OVERLAYS) {
        let target = run.join("eval").join("overlays").join(name);
        let _ = writeln!(md, "- [{name}]({})", relative(out, &target));
    }
}

/// What to run next, from what the runs are missing.
fn next_steps(md: &mut String, pages: &[RunPage]) {
    let _ = writeln!(md, "\n## Next steps\n");
    for p in pages {
        let r = &p.summary;
        let run = r.dir.display();
        if r.stop_reason.starts_with("unfinished") {
            let _ = writeln!(
                md,
                "- `{}` stopped before its last epoch: `lungseg train --data DATA --run {run} --resume` continues it.",
                r.name
            );
        }
        match &p.eval {
            None => {
                let _ = writeln!(
                    md,
                    "- `{}` is not evaluated: `lungseg eval --run {run}`.",
                    r.name
                );
            }
            Some(e) => {
                if let Some(t) = e.threshold_at_target_recall.filter(|t| *t < e.threshold) {
                    let _ = writeln!(
                        md,
                        "- `{}` reaches recall {} only at threshold {t:.2}: `lungseg eval --run {run} --threshold {t:.2} --overwrite` shows what that costs in precision.",
                        r.name, e.target_recall
                    );
                }
            }
        }
    }
    let best = pages
        .iter()
        .filter(|p| p.summary.best_dice.is_finite())
        .max_by(|a, b| a.summary.best_dice.total_cmp(&b.summary.best_dice));
    if let Some(p) = best {
        let _ = writeln!(
            md,
            "- Segment new slices with the best run (`{}`): `lungseg predict --run {} --input SLICES --out OUT`.",
            p.summary.name,
            p.summary.dir.display()
        );
    }
    let _ = writeln!(
        md,
        "- Query the tables behind this report with polars (README, \"Querying the tables\")."
    );
}

/// `to` as a path relative to the folder `from` (both made absolute first), `/`-separated.
pub fn relative(from: &Path, to: &Path) -> String {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (from, to) = (abs(from), abs(to));
    let a: Vec<Component> = from.components().collect();
    let b: Vec<Component> = to.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut rel = PathBuf::new();
    for _ in common..a.len() {
        rel.push("..");
    }
    for c in &b[common..] {
        rel.push(c.as_os_str());
    }
    rel.to_string_lossy().replace('\\', "/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_links_climb_out_of_the_report_folder() {
        assert_eq!(
            relative(
                Path::new("/r/runs/report"),
                Path::new("/r/runs/a/eval/overlays/x.png")
            ),
            "../a/eval/overlays/x.png"
        );
        assert_eq!(relative(Path::new("/r"), Path::new("/r/x.png")), "x.png");
    }

    #[test]
    fn undefined_precision_is_said_not_shown_as_one() {
        let mut md = String::new();
        let row = |t: f64, predicted: u64| SweepRow {
            threshold: t,
            recall: if predicted > 0 { 0.5 } else { 0.0 },
            precision: if predicted > 0 { 0.25 } else { 1.0 },
            dice: 0.0,
            lesion_recall: 0.0,
            fp_components_per_slice: 0.0,
            predicted_pixels: predicted,
        };
        threshold_table(&mut md, &[row(0.5, 10), row(0.95, 0)]);
        assert!(md.contains("| 0.50 | 0.500 | 0.250 |"), "{md}");
        assert!(
            md.contains("| 0.95 | 0.000 | undefined (nothing predicted) |"),
            "{md}"
        );
    }
}
