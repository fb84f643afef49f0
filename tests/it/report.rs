//! `lungseg report` over several runs, and the same queries in Python polars.

use crate::common::*;
use lungseg::run::epochs::read_epochs;

#[test]
fn report_lists_every_run_with_its_best_epoch() {
    let sb = Sandbox::new();
    let data = dataset(&sb, 6, 3, &[]);
    for (name, seed) in [("alpha", "1"), ("beta", "2")] {
        let run = sb.path(&format!("runs/{name}"));
        let extra = [
            "--max-epochs",
            "3",
            "--max-steps-per-epoch",
            "2",
            "--seed",
            seed,
        ];
        train_tiny(
            &data,
            &run,
            &[&extra[..], &["--min-precision", "0"]].concat(),
        )
        .ok();
    }
    let out = lungseg(["report", "--runs", sb.path("runs").to_str().unwrap()]).ok();
    assert!(out.stdout.contains("2 runs"), "{}", out.stdout);
    let md = std::fs::read_to_string(sb.path("runs/report/report.md")).unwrap();
    for name in ["alpha", "beta"] {
        let rows = read_epochs(&sb.path(&format!("runs/{name}/epochs.parquet"))).unwrap();
        let best = rows.last().unwrap().best_epoch;
        let best = best.map_or_else(|| "—".to_string(), |b| b.to_string());
        let line = md
            .lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("{name} missing from\n{md}"));
        assert!(line.starts_with(&format!("| {name} | {best} |")), "{line}");
        assert!(line.contains("| 3 |"), "epochs run: {line}");
        assert!(sb.path(&format!("runs/report/{name}_curve.png")).is_file());
    }
    let png = image::open(sb.path("runs/report/alpha_curve.png")).unwrap();
    assert_eq!((png.width(), png.height()), (800, 500));
    if python_has(&["polars"]) {
        let py = python_script("report.py", &[&sb.path("runs")]);
        for name in ["alpha", "beta"] {
            let rows = read_epochs(&sb.path(&format!("runs/{name}/epochs.parquet"))).unwrap();
            let best = rows.last().unwrap().best_epoch;
            let best = best.map_or_else(|| "None".to_string(), |b| b.to_string());
            assert!(
                py.contains(&format!("run {name} best_epoch {best}")),
                "{py}"
            );
        }
    }
}

#[test]
fn report_on_a_folder_without_runs_is_a_one_line_error() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path("empty")).unwrap();
    let e = lungseg(["report", "--runs", sb.path("empty").to_str().unwrap()]).expect_code(2);
    assert_eq!(e.stderr.trim().lines().count(), 1, "{}", e.stderr);
    let e = lungseg(["report", "--runs", sb.path("missing").to_str().unwrap()]).expect_code(2);
    assert!(e.stderr.contains("missing"), "{}", e.stderr);
}
