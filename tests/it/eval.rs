//! `lungseg eval` and `lungseg predict` end to end on a tiny CPU-trained run: outputs follow
//! their contracts and add up, predictions keep the input size, and bad runs are exit-2 errors.

use crate::common::*;
use lungseg::run::eval_tables::{read_per_slice, read_thresholds};
use std::path::{Path, PathBuf};

/// A prepared, split data directory and a tiny run trained on it (one epoch of two steps; the
/// precision guard is off so `best.safetensors` exists).
fn trained(sb: &Sandbox) -> (PathBuf, PathBuf) {
    let data = dataset(sb, 6, 4, &[]);
    let run = sb.path("run");
    train_tiny(
        &data,
        &run,
        &[
            "--max-epochs",
            "1",
            "--max-steps-per-epoch",
            "2",
            "--min-precision",
            "0",
        ],
    )
    .ok();
    (data, run)
}

fn eval(data: &Path, run: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<String> = ["eval", "--device", "cpu", "--data"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(data.display().to_string());
    args.push("--run".into());
    args.push(run.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    lungseg(&args)
}

fn predict(run: &Path, input: &Path, out: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<String> = vec![
        "predict".into(),
        "--device".into(),
        "cpu".into(),
        "--run".into(),
        run.display().to_string(),
        "--input".into(),
        input.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    lungseg(&args)
}

fn one_line(r: &Run) {
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
}

#[test]
fn eval_writes_contracted_outputs_that_add_up() {
    let sb = Sandbox::new();
    let (data, run) = trained(&sb);
    let out = eval(&data, &run, &["--overlays", "2"]).ok();
    assert!(out.stdout.starts_with("eval: done;"), "{}", out.stdout);
    let dir = run.join("eval");
    assert!(!run.join("eval.tmp").exists());
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    let rows = read_per_slice(&dir.join("per_slice.parquet")).unwrap();
    let val_ids = strings(&data.join("val.parquet"), Table::SliceIndex, "slice_id");
    assert_eq!(
        rows.iter().map(|r| r.slice_id.clone()).collect::<Vec<_>>(),
        val_ids,
        "one row per validation slice, in index order"
    );
    let sum =
        |f: fn(&lungseg::run::eval_tables::PerSliceRow) -> i64| -> i64 { rows.iter().map(f).sum() };
    for (key, total) in [
        ("tp", sum(|r| r.tp)),
        ("fp", sum(|r| r.fp)),
        ("fn", sum(|r| r.fn_)),
        ("tn", sum(|r| r.tn)),
        ("lesions", sum(|r| r.lesions)),
        ("lesions_detected", sum(|r| r.lesions_detected)),
        ("fp_components", sum(|r| r.fp_components)),
    ] {
        assert_eq!(summary[key].as_i64(), Some(total), "{key}: {summary}");
    }
    assert_eq!(
        summary["tp"].as_i64().unwrap()
            + summary["fp"].as_i64().unwrap()
            + summary["fn"].as_i64().unwrap()
            + summary["tn"].as_i64().unwrap(),
        128 * 128 * val_ids.len() as i64
    );
    for r in &rows {
        assert!(r.nodule_id.starts_with("Nodule") || !r.nodule_id.is_empty());
        assert!(r.slice_id.contains(&format!("/{}/", r.nodule_id)));
        assert!((0.0..=1.0).contains(&r.dice) && (0.0..=1.0).contains(&r.recall));
    }
    let mean: f64 = rows.iter().map(|r| r.dice).sum::<f64>() / rows.len() as f64;
    assert!((summary["mean_slice_dice"].as_f64().unwrap() - mean).abs() < 1e-9);
    assert_eq!(
        summary["threshold"].as_f64(),
        Some(0.35),
        "the run's threshold"
    );
    assert_eq!(summary["checkpoint"], "best");
    assert!(summary["mean_slice_dice_rule"]
        .as_str()
        .unwrap()
        .contains("empty"));
    assert!(summary.get("threshold_at_target_recall").is_some());
    assert!(summary["nodules"].as_u64().unwrap() >= 1);

    let sweep = read_thresholds(&dir.join("thresholds.parquet")).unwrap();
    assert_eq!(sweep.len(), 19);
    assert_eq!(sweep[0].threshold, 0.05);
    assert_eq!(sweep[18].threshold, 0.95);
    for pair in sweep.windows(2) {
        assert!(pair[1].recall <= pair[0].recall, "{pair:?}");
    }
    let at_035 = sweep.iter().find(|r| r.threshold == 0.35).unwrap();
    assert!((at_035.recall - summary["recall"].as_f64().unwrap()).abs() < 1e-12);
    match summary["threshold_at_target_recall"].as_f64() {
        Some(t) => {
            let row = sweep.iter().find(|r| r.threshold == t).unwrap();
            assert!(row.recall >= 0.95);
            assert!(sweep
                .iter()
                .filter(|r| r.threshold > t)
                .all(|r| r.recall < 0.95));
        }
        None => assert!(sweep.iter().all(|r| r.recall < 0.95)),
    }

    let overlays: Vec<PathBuf> = std::fs::read_dir(dir.join("overlays"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        (2..=4).contains(&overlays.len()),
        "2 lowest + 2 sampled, possibly overlapping: {overlays:?}"
    );
    assert_eq!(
        summary["overlays"].as_array().unwrap().len(),
        overlays.len()
    );
    for p in &overlays {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.contains("__") && name.contains("_dice-"), "{name}");
        let img = image::open(p).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (512, 512), "{name}: 4x of 128x128");
    }

    let again = eval(&data, &run, &["--overlays", "2"]).ok();
    assert!(again.stdout.contains("already done"), "{}", again.stdout);
    let other = eval(&data, &run, &["--overlays", "2", "--threshold", "0.5"]).expect_code(2);
    one_line(&other);
    let redo = eval(
        &data,
        &run,
        &["--overlays", "0", "--threshold", "0.5", "--overwrite"],
    )
    .ok();
    assert!(redo.stdout.starts_with("eval: done;"), "{}", redo.stdout);
    assert_eq!(std::fs::read_dir(dir.join("overlays")).unwrap().count(), 0);
    let last = eval(
        &data,
        &run,
        &["--checkpoint", "last", "--split", "train", "--overwrite"],
    )
    .ok();
    assert!(last.stdout.contains("of train"), "{}", last.stdout);

    if python_has(&["polars", "pyarrow"]) {
        let out = python_script("check_tables.py", &[&run]);
        assert!(out.contains("ok per_slice"), "{out}");
        assert!(out.contains("ok thresholds"), "{out}");
    }
}

#[test]
fn predict_keeps_sizes_and_reports_bad_files() {
    let sb = Sandbox::new();
    let (_, run) = trained(&sb);
    let input = sb.path("pngs");
    write_gray8(
        &input.join("small.png"),
        100,
        90,
        (0..100 * 90).map(|i| (i % 251) as u8).collect(),
    );
    write_gray16(
        &input.join("large16.png"),
        200,
        160,
        (0..200 * 160).map(|i| (i % 2000) as u16).collect(),
    );
    std::fs::write(input.join("broken.png"), b"not a png").unwrap();
    let out = sb.path("out");
    let r = predict(&run, &input, &out, &["--probabilities"]).expect_code(1);
    assert!(r.stdout.contains("2 of 3 files written"), "{}", r.stdout);
    assert!(r.stderr.contains("broken.png"), "{}", r.stderr);
    for (stem, w, h) in [("small", 100, 90), ("large16", 200, 160)] {
        let mask = image::open(out.join(format!("{stem}_mask.png"))).unwrap();
        assert_eq!((mask.width(), mask.height()), (w, h), "{stem}");
        let mask = mask.to_luma8();
        assert!(mask.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
        let overlay = image::open(out.join(format!("{stem}_overlay.png"))).unwrap();
        assert_eq!((overlay.width(), overlay.height()), (4 * w, 4 * h));
        let prob = image::open(out.join(format!("{stem}_prob.png"))).unwrap();
        assert_eq!((prob.width(), prob.height()), (w, h));
        assert!(matches!(prob, image::DynamicImage::ImageLuma16(_)));
    }
    assert!(!out.join("broken_mask.png").exists());

    let single = sb.path("single");
    let r = predict(
        &run,
        &input.join("small.png"),
        &single,
        &["--threshold", "0.9"],
    )
    .ok();
    assert!(r.stdout.contains("1 of 1 files written"), "{}", r.stdout);
    assert!(single.join("small_mask.png").is_file());
    assert!(!single.join("small_prob.png").exists());
}

#[test]
fn missing_runs_and_corrupt_checkpoints_are_one_line_exit_2_errors() {
    let sb = Sandbox::new();
    let (data, run) = trained(&sb);
    let png = sb.path("in/a.png");
    write_gray8(&png, 8, 8, vec![0; 64]);
    let missing = sb.path("no-run");
    let r = eval(&data, &missing, &[]).expect_code(2);
    one_line(&r);
    assert!(r.stderr.contains("no-run"), "{}", r.stderr);
    let r = predict(&missing, &png, &sb.path("o"), &[]).expect_code(2);
    one_line(&r);
    let r = predict(&run, &sb.path("in/nothing.png"), &sb.path("o"), &[]).expect_code(2);
    one_line(&r);
    let r = eval(&data, &run, &["--target-recall", "1.5"]).expect_code(2);
    one_line(&r);

    std::fs::write(run.join("best.safetensors"), b"not a checkpoint").unwrap();
    let r = eval(&data, &run, &[]).expect_code(2);
    one_line(&r);
    assert!(r.stderr.contains("best.safetensors"), "{}", r.stderr);
    assert!(!run.join("eval").exists());
    let r = predict(&run, &png, &sb.path("o"), &[]).expect_code(2);
    one_line(&r);
    assert!(r.stderr.contains("best.safetensors"), "{}", r.stderr);
    // The other checkpoint still works.
    predict(&run, &png, &sb.path("o"), &["--checkpoint", "last"]).ok();
}
