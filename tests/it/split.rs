//! `lungseg split`: patient-level, deterministic, stable, with folds and clear errors.

use crate::common::*;
use pretty_assertions::assert_eq;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

fn split(data: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<String> = vec!["split".into(), "--data".into(), data.display().to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    lungseg(&args)
}

fn assignment(data: &Path) -> BTreeMap<String, String> {
    let p = data.join("split.parquet");
    strings(&p, Table::Split, "patient_id")
        .into_iter()
        .zip(strings(&p, Table::Split, "split"))
        .collect()
}

#[test]
fn split_is_patient_level_deterministic_and_near_target() {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    synth(&tree, 100, 9, &[]);
    let data = sb.path("data");
    prepare(&tree, &data, &[]);
    let run = split(&data, &[]).ok();
    assert!(run.stdout.contains("val ratio"), "{}", run.stdout);
    let train: HashSet<String> =
        strings(&data.join("train.parquet"), Table::SliceIndex, "patient_id")
            .into_iter()
            .collect();
    let val: HashSet<String> = strings(&data.join("val.parquet"), Table::SliceIndex, "patient_id")
        .into_iter()
        .collect();
    assert!(train.is_disjoint(&val), "a patient is in both splits");
    assert_eq!(train.len() + val.len(), 100);
    let ratio = val.len() as f64 / 100.0;
    assert!((ratio - 0.2).abs() <= 0.08, "patient ratio {ratio}");
    let slices = strings(&data.join("manifest.parquet"), Table::Manifest, "slice_id").len();
    let val_slices = strings(&data.join("val.parquet"), Table::SliceIndex, "slice_id").len();
    let slice_ratio = val_slices as f64 / slices as f64;
    assert!(
        (slice_ratio - 0.2).abs() <= 0.08,
        "slice ratio {slice_ratio}"
    );

    let before = tree_bytes(&data);
    split(&data, &["--overwrite"]).ok();
    let after = tree_bytes(&data);
    let tables = |f: &Vec<(String, Vec<u8>)>| {
        f.iter()
            .filter(|(n, _)| n.ends_with(".parquet"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(
        tables(&before) == tables(&after),
        "same manifest and seed, same tables"
    );
    let skipped = split(&data, &[]).ok();
    assert!(
        skipped.stdout.contains("already done"),
        "{}",
        skipped.stdout
    );
}

#[test]
fn adding_patients_never_moves_an_existing_one() {
    let sb = Sandbox::new();
    synth(&sb.path("t30"), 30, 4, &[]);
    synth(&sb.path("t45"), 45, 4, &[]);
    prepare(&sb.path("t30"), &sb.path("d30"), &[]);
    prepare(&sb.path("t45"), &sb.path("d45"), &[]);
    split(&sb.path("d30"), &["--folds", "5"]).ok();
    split(&sb.path("d45"), &["--folds", "5"]).ok();
    let small = assignment(&sb.path("d30"));
    let large = assignment(&sb.path("d45"));
    assert!(small.len() >= 25);
    for (patient, side) in &small {
        assert_eq!(large.get(patient), Some(side), "{patient} moved");
    }
}

#[test]
fn folds_cover_every_patient_once() {
    let sb = Sandbox::new();
    synth(&sb.path("t"), 25, 8, &[]);
    prepare(&sb.path("t"), &sb.path("d"), &[]);
    split(&sb.path("d"), &["--folds", "4"]).ok();
    let p = sb.path("d/split.parquet");
    let batches = lungseg::table::read_table(&p, &lungseg::schema::Table::Split.spec()).unwrap();
    let mut seen = HashSet::new();
    let mut per_fold = [0; 4];
    for b in &batches {
        let ids = lungseg::table::column::<arrow_array::StringArray>(b, "patient_id", &p).unwrap();
        let folds = lungseg::table::column::<arrow_array::Int32Array>(b, "fold", &p).unwrap();
        for r in 0..b.num_rows() {
            assert!(
                seen.insert(ids.value(r).to_string()),
                "patient listed twice"
            );
            per_fold[folds.value(r) as usize] += 1;
        }
    }
    assert_eq!(per_fold.iter().sum::<usize>(), seen.len());
    assert!(per_fold.iter().all(|&n| n > 0), "{per_fold:?}");
}

#[test]
fn bad_data_dirs_and_degenerate_manifests_are_clear_errors() {
    let sb = Sandbox::new();
    let missing = split(&sb.path("nope"), &[]).expect_code(2);
    assert_eq!(
        missing.stderr.trim().lines().count(),
        1,
        "{}",
        missing.stderr
    );
    assert!(missing.stderr.contains("prepare"), "{}", missing.stderr);

    // one patient: refused; so is an empty validation side
    let tree = sb.path("one");
    write_gray8(&tree.join("P1/n/images/s-1.png"), 4, 4, vec![3; 16]);
    write_gray8(&tree.join("P1/n/mask-0/s-1.png"), 4, 4, vec![255; 16]);
    prepare(&tree, &sb.path("d1"), &[]);
    let one = split(&sb.path("d1"), &[]).expect_code(2);
    assert!(one.stderr.contains("single patient"), "{}", one.stderr);
    let no_val = split(&sb.path("d1"), &["--val-ratio", "0"]).expect_code(2);
    assert!(no_val.stderr.contains("--val-ratio"), "{}", no_val.stderr);
    assert!(!sb.path("d1/val.parquet").exists());

    // zero slices kept (an input without any slice is refused by prepare itself): the only
    // slice has no mask
    let empty = sb.path("empty");
    write_gray8(&empty.join("P1/n/images/s-1.png"), 4, 4, vec![3; 16]);
    prepare(&empty, &sb.path("d0"), &[]);
    let zero = split(&sb.path("d0"), &[]).expect_code(2);
    assert!(zero.stderr.contains("no slices"), "{}", zero.stderr);

    // a manifest that breaks its schema
    std::fs::copy(
        sb.path("d1/rejects.parquet"),
        sb.path("d1/manifest.parquet"),
    )
    .unwrap();
    let broken = split(&sb.path("d1"), &["--overwrite"]).expect_code(2);
    assert!(
        broken.stderr.contains("manifest.parquet"),
        "{}",
        broken.stderr
    );
    assert_eq!(broken.stderr.trim().lines().count(), 1, "{}", broken.stderr);
}

#[test]
fn rust_polars_reads_every_table() {
    use polars::prelude::*;
    let sb = Sandbox::new();
    synth(&sb.path("t"), 8, 2, &[]);
    prepare(&sb.path("t"), &sb.path("d"), &[]);
    split(&sb.path("d"), &[]).ok();
    let d = sb.path("d");
    for name in [
        "manifest.parquet",
        "rejects.parquet",
        "split.parquet",
        "train.parquet",
        "val.parquet",
        "shards/slices-00000.parquet",
    ] {
        let path = PlRefPath::try_from_path(&d.join(name)).unwrap();
        let df = LazyFrame::scan_parquet(path, ScanArgsParquet::default())
            .unwrap()
            .collect()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(df.width() >= 4, "{name}");
    }
    // a polars query people run: slices and nodule pixels per split
    let path = PlRefPath::try_from_path(&d.join("split.parquet")).unwrap();
    let per_split = LazyFrame::scan_parquet(path, ScanArgsParquet::default())
        .unwrap()
        .group_by([col("split")])
        .agg([
            col("slices").sum(),
            col("patient_id").count().alias("patients"),
        ])
        .sort(["split"], SortMultipleOptions::default())
        .collect()
        .unwrap();
    assert_eq!(per_split.height(), 2);
}
