//! `prepare --source tcia` on synthetic TCIA downloads (`synth --format tcia`): crops around each
//! nodule with the readers as rater bits, `nodules.parquet`, and rejects for every kind of bad
//! file while the run goes on.

use crate::common::*;
use arrow_array::{Int32Array, StringArray};
use lungseg::table::{column, read_table};
use std::path::{Path, PathBuf};

/// A synthetic download of `patients` patients with `slices` slices of `size`² pixels; returns
/// its path and the nodule count `synth` reported.
fn tcia_tree(sb: &Sandbox, patients: usize, slices: usize, size: usize) -> (PathBuf, usize) {
    let out = sb.path("tcia");
    let run = lungseg([
        "synth",
        "--format",
        "tcia",
        "--out",
        out.to_str().unwrap(),
        "--patients",
        &patients.to_string(),
        "--slices",
        &slices.to_string(),
        "--size",
        &size.to_string(),
    ])
    .ok();
    let words: Vec<&str> = run.stdout.split_whitespace().collect();
    let nodules = words
        .windows(2)
        .find(|w| w[1].starts_with("nodule"))
        .and_then(|w| w[0].parse().ok())
        .unwrap_or_else(|| panic!("no nodule count in {:?}", run.stdout));
    (out, nodules)
}

/// The folder of the first CT series of `patient` in a synthetic download (not the chest X-ray
/// reading's folder).
fn first_series_dir(tree: &Path, patient: &str) -> PathBuf {
    let study = std::fs::read_dir(tree.join(patient))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir() && !p.ends_with("xray-reading"))
        .unwrap();
    let series = std::fs::read_dir(study).unwrap().next().unwrap();
    series.unwrap().path()
}

fn prepare_tcia(input: &Path, out: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["--source", "tcia"];
    args.extend_from_slice(extra);
    prepare(input, out, &args)
}

/// (nodule_id, patient_id, outlines, reader_bits) of `nodules.parquet`.
fn nodules(data: &Path) -> Vec<(String, String, i32, i32)> {
    let p = data.join("nodules.parquet");
    let mut out = Vec::new();
    for b in read_table(&p, &Table::Nodules.spec()).unwrap() {
        let s = |n| column::<StringArray>(&b, n, &p).unwrap();
        let i = |n| column::<Int32Array>(&b, n, &p).unwrap();
        for r in 0..b.num_rows() {
            out.push((
                s("nodule_id").value(r).to_string(),
                s("patient_id").value(r).to_string(),
                i("outlines").value(r),
                i("reader_bits").value(r),
            ));
        }
    }
    out
}

#[test]
fn the_download_becomes_nodule_crops_with_readers_as_rater_bits() {
    let sb = Sandbox::new();
    let (tree, synth_nodules) = tcia_tree(&sb, 3, 24, 192);
    let data = sb.path("data");
    let run = prepare_tcia(&tree, &data, &[]);
    assert!(run.stdout.contains("3 patients"), "{}", run.stdout);

    // Every synthetic nodule is one cluster; the fourth reader skipped each series' first one.
    let table = nodules(&data);
    assert_eq!(table.len(), synth_nodules);
    assert!(table
        .iter()
        .all(|(_, _, outlines, _)| (3..=4).contains(outlines)));
    assert!(table.iter().any(|(_, _, _, bits)| *bits == 0b0111));
    // The third patient has two series, named apart.
    let tags: std::collections::BTreeSet<String> = table
        .iter()
        .filter(|(_, p, _, _)| p == "LIDC-IDRI-0003")
        .map(|(n, _, _, _)| n.split("-n").next().unwrap().to_string())
        .collect();
    assert_eq!(tags.len(), 2, "{tags:?}");

    let rows = read_shards(&data);
    assert!(!rows.is_empty());
    for r in &rows {
        assert_eq!(
            (r.height, r.width, r.source_bits),
            (128, 128, 16),
            "{}",
            r.slice_id
        );
        assert_ne!(r.raters_present, 0);
        let nodule = r.slice_id.split('/').nth(1).unwrap();
        assert!(table.iter().any(|(n, ..)| n == nodule), "{nodule}");
    }
    // The masks sit on the nodules: soft tissue (30 HU → 0.92 in the lung window) under the
    // union mask (whose largest reader overshoots into the lung), lung and body around it.
    let (mut inside, mut n_in, mut outside, mut n_out) = (0.0f64, 0usize, 0.0f64, 0usize);
    for r in &rows {
        for (v, m) in r.image.iter().zip(&r.mask) {
            if *m == 1 {
                inside += f64::from(*v);
                n_in += 1;
            } else {
                outside += f64::from(*v);
                n_out += 1;
            }
        }
    }
    let (inside, outside) = (inside / n_in as f64, outside / n_out as f64);
    assert!(
        inside > 0.7 && inside - outside > 0.2,
        "inside {inside}, outside {outside}"
    );

    // The repeated z is the one reject; the chest X-ray reading and the README are skipped.
    let rejects = read_rejects(&data);
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert_eq!(rejects[0].1, "duplicate_z");
    assert!(rejects[0].0.ends_with("zzduplicate.dcm"));
    assert_eq!(rejects[0].2.as_deref(), Some("LIDC-IDRI-0002"));

    // The manifest carries the series geometry; the rerun is skipped.
    let uids = strings(
        &data.join("manifest.parquet"),
        Table::Manifest,
        "series_uid",
    );
    assert!(uids
        .iter()
        .all(|u| u.starts_with("1.2.826.0.1.3680043.10.1009.")));
    let again = prepare_tcia(&tree, &data, &[]);
    assert!(
        again.stdout.contains("already complete"),
        "{}",
        again.stdout
    );
    // Another setting is refused, naming it.
    let other = lungseg([
        "prepare",
        "--source",
        "tcia",
        "--crop-size",
        "96",
        "--input",
        tree.to_str().unwrap(),
        "--out",
        data.to_str().unwrap(),
    ])
    .expect_code(2);
    assert!(
        other
            .stderr
            .contains("different settings (crop_size 128 -> 96)"),
        "{}",
        other.stderr
    );

    // The crops train like the slice tree's: split works on them by patient.
    lungseg(["split", "--data", data.to_str().unwrap()]).ok();
}

#[test]
fn full_slices_keep_whole_slices_per_series() {
    let sb = Sandbox::new();
    let (tree, _) = tcia_tree(&sb, 2, 16, 160);
    let data = sb.path("data");
    prepare_tcia(&tree, &data, &["--full-slices"]);
    let rows = read_shards(&data);
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| (r.height, r.width) == (160, 160)));
    let ids: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.slice_id.as_str()).collect();
    assert_eq!(ids.len(), rows.len(), "slice ids are unique");
    assert!(rows.iter().all(|r| !r.slice_id.contains("-n")));
}

#[test]
fn bad_files_become_rejects_and_the_rest_is_prepared() {
    let sb = Sandbox::new();
    let (tree, _) = tcia_tree(&sb, 2, 16, 128);
    let series_dir = |patient: &str| first_series_dir(&tree, patient);
    let one = series_dir("LIDC-IDRI-0001");
    let mut dcm: Vec<PathBuf> = std::fs::read_dir(&one)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    dcm.sort();
    // A truncated slice, a .dcm that is not DICOM, a compressed (JPEG 2000) file.
    let bytes = std::fs::read(&dcm[0]).unwrap();
    std::fs::write(&dcm[0], &bytes[..300]).unwrap();
    std::fs::write(one.join("junk.dcm"), b"not a dicom file").unwrap();
    let j2k = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dicom/JPEG2000.dcm");
    std::fs::copy(&j2k, one.join("compressed.dcm")).unwrap();
    // XML: not well-formed; a reading of a series that is not there; a second reading of a
    // series; a contour on a slice that does not exist.
    let xml = std::fs::read_dir(&one)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "xml"))
        .unwrap();
    let text = std::fs::read_to_string(&xml).unwrap();
    std::fs::write(one.join("broken.xml"), "<LidcReadMessage><unclosed>").unwrap();
    let other_series = text.replacen("<SeriesInstanceUid>", "<SeriesInstanceUid>9.9.9", 1);
    std::fs::write(tree.join("LIDC-IDRI-0002/orphan.xml"), other_series).unwrap();
    std::fs::write(one.join("zz-second.xml"), &text).unwrap();
    let z_open = text.find("<imageZposition>").unwrap();
    let z_close = z_open + text[z_open..].find("</imageZposition>").unwrap();
    let moved = format!(
        "{}<imageZposition>9999{}",
        &text[..z_open],
        &text[z_close..]
    )
    .replacen("<imageSOP_UID>", "<imageSOP_UID>7.", 1);
    std::fs::write(&xml, moved).unwrap();

    // A copy of a whole patient folder: its series are met again.
    let copy = tree.join("LIDC-IDRI-0002-copy");
    std::fs::create_dir_all(&copy).unwrap();
    let original = series_dir("LIDC-IDRI-0002");
    let copied = copy.join("study/series");
    std::fs::create_dir_all(&copied).unwrap();
    for f in std::fs::read_dir(&original).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, copied.join(f.file_name().unwrap())).unwrap();
    }

    let data = sb.path("data");
    let run = prepare_tcia(&tree, &data, &[]);
    assert!(run.stdout.contains("kept"), "{}", run.stdout);
    let rejects = read_rejects(&data);
    let reasons: std::collections::BTreeSet<&str> = rejects.iter().map(|r| r.1.as_str()).collect();
    for want in [
        "dicom_decode",
        "unsupported_transfer_syntax",
        "xml_malformed",
        "xml_without_series",
        "duplicate_xml",
        "contour_without_slice",
        "duplicate_series",
    ] {
        assert!(reasons.contains(want), "no {want} in {rejects:?}");
    }
    let named = |suffix: &str| {
        rejects
            .iter()
            .find(|r| r.0.ends_with(suffix))
            .unwrap()
            .1
            .clone()
    };
    assert_eq!(named("junk.dcm"), "dicom_decode");
    assert_eq!(named("compressed.dcm"), "unsupported_transfer_syntax");
    assert_eq!(named("broken.xml"), "xml_malformed");
    assert_eq!(named("orphan.xml"), "xml_without_series");
    assert_eq!(named("zz-second.xml"), "duplicate_xml");
    assert_eq!(
        named("LIDC-IDRI-0002-copy/study/series"),
        "duplicate_series"
    );
    assert!(!read_shards(&data).is_empty());
}

#[test]
fn a_folder_without_ct_series_is_a_usage_error() {
    let sb = Sandbox::new();
    let empty = sb.path("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), "hi").unwrap();
    let data = sb.path("data");
    let refused = |flag: &str| {
        let args = [
            "prepare",
            flag,
            "--input",
            empty.to_str().unwrap(),
            "--out",
            data.to_str().unwrap(),
        ];
        lungseg(args.iter().filter(|a| !a.is_empty())).expect_code(2)
    };
    let run = refused("--source=tcia");
    assert!(
        run.stderr.contains("no CT series with a reading found"),
        "{}",
        run.stderr
    );
    assert!(!data.join("prepare.json").exists());
    // --full-slices belongs to the TCIA source.
    let run = refused("--full-slices");
    assert!(
        run.stderr.contains("only to --source tcia"),
        "{}",
        run.stderr
    );
}

/// CT_small.dcm (pydicom's test file, committed under tests/fixtures/dicom): HU = stored x
/// RescaleSlope + RescaleIntercept equal pydicom's. Golden numbers from
/// tests/fixtures/dicom/golden.md (pydicom code there).
#[test]
fn dicom_hu_equal_pydicom_on_ct_small() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dicom/CT_small.dcm");
    let (header, hu) = lungseg::pixels::dicom::read_hu(&path, 1 << 24).unwrap();
    assert_eq!((header.rows, header.columns), (128, 128));
    let golden = golden_ct_small();
    assert_eq!(header.z, golden.z);
    assert_eq!(header.instance_number, golden.instance);
    assert_eq!(header.sop_uid, golden.sop_uid);
    let at = |r: usize, c: usize| hu[r * 128 + c];
    for &((r, c), v) in &golden.pixels {
        assert_eq!(at(r, c), v, "HU at ({r}, {c})");
    }
    let min = hu.iter().copied().fold(f32::INFINITY, f32::min);
    let max = hu.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = hu.iter().map(|&v| f64::from(v)).sum();
    assert_eq!((min, max, sum), (golden.min, golden.max, golden.sum));
    // The JPEG 2000 file is refused with its transfer syntax, not decoded or panicked on.
    let j2k = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dicom/JPEG2000.dcm");
    let err = lungseg::pixels::dicom::read_header(&j2k, 1 << 24).unwrap_err();
    assert!(err.to_string().contains("1.2.840.10008.1.2.4.9"), "{err}");
}

/// What tests/fixtures/dicom/golden.md gives for CT_small.dcm (pydicom 3.0.2).
struct CtSmall {
    z: f64,
    instance: Option<i32>,
    sop_uid: &'static str,
    pixels: Vec<((usize, usize), f32)>,
    min: f32,
    max: f32,
    sum: f64,
}

fn golden_ct_small() -> CtSmall {
    CtSmall {
        z: -75.699997,
        instance: Some(1),
        sop_uid: "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322",
        pixels: vec![
            ((0, 0), -849.0),
            ((10, 20), -839.0),
            ((64, 64), 904.0),
            ((127, 127), -115.0),
            ((100, 3), 33.0),
        ],
        min: -896.0,
        max: 1167.0,
        sum: -1_950_906.0,
    }
}

#[test]
fn eval_reports_nodule_recall_by_size_band_from_nodules_parquet() {
    let sb = Sandbox::new();
    let (tree, _) = tcia_tree(&sb, 4, 20, 160);
    let data = sb.path("data");
    prepare_tcia(&tree, &data, &[]);
    lungseg([
        "-q",
        "split",
        "--data",
        data.to_str().unwrap(),
        "--val-ratio",
        "0.5",
    ])
    .ok();
    let run = sb.path("run");
    train_tiny(
        &data,
        &run,
        &["--max-epochs", "1", "--max-steps-per-epoch", "2"],
    )
    .ok();
    let eval = lungseg([
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--device",
        "cpu",
        "--checkpoint",
        "last",
    ])
    .ok();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval/summary.json")).unwrap())
            .unwrap();
    let bands = summary["nodule_recall_by_size"].as_array().unwrap();
    assert!(!bands.is_empty(), "{summary}");
    let total: u64 = bands.iter().map(|b| b["nodules"].as_u64().unwrap()).sum();
    assert_eq!(total, summary["nodules"].as_u64().unwrap());
    for b in bands {
        let name = b["band"].as_str().unwrap();
        assert!(["<6mm", "6-10mm", ">10mm"].contains(&name));
        assert!(eval.stdout.contains(name), "{}", eval.stdout);
    }
    // The report shows them under nodule recall, and ends with the next steps.
    lungseg(["report", "--runs", sb.root().to_str().unwrap()]).ok();
    let md = std::fs::read_to_string(sb.path("report/report.md")).unwrap();
    for b in bands {
        let row = format!("| nodule recall, {} |", b["band"].as_str().unwrap());
        assert!(md.contains(&row), "{row} missing from\n{md}");
    }
    assert!(md.contains("## Next steps"), "{md}");
}

#[test]
fn full_slices_with_keep_empty_keep_every_slice_of_every_series() {
    let sb = Sandbox::new();
    let (tree, _) = tcia_tree(&sb, 1, 12, 96);
    let data = sb.path("data");
    prepare_tcia(&tree, &data, &["--full-slices", "--keep-empty"]);
    let rows = read_shards(&data);
    let ks: Vec<i32> = rows.iter().map(|r| r.slice_index.unwrap()).collect();
    assert_eq!(ks, (0..12).collect::<Vec<_>>());
    assert!(rows.iter().any(|r| r.mask_pixels == 0));
    assert!(rows.iter().any(|r| r.mask_pixels > 0));
}

#[test]
fn the_download_given_without_source_tcia_names_the_flag() {
    let sb = Sandbox::new();
    let (tree, _) = tcia_tree(&sb, 1, 4, 64);
    let run = lungseg([
        "prepare",
        "--input",
        tree.to_str().unwrap(),
        "--out",
        sb.path("data").to_str().unwrap(),
    ])
    .expect_code(2);
    assert!(
        run.stderr.contains("did you mean --source tcia?"),
        "{}",
        run.stderr
    );
}

#[test]
fn readings_kept_apart_are_found_with_xml_root() {
    let sb = Sandbox::new();
    let (tree, synth_nodules) = tcia_tree(&sb, 2, 16, 128);
    let xml_dir = sb.path("tcia-lidc-xml/157");
    std::fs::create_dir_all(&xml_dir).unwrap();
    let mut moved = 0;
    for patient in ["LIDC-IDRI-0001", "LIDC-IDRI-0002"] {
        for study in std::fs::read_dir(tree.join(patient)).unwrap() {
            let study = study.unwrap().path();
            if !study.is_dir() {
                continue;
            }
            for series in std::fs::read_dir(&study).unwrap() {
                let series = series.unwrap().path();
                for f in std::fs::read_dir(&series).into_iter().flatten() {
                    let f = f.unwrap().path();
                    if f.extension().is_some_and(|e| e == "xml") && series.is_dir() {
                        moved += 1;
                        std::fs::rename(&f, xml_dir.join(format!("{moved}.xml"))).unwrap();
                    }
                }
            }
        }
    }
    assert_eq!(moved, 2);
    let data = sb.path("data");
    let run = lungseg([
        "prepare",
        "--source",
        "tcia",
        "--input",
        tree.to_str().unwrap(),
        "--out",
        data.to_str().unwrap(),
    ])
    .expect_code(2);
    assert!(run.stderr.contains("pass --xml-root"), "{}", run.stderr);
    let xml_root = sb.path("tcia-lidc-xml");
    prepare_tcia(&tree, &data, &["--xml-root", xml_root.to_str().unwrap()]);
    assert_eq!(nodules(&data).len(), synth_nodules);
}

/// `predict` on a DICOM series (a whole TCIA download, `--recursive`): one mask per slice named
/// by its SOP instance UID, and `dicom_masks.parquet` listing them in z order: the mask series.
#[test]
fn predict_writes_a_mask_series_for_a_dicom_series() {
    let sb = Sandbox::new();
    let run = two_step_run(&sb);
    let (tree, _) = tcia_tree(&sb, 1, 6, 96);
    let out = sb.path("masks");
    let r = lungseg(predict_args(&run, &tree, &out, &["--recursive"])).ok();
    assert!(r.stdout.contains("6 of 6 files written"), "{}", r.stdout);
    assert!(r.stdout.contains("dicom_masks.parquet"), "{}", r.stdout);
    let index = out.join("dicom_masks.parquet");
    let sops = strings(&index, Table::DicomMasks, "sop_uid");
    let files = strings(&index, Table::DicomMasks, "mask_file");
    assert_eq!(sops.len(), 6);
    for (sop, file) in sops.iter().zip(&files) {
        assert!(file.ends_with(&format!("{sop}_mask.png")), "{file}");
        assert!(out.join(file).is_file(), "{file}");
    }
    // The synthetic series numbers its SOP UIDs by slice from the lowest z: z order is UID order.
    let last: Vec<u32> = sops
        .iter()
        .map(|s| s.rsplit('.').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(last, (1..=6).collect::<Vec<_>>());
}

/// The DICOM and XML a hostile or broken download can hold: an element declaring 4 GiB in a
/// 200-byte file, a slice with BitsStored 0, a RescaleIntercept that is not a number, a contour
/// point far outside the slice. Each is a reject row; the run goes on, in bounded memory, under
/// an address-space limit that a 4 GiB allocation would break.
#[test]
fn hostile_dicom_and_xml_are_rejects_in_bounded_memory() {
    let sb = Sandbox::new();
    let (tree, _) = tcia_tree(&sb, 1, 12, 128);
    let series = first_series_dir(&tree, "LIDC-IDRI-0001");
    let mut slices: Vec<PathBuf> = std::fs::read_dir(&series)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    slices.sort();
    // 1. A 4 GiB element in a tiny file.
    let mut bomb = vec![0u8; 128];
    bomb.extend_from_slice(b"DICM");
    let uid = b"1.2.840.10008.1.2.1\0";
    bomb.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
    bomb.extend_from_slice(&(uid.len() as u16).to_le_bytes());
    bomb.extend_from_slice(uid);
    bomb.extend_from_slice(&[0x09, 0x00, 0x10, 0x00, b'O', b'B', 0, 0]);
    bomb.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    bomb.extend_from_slice(&[0; 16]);
    std::fs::write(series.join("bomb.dcm"), &bomb).unwrap();
    // 2. BitsStored 0 and 3. RescaleIntercept "NaN" in two real slices (patched in place).
    let patch = |path: &Path, from: &[u8], to: &[u8]| {
        let mut b = std::fs::read(path).unwrap();
        let at = b.windows(from.len()).position(|w| w == from).unwrap();
        b[at..at + to.len()].copy_from_slice(to);
        std::fs::write(path, b).unwrap();
    };
    patch(
        &slices[0],
        b"\x28\x00\x01\x01US\x02\x00\x0c\x00",
        b"\x28\x00\x01\x01US\x02\x00\x00\x00",
    );
    patch(&slices[1], b"-1024 ", b"NaN   ");
    // 4. A contour point at (60000, 60000).
    let xml = std::fs::read_dir(&series)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "xml"))
        .unwrap();
    let text = std::fs::read_to_string(&xml).unwrap();
    std::fs::write(&xml, text.replacen("<xCoord>", "<xCoord>600", 1)).unwrap();

    let data = sb.path("data");
    let mut args = vec!["prepare", "--source", "tcia", "--input"];
    let (t, d) = (tree.to_str().unwrap(), data.to_str().unwrap());
    args.extend([t, "--out", d]);
    let limited = lungseg_limited(
        args,
        Limits {
            address_space: Some(3 << 30),
            timeout: Some(std::time::Duration::from_secs(120)),
            ..Limits::default()
        },
    );
    limited.run.ok();
    assert!(
        limited.max_rss_kib < 400 << 10,
        "peak RSS {} KiB",
        limited.max_rss_kib
    );
    let rejects = read_rejects(&data);
    let reason = |suffix: &str| {
        rejects
            .iter()
            .find(|r| r.0.ends_with(suffix))
            .map(|r| r.1.clone())
            .unwrap_or_else(|| panic!("no reject for {suffix} in {rejects:?}"))
    };
    assert_eq!(reason("bomb.dcm"), "dicom_decode");
    let name = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_string();
    assert_eq!(reason(&name(&slices[0])), "dicom_pixels");
    assert_eq!(reason(&name(&slices[1])), "dicom_pixels");
    assert!(
        rejects.iter().any(|r| r.1 == "contour_invalid"),
        "{rejects:?}"
    );
}
