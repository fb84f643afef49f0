//! Tests of the whole generator: determinism, layout, rater gaps, odd sizes and 16-bit HU.

use super::*;
use image::DynamicImage;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

fn config(out: &Path, patients: usize, seed: u64, odd_sizes: bool, hu16: bool) -> SynthConfig {
    SynthConfig {
        out: out.to_path_buf(),
        patients,
        seed,
        odd_sizes,
        hu16,
        ..SynthConfig::default()
    }
}

fn generate(patients: usize, seed: u64, odd: bool, hu: bool) -> (tempfile::TempDir, SynthReport) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tree");
    let report = run(&config(&out, patients, seed, odd, hu)).unwrap();
    (dir, report)
}

/// Every file under `root`, by relative path, with its bytes.
fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// One nodule folder, decoded.
struct NoduleDir {
    images: BTreeMap<String, DynamicImage>,
    /// Per rater: `None` when the folder is absent.
    masks: Vec<Option<BTreeMap<String, DynamicImage>>>,
}

impl NoduleDir {
    /// Union mask area per image name (0 when no rater marked anything).
    fn union_area(&self, name: &str) -> usize {
        let img = &self.images[name];
        let mut union = vec![false; (img.width() * img.height()) as usize];
        for m in self.masks.iter().flatten() {
            if let Some(m) = m.get(name) {
                for (u, &v) in union.iter_mut().zip(m.as_luma8().unwrap().as_raw()) {
                    *u |= v == 255;
                }
            }
        }
        union.iter().filter(|&&u| u).count()
    }
}

/// Decodes a tree: patient → nodules.
fn read_tree(root: &Path) -> BTreeMap<String, BTreeMap<String, NoduleDir>> {
    let mut tree = BTreeMap::new();
    for p in names(root) {
        if p == MARKER {
            continue;
        }
        let mut nodules = BTreeMap::new();
        for n in names(&root.join(&p)) {
            let dir = root.join(&p).join(&n);
            let load = |sub: &str| -> BTreeMap<String, DynamicImage> {
                names(&dir.join(sub))
                    .into_iter()
                    .map(|f| {
                        let img = image::open(dir.join(sub).join(&f)).unwrap();
                        (f, img)
                    })
                    .collect()
            };
            let entries = names(&dir);
            for e in &entries {
                assert!(
                    e == "images" || (0..RATERS).any(|k| *e == format!("mask-{k}")),
                    "{e}"
                );
            }
            let masks = (0..RATERS)
                .map(|k| {
                    let sub = format!("mask-{k}");
                    entries.contains(&sub).then(|| load(&sub))
                })
                .collect();
            nodules.insert(
                n,
                NoduleDir {
                    images: load("images"),
                    masks,
                },
            );
        }
        tree.insert(p, nodules);
    }
    tree
}

#[test]
fn same_seed_gives_identical_bytes_for_any_thread_count() {
    let (a, ra) = generate(6, 7, true, true);
    let dir = tempfile::tempdir().unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let rb = pool
        .install(|| run(&config(dir.path(), 6, 7, true, true)))
        .unwrap();
    assert_eq!(ra, rb);
    let (fa, fb) = (files(&a.path().join("tree")), files(dir.path()));
    assert!(fa.len() > 20);
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    assert!(fa == fb, "same seed gave different bytes");
}

#[test]
fn different_seed_gives_a_different_tree() {
    let (a, _) = generate(4, 7, false, false);
    let (b, _) = generate(4, 8, false, false);
    assert_ne!(files(&a.path().join("tree")), files(&b.path().join("tree")));
}

#[test]
fn layout_counts_and_mask_values() {
    let (dir, report) = generate(20, 7, false, false);
    let root = dir.path().join("tree");
    let tree = read_tree(&root);
    let ids: Vec<String> = (1..=20).map(patient_id).collect();
    assert_eq!(tree.keys().cloned().collect::<Vec<_>>(), ids);
    assert!(root.join(MARKER).is_file());

    let (mut nodules, mut slices, mut mask_files) = (0, 0, 0);
    let (mut absent_folders, mut absent_files, mut empty, mut nonempty) = (0, 0, 0, 0);
    for nods in tree.values() {
        assert!((1..=3).contains(&nods.len()));
        let expected: Vec<String> = (1..=nods.len()).map(|k| format!("nodule-{k}")).collect();
        assert_eq!(nods.keys().cloned().collect::<Vec<_>>(), expected);
        for nod in nods.values() {
            nodules += 1;
            let n = nod.images.len();
            assert!((3..=10).contains(&n), "{n} slices");
            let expected: BTreeSet<String> = (0..n).map(|z| format!("slice-{z}.png")).collect();
            assert_eq!(
                nod.images.keys().cloned().collect::<BTreeSet<_>>(),
                expected
            );
            for img in nod.images.values() {
                let g = img.as_luma8().expect("8-bit grayscale image");
                assert_eq!(g.dimensions(), (128, 128));
            }
            assert!(
                nod.masks.iter().any(Option::is_some),
                "a nodule with no rater"
            );
            for m in &nod.masks {
                let Some(m) = m else {
                    absent_folders += 1;
                    continue;
                };
                assert!(!m.is_empty(), "an empty mask folder");
                absent_files += n - m.len();
                for (name, mask) in m {
                    mask_files += 1;
                    assert!(nod.images.contains_key(name), "{name} has no image");
                    let g = mask.as_luma8().expect("8-bit mask");
                    assert_eq!(
                        g.dimensions(),
                        nod.images[name].as_luma8().unwrap().dimensions()
                    );
                    assert!(g.as_raw().iter().all(|&v| v == 0 || v == 255));
                }
            }
            for name in nod.images.keys() {
                slices += 1;
                if nod.union_area(name) == 0 {
                    empty += 1;
                } else {
                    nonempty += 1;
                }
            }
        }
    }
    assert_eq!(
        report,
        SynthReport {
            patients: 20,
            nodules,
            slices,
            mask_files,
            odd_size_slices: 0,
            hu16_slices: 0,
            series: 0,
            outlines: 0,
        }
    );
    eprintln!(
        "{slices} slices: {empty} with an empty union; {absent_folders} absent rater folders, \
         {absent_files} absent mask files"
    );
    assert!(absent_folders > 0, "no missing rater folder");
    assert!(absent_files > 0, "no missing single mask file");
    assert!(empty > 0, "no slice with an empty union");
    assert!(
        nonempty * 10 >= slices * 7,
        "{nonempty} of {slices} slices marked"
    );
}

#[test]
fn odd_sizes_give_smaller_and_larger_slices_with_matching_masks() {
    let (dir, report) = generate(20, 7, true, false);
    let tree = read_tree(&dir.path().join("tree"));
    let (mut smaller, mut larger, mut odd) = (0, 0, 0);
    for nod in tree.values().flat_map(|n| n.values()) {
        let dims: BTreeSet<(u32, u32)> = nod
            .images
            .values()
            .map(|i| (i.width(), i.height()))
            .collect();
        assert_eq!(dims.len(), 1, "one size per nodule");
        for (name, img) in &nod.images {
            let (w, h) = (img.width(), img.height());
            if (w, h) != (128, 128) {
                odd += 1;
            }
            smaller += usize::from(w < 128 && h < 128);
            larger += usize::from(w > 128 && h > 128);
            for m in nod.masks.iter().flatten() {
                if let Some(m) = m.get(name) {
                    assert_eq!((m.width(), m.height()), (w, h));
                }
            }
        }
    }
    assert!(
        smaller > 0 && larger > 0,
        "smaller {smaller}, larger {larger}"
    );
    assert_eq!(report.odd_size_slices, odd);
    assert!(odd * 2 < report.slices, "most slices keep 128 × 128");
}

#[test]
fn hu16_nodules_hold_hounsfield_units() {
    let (dir, report) = generate(20, 7, false, true);
    let tree = read_tree(&dir.path().join("tree"));
    let (mut sixteen, mut checked) = (0, 0);
    let sigma = HU_PALETTE.noise_sigma;
    for nod in tree.values().flat_map(|n| n.values()) {
        let is16 = matches!(
            nod.images.values().next(),
            Some(DynamicImage::ImageLuma16(_))
        );
        for img in nod.images.values() {
            assert_eq!(
                matches!(img, DynamicImage::ImageLuma16(_)),
                is16,
                "mixed depths"
            );
        }
        for m in nod.masks.iter().flatten().flat_map(|m| m.values()) {
            assert!(m.as_luma8().is_some(), "masks stay 8-bit");
        }
        if !is16 {
            continue;
        }
        sixteen += nod.images.len();
        let hu = |img: &DynamicImage| -> Vec<f64> {
            let raw = img.as_luma16().unwrap().as_raw();
            assert!(raw.iter().all(|&v| v <= HU_STORED_MAX));
            raw.iter()
                .map(|&v| f64::from(v) - f64::from(HU_OFFSET))
                .collect()
        };
        for img in nod.images.values() {
            let corner = hu(img)[0];
            assert!(
                (HU_PALETTE.air.0 - 5.0 * sigma..=HU_PALETTE.air.1 + 5.0 * sigma).contains(&corner),
                "air at {corner} HU"
            );
        }
        // On the most-marked slice, the brightest marked pixel is the nodule's peak.
        let best = nod.images.keys().max_by_key(|n| nod.union_area(n)).unwrap();
        if nod.union_area(best) < 16 {
            continue;
        }
        let values = hu(&nod.images[best]);
        let mut peak = f64::MIN;
        for m in nod.masks.iter().flatten() {
            if let Some(m) = m.get(best) {
                for (&v, &mk) in values.iter().zip(m.as_luma8().unwrap().as_raw()) {
                    if mk == 255 {
                        peak = peak.max(v);
                    }
                }
            }
        }
        let (lo, hi) = HU_PALETTE.nodule;
        assert!(
            (lo - 40.0 - 2.0 * sigma..=hi + 5.0 * sigma).contains(&peak),
            "nodule peak {peak} HU"
        );
        checked += 1;
    }
    assert!(sixteen > 0, "no 16-bit slices");
    assert_eq!(report.hu16_slices, sixteen);
    assert!(sixteen * 2 < report.slices, "most slices stay 8-bit");
    assert!(checked > 0);
}

#[test]
fn adding_patients_keeps_earlier_patients_identical() {
    let (a, _) = generate(20, 7, true, true);
    let (b, rb) = generate(25, 7, true, true);
    assert_eq!(rb.patients, 25);
    let fa = files(&a.path().join("tree"));
    let fb = files(&b.path().join("tree"));
    let patient_files = |f: &BTreeMap<String, Vec<u8>>, first: usize, last: usize| {
        let ids: BTreeSet<String> = (first..=last).map(patient_id).collect();
        f.iter()
            .filter(|(k, _)| ids.iter().any(|id| k.starts_with(&format!("{id}/"))))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let first_a = patient_files(&fa, 1, 20);
    assert_eq!(
        first_a.len() + 1,
        fa.len(),
        "only the marker is outside the patients"
    );
    assert!(
        first_a == patient_files(&fb, 1, 20),
        "earlier patients changed"
    );
    assert!(!patient_files(&fb, 21, 25).is_empty());
}

#[test]
fn refuses_foreign_folders_and_replaces_previous_trees() {
    let dir = tempfile::tempdir().unwrap();
    // An empty folder is fine.
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    run(&config(&empty, 3, 1, false, false)).unwrap();

    // A folder with anything else in it is refused, and left alone.
    let foreign = dir.path().join("foreign");
    fs::create_dir_all(foreign.join("LIDC-IDRI-0001")).unwrap();
    let err = run(&config(&foreign, 2, 1, false, false)).unwrap_err();
    assert!(matches!(err, SynthError::NotSynthTree { .. }));
    assert!(
        err.to_string().starts_with(&foreign.display().to_string()),
        "{err}"
    );
    assert_eq!(
        names(&foreign),
        BTreeSet::from(["LIDC-IDRI-0001".to_string()])
    );

    // A synthetic tree with a stray file is refused too.
    fs::write(empty.join("notes.txt"), "mine").unwrap();
    assert!(run(&config(&empty, 2, 1, false, false)).is_err());
    fs::remove_file(empty.join("notes.txt")).unwrap();

    // A file is refused.
    let file = dir.path().join("file");
    fs::write(&file, "x").unwrap();
    assert!(run(&config(&file, 2, 1, false, false)).is_err());

    // A previous tree is replaced: no stale patients remain.
    run(&config(&empty, 2, 1, false, false)).unwrap();
    let fresh = dir.path().join("fresh");
    run(&config(&fresh, 2, 1, false, false)).unwrap();
    assert!(files(&empty) == files(&fresh));
}

#[test]
fn io_errors_lead_with_the_path() {
    let err = SynthError::Io {
        path: PathBuf::from("/x/y.png"),
        cause: std::io::Error::other("disk full"),
    };
    assert_eq!(err.to_string(), "/x/y.png: disk full");
}

/// `cargo test --lib synth::tests::time_100_patients -- --ignored --nocapture`
#[test]
#[ignore = "timing only"]
fn time_100_patients() {
    let dir = tempfile::tempdir().unwrap();
    let t = std::time::Instant::now();
    let r = run(&config(dir.path(), 100, 7, true, true)).unwrap();
    eprintln!("100 patients: {:?} for {r:?}", t.elapsed());
}
