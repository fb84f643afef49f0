//! `lungseg predict` against hostile inputs: decompression bombs and special files fail one by
//! one while the other files are written, no output replaces an input, and a large slice runs in
//! bounded memory without stopping the files after it.

use crate::common::*;
use std::time::Duration;

#[test]
fn bombs_and_special_files_fail_alone_and_inputs_are_never_overwritten() {
    let sb = Sandbox::new();
    let run = two_step_run(&sb);
    let input = sb.path("pngs");
    write_gray8(
        &input.join("a.png"),
        40,
        30,
        (0..1200).map(|i| i as u8).collect(),
    );
    std::fs::write(input.join("b.png"), bomb_png(65535, 65535, 0, 8)).unwrap();
    std::fs::write(input.join("c.png"), bomb_png(65535, 65535, 6, 16)).unwrap();
    mkfifo(&input.join("d.png"));
    std::os::unix::fs::symlink("/dev/zero", input.join("e.png")).unwrap();
    write_gray16(&input.join("f.png"), 20, 12, vec![1024; 240]);
    let out = sb.path("out");
    let limited = lungseg_limited(
        predict_args(&run, &input, &out, &[]),
        Limits {
            address_space: Some(3 << 30),
            timeout: Some(Duration::from_secs(120)),
            ..Limits::default()
        },
    );
    assert!(!limited.timed_out, "predict hung");
    let r = limited.run.expect_code(1);
    assert!(r.stdout.contains("2 of 6 files written"), "{}", r.stdout);
    for (name, why) in [
        ("b.png", "over the cap"),
        ("c.png", "over the cap"),
        ("d.png", "a FIFO, not a regular file"),
        ("e.png", "a character device, not a regular file"),
    ] {
        let line = r.stderr.lines().find(|l| l.contains(name));
        assert!(
            line.is_some_and(|l| l.contains(why)),
            "{name}: {}",
            r.stderr
        );
    }
    for stem in ["a", "f"] {
        assert!(out.join(format!("{stem}_mask.png")).is_file(), "{stem}");
    }

    // Writing beside the inputs is fine while no output name is an input file...
    let regular = ["a.png", "b.png", "c.png", "f.png"];
    let contents = || -> Vec<Vec<u8>> {
        regular
            .iter()
            .map(|n| std::fs::read(input.join(n)).unwrap())
            .collect()
    };
    let before = contents();
    let beside = lungseg(predict_args(&run, &input.join("a.png"), &input, &[])).ok();
    assert!(
        beside.stdout.contains("1 of 1 files written"),
        "{}",
        beside.stdout
    );
    // ...but once `a_mask.png` is itself an input, writing it again would replace an input.
    let again = lungseg(predict_args(&run, &input, &input, &[])).expect_code(2);
    assert_eq!(again.stderr.trim().lines().count(), 1, "{}", again.stderr);
    assert!(
        again.stderr.contains("would overwrite the input"),
        "{}",
        again.stderr
    );
    assert!(contents() == before, "an input file changed");
}

#[test]
fn a_large_slice_runs_in_tiles_of_bounded_memory_and_the_next_file_follows() {
    let sb = Sandbox::new();
    let run = two_step_run(&sb);
    let input = sb.path("pngs");
    let (w, h) = (520u32, 500u32);
    let pixels = (0..w * h).map(|i| ((i % w) * 255 / w) as u8).collect();
    write_gray8(&input.join("a-large.png"), w, h, pixels);
    write_gray8(&input.join("b-small.png"), 16, 16, vec![50; 256]);
    let out = sb.path("out");
    let limited = lungseg_limited(
        predict_args(&run, &input, &out, &["--tile-mib", "64"]),
        Limits {
            timeout: Some(Duration::from_secs(300)),
            ..Limits::default()
        },
    );
    let r = limited.run.ok();
    assert!(r.stdout.contains("2 of 2 files written"), "{}", r.stdout);
    let mask = image::open(out.join("a-large_mask.png")).unwrap();
    assert_eq!((mask.width(), mask.height()), (w, h));
    assert!(out.join("b-small_overlay.png").is_file());
    // The whole-slice pass of the width-4 network holds ~1.2 KiB a pixel: ~300 MiB here.
    assert!(
        limited.max_rss_kib < 200 << 10,
        "peak RSS {} MiB",
        limited.max_rss_kib >> 10
    );
}

/// A folder tree as a user has it: slices in subfolders, 8- and 16-bit PNGs, a JPEG, a DICOM
/// slice without an extension and notes beside them. `--recursive` reads every slice and mirrors
/// the folders under `--out`; DICOM outputs are named by SOP instance UID and listed in
/// `dicom_masks.parquet`; every other file is named as skipped, with why; without it the
/// subfolders are named as skipped too.
#[test]
fn recursive_predict_mirrors_folders_and_names_every_skipped_file() {
    let sb = Sandbox::new();
    let run = two_step_run(&sb);
    let input = sb.path("cases");
    write_gray8(&input.join("p1/a.png"), 16, 12, vec![90; 192]);
    write_gray16(&input.join("p2/n1/b.png"), 20, 12, vec![1024; 240]);
    image::GrayImage::from_fn(24, 16, |x, y| image::Luma([(x * 8 + y) as u8]))
        .save(input.join("p2/scan.jpg"))
        .unwrap();
    let ct =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dicom/CT_small.dcm");
    std::fs::create_dir_all(input.join("series")).unwrap();
    std::fs::copy(&ct, input.join("series/000001")).unwrap();
    std::fs::write(input.join("notes.txt"), b"x").unwrap();
    let out = sb.path("out");
    let r = lungseg(predict_args(&run, &input, &out, &["--recursive"])).ok();
    assert!(r.stdout.contains("4 of 4 files written"), "{}", r.stdout);
    assert!(r.stdout.contains("1 skipped"), "{}", r.stdout);
    let sop = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322";
    for file in [
        "p1/a_mask.png".to_string(),
        "p1/a_overlay.png".into(),
        "p2/n1/b_mask.png".into(),
        "p2/scan_mask.png".into(),
        format!("series/{sop}_mask.png"),
    ] {
        assert!(out.join(&file).is_file(), "{file} missing");
    }
    let mask = image::open(out.join(format!("series/{sop}_mask.png"))).unwrap();
    assert_eq!((mask.width(), mask.height()), (128, 128));
    let index = out.join("dicom_masks.parquet");
    assert_eq!(strings(&index, Table::DicomMasks, "sop_uid"), [sop]);
    assert_eq!(
        strings(&index, Table::DicomMasks, "mask_file"),
        [format!("series/{sop}_mask.png")]
    );
    let line = r.stderr.lines().find(|l| l.contains("notes.txt"));
    assert!(
        line.is_some_and(|l| l.contains("not a slice file")),
        "notes.txt not named as skipped in\n{}",
        r.stderr
    );
    // Without --recursive: no PNG at the top, so an error that names the flag.
    let flat = lungseg(predict_args(&run, &input, &sb.path("flat"), &[])).expect_code(2);
    assert!(flat.stderr.contains("--recursive"), "{}", flat.stderr);
}

/// Two copies of one DICOM slice (one SOP instance UID) in a folder: the second would write over
/// the first's outputs, so it fails alone, named; a stale index from an earlier run is removed.
#[test]
fn dicom_copies_with_one_sop_uid_do_not_overwrite_each_other() {
    let sb = Sandbox::new();
    let run = two_step_run(&sb);
    let input = sb.path("dicom");
    std::fs::create_dir_all(&input).unwrap();
    let ct =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dicom/CT_small.dcm");
    std::fs::copy(&ct, input.join("a.dcm")).unwrap();
    std::fs::copy(&ct, input.join("b.dcm")).unwrap();
    let out = sb.path("out");
    let r = lungseg(predict_args(&run, &input, &out, &[])).expect_code(1);
    assert!(r.stdout.contains("1 of 2 files written"), "{}", r.stdout);
    assert!(
        r.stderr.contains("b.dcm") && r.stderr.contains("like those of"),
        "{}",
        r.stderr
    );
    assert_eq!(
        strings(&out.join("dicom_masks.parquet"), Table::DicomMasks, "input").len(),
        1
    );
    // A later run on PNG slices only leaves no DICOM index behind.
    let pngs = sb.path("pngs");
    write_gray8(&pngs.join("a.png"), 8, 8, vec![100; 64]);
    lungseg(predict_args(&run, &pngs, &out, &[])).ok();
    assert!(!out.join("dicom_masks.parquet").exists());
}
