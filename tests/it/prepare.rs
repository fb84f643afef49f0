//! `lungseg prepare` on generated trees: exact pixels, bad input, determinism, interruption.

use crate::common::*;
use pretty_assertions::assert_eq;
use std::collections::BTreeMap;
use std::path::Path;

/// The test's own reading of one slice: (bits, (width, height), image in [0,1], rater bits).
type Expected = (i32, (u32, u32), Vec<f32>, Vec<u8>);

/// The test's own reading of a tree, by slice id.
fn recompute(root: &Path) -> BTreeMap<String, Expected> {
    let mut out = BTreeMap::new();
    for patient in std::fs::read_dir(root).unwrap() {
        let patient = patient.unwrap().path();
        if !patient.is_dir() {
            continue;
        }
        for nodule in std::fs::read_dir(&patient).unwrap() {
            let nodule = nodule.unwrap().path();
            let images = nodule.join("images");
            if !images.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(&images).unwrap() {
                let f = f.unwrap().path();
                let name = f.file_name().unwrap().to_str().unwrap().to_string();
                let img = image::open(&f).unwrap();
                let (w, h) = (img.width(), img.height());
                let (bits, pixels): (i32, Vec<f32>) = match img {
                    image::DynamicImage::ImageLuma16(b) => (
                        16,
                        b.into_raw()
                            .into_iter()
                            .map(|v| ((v as f32 - 1024.0).clamp(-1350.0, 150.0) + 1350.0) / 1500.0)
                            .collect(),
                    ),
                    other => (
                        8,
                        other
                            .to_luma8()
                            .into_raw()
                            .into_iter()
                            .map(|v| v as f32 / 255.0)
                            .collect(),
                    ),
                };
                let mut raters = vec![0u8; (w * h) as usize];
                for k in 0..4 {
                    let m = nodule.join(format!("mask-{k}")).join(&name);
                    if let Ok(mask) = image::open(&m) {
                        for (r, v) in raters.iter_mut().zip(mask.to_luma8().into_raw()) {
                            if v > 0 {
                                *r |= 1 << k;
                            }
                        }
                    }
                }
                let id = format!(
                    "{}/{}/{}",
                    patient.file_name().unwrap().to_str().unwrap(),
                    nodule.file_name().unwrap().to_str().unwrap(),
                    name.trim_end_matches(".png")
                );
                out.insert(id, (bits, (w, h), pixels, raters));
            }
        }
    }
    out
}

#[test]
fn shards_are_bit_exact_against_an_independent_reading() {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    synth(&tree, 12, 3, &["--odd-sizes", "--hu16"]);
    let data = sb.path("data");
    prepare(
        &tree,
        &data,
        &["--shard-rows", "50", "--row-group-rows", "8"],
    );
    let rows = read_shards(&data);
    let expected = recompute(&tree);
    let non_empty: Vec<&String> = expected
        .iter()
        .filter(|(_, v)| v.3.iter().any(|&b| b != 0))
        .map(|(k, _)| k)
        .collect();
    let mut kept: Vec<&String> = rows.iter().map(|r| &r.slice_id).collect();
    kept.sort();
    assert_eq!(kept, non_empty, "kept slices = slices with a marked pixel");
    let mut saw = (false, false);
    for r in &rows {
        let (bits, (w, h), pixels, raters) = &expected[&r.slice_id];
        assert_eq!(
            (r.source_bits, r.width, r.height),
            (*bits, *w as i32, *h as i32)
        );
        assert_eq!(&r.image, pixels, "{}", r.slice_id);
        assert_eq!(&r.rater_bits, raters, "{}", r.slice_id);
        let union: Vec<u8> = raters.iter().map(|&b| u8::from(b != 0)).collect();
        assert_eq!(r.mask, union);
        assert_eq!(r.mask_pixels, union.iter().map(|&v| v as i64).sum::<i64>());
        saw.0 |= r.source_bits == 16;
        saw.1 |= r.width != 128 || r.height != 128;
    }
    assert!(
        saw.0 && saw.1,
        "the tree must exercise 16-bit and odd sizes: {saw:?}"
    );
    let ids: Vec<String> = rows.iter().map(|r| r.slice_id.clone()).collect();
    assert_eq!(
        strings(&data.join("manifest.parquet"), Table::Manifest, "slice_id"),
        ids
    );
}

#[test]
fn sixteen_bit_and_seed_compat_match_hand_computed_values() {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    let n = tree.join("P1/nodule-1");
    write_gray8(&n.join("images/slice-0.png"), 4, 1, vec![0, 75, 150, 255]);
    write_gray8(&n.join("mask-0/slice-0.png"), 4, 1, vec![255, 0, 0, 0]);
    write_gray16(&n.join("images/slice-1.png"), 4, 1, vec![1024, 24, 0, 2000]);
    write_gray8(&n.join("mask-1/slice-1.png"), 4, 1, vec![0, 0, 0, 1]);
    prepare(&tree, &sb.path("auto"), &[]);
    let rows = read_shards(&sb.path("auto"));
    // auto: 8-bit v/255; 16-bit (v - 1024) HU windowed to [-1350, 150].
    assert_eq!(rows[0].image, vec![0.0, 75.0 / 255.0, 150.0 / 255.0, 1.0]);
    let want16 = [0.9f32, 0.233_333_33, 0.217_333_33, 1.0];
    for (got, want) in rows[1].image.iter().zip(want16) {
        assert!((got - want).abs() < 1e-6, "{:?}", rows[1].image);
    }
    assert_eq!((rows[0].raters_present, rows[1].raters_present), (1, 2));
    prepare(&tree, &sb.path("compat"), &["--window", "seed-compat"]);
    let rows = read_shards(&sb.path("compat"));
    // notebook: np.clip(v, -1350, 150) → (v + 1350) / 1500 on the 8-bit value.
    let want8 = [0.9f32, 0.95, 1.0, 1.0];
    for (got, want) in rows[0].image.iter().zip(want8) {
        assert!((got - want).abs() < 1e-6, "{:?}", rows[0].image);
    }
    // cv2.IMREAD_GRAYSCALE keeps the high byte of 16-bit: 1024 >> 8 = 4 → 1354/1500.
    assert!((rows[1].image[0] - 1354.0 / 1500.0).abs() < 1e-6);
}

#[test]
fn small_and_large_slices_keep_their_native_size() {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    for (name, w, h) in [("slice-0.png", 90u32, 100u32), ("slice-1.png", 160, 200)] {
        let n = (w * h) as usize;
        write_gray8(
            &tree.join("P1/nodule-1/images").join(name),
            w,
            h,
            vec![7; n],
        );
        let mut m = vec![0u8; n];
        m[n / 2] = 255;
        write_gray8(&tree.join("P1/nodule-1/mask-2").join(name), w, h, m);
    }
    prepare(&tree, &sb.path("data"), &[]);
    let rows = read_shards(&sb.path("data"));
    let sizes: Vec<(i32, i32)> = rows.iter().map(|r| (r.height, r.width)).collect();
    assert_eq!(sizes, vec![(100, 90), (200, 160)]);
    assert!(rows
        .iter()
        .all(|r| r.image.len() == (r.height * r.width) as usize));
    // The notebook's behaviour (drop slices smaller than its 128 patch) is an explicit option.
    prepare(&tree, &sb.path("compat"), &["--min-size", "128"]);
    assert_eq!(read_shards(&sb.path("compat")).len(), 1);
}

#[test]
fn every_bad_input_is_rejected_with_its_code_and_good_slices_survive() {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    let good = |rel: &str| {
        write_gray8(&tree.join(rel).join("images/s-1.png"), 8, 8, vec![100; 64]);
        let mut m = vec![0u8; 64];
        m[9] = 255;
        write_gray8(&tree.join(rel).join("mask-0/s-1.png"), 8, 8, m);
    };
    good("P1/nodule-1");
    good("P2/nodule-1");
    good("P3/nodule-1");
    // truncated image and garbage image
    let png = std::fs::read(tree.join("P1/nodule-1/images/s-1.png")).unwrap();
    std::fs::write(
        tree.join("P1/nodule-1/images/s-2.png"),
        &png[..png.len() / 2],
    )
    .unwrap();
    std::fs::write(tree.join("P1/nodule-1/images/s-3.png"), b"garbage").unwrap();
    // a garbage mask next to a good rater: the slice is kept with the good rater
    good("P4/nodule-1");
    std::fs::create_dir_all(tree.join("P4/nodule-1/mask-1")).unwrap();
    std::fs::write(tree.join("P4/nodule-1/mask-1/s-1.png"), b"junk").unwrap();
    // mask size mismatch
    write_gray8(
        &tree.join("P2/nodule-1/mask-2/s-1.png"),
        4,
        4,
        vec![255; 16],
    );
    // nodule folder without images/
    std::fs::create_dir_all(tree.join("P2/nodule-2/mask-0")).unwrap();
    // a file where a folder belongs (patient level, and images/ as a file)
    std::fs::write(tree.join("not-a-patient.dcm"), b"x").unwrap();
    std::fs::create_dir_all(tree.join("P3/nodule-2")).unwrap();
    std::fs::write(tree.join("P3/nodule-2/images"), b"x").unwrap();
    // symlink loop, and a link back to an ancestor
    std::os::unix::fs::symlink("loop", tree.join("P3/loop")).unwrap();
    std::os::unix::fs::symlink("..", tree.join("P3/nodule-1/up")).unwrap();
    std::os::unix::fs::symlink(tree.join("P1"), tree.join("P1/nodule-9")).unwrap();
    // stray files are ignored and counted
    std::fs::write(tree.join(".DS_Store"), b"x").unwrap();
    std::fs::write(tree.join("P1/Thumbs.db"), b"x").unwrap();
    std::fs::write(tree.join("P1/nodule-1/images/notes.txt"), b"x").unwrap();
    // an unusual, non-UTF-8 file name is still a good slice
    use std::os::unix::ffi::OsStrExt;
    let odd = std::ffi::OsStr::from_bytes(b"s-\xff 7.png");
    std::fs::copy(
        tree.join("P3/nodule-1/images/s-1.png"),
        tree.join("P3/nodule-1/images").join(odd),
    )
    .unwrap();
    std::fs::copy(
        tree.join("P3/nodule-1/mask-0/s-1.png"),
        tree.join("P3/nodule-1/mask-0").join(odd),
    )
    .unwrap();

    let data = sb.path("data");
    let run = prepare(&tree, &data, &[]);
    assert!(run.stdout.contains("prepare:"), "{}", run.stdout);
    let rejects: Vec<(String, String)> = read_rejects(&data)
        .into_iter()
        .map(|(p, r, _)| (p, r))
        .collect();
    let want: Vec<(String, String)> = [
        ("P1/nodule-1/images/s-2.png", "png_decode"),
        ("P1/nodule-1/images/s-3.png", "png_decode"),
        ("P1/nodule-9", "symlink_loop"),
        ("P2/nodule-1/mask-2/s-1.png", "mask_size_mismatch"),
        ("P2/nodule-2", "no_images_dir"),
        ("P3/loop", "symlink_loop"),
        ("P3/nodule-1/up", "symlink_loop"),
        ("P3/nodule-2/images", "not_a_directory"),
        ("P4/nodule-1/mask-1/s-1.png", "png_decode"),
        ("not-a-patient.dcm", "not_a_directory"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(rejects, want);
    let patients: Vec<Option<String>> = read_rejects(&data).into_iter().map(|r| r.2).collect();
    assert_eq!(
        patients.iter().filter(|p| p.is_none()).count(),
        1,
        "only the root-level file lacks a patient"
    );
    let kept: Vec<String> = read_shards(&data).into_iter().map(|r| r.slice_id).collect();
    assert_eq!(
        kept,
        [
            "P1/nodule-1/s-1",
            "P2/nodule-1/s-1",
            "P3/nodule-1/s-1",
            "P3/nodule-1/s-\u{fffd} 7",
            "P4/nodule-1/s-1"
        ]
    );
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("prepare.json")).unwrap()).unwrap();
    assert_eq!(record["counts"]["files_ignored"], 3, "{record}");
    assert_eq!(record["counts"]["slices_rejected"], 2);
    assert!(run.stderr.is_empty() || !run.stderr.contains("panicked"));
}

#[test]
fn thread_count_does_not_change_the_output() {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    synth(&tree, 10, 11, &["--odd-sizes"]);
    prepare(
        &tree,
        &sb.path("one"),
        &["--threads", "1", "--shard-rows", "30"],
    );
    prepare(
        &tree,
        &sb.path("two"),
        &["--threads", "2", "--shard-rows", "30"],
    );
    let strip = |mut files: Vec<(String, Vec<u8>)>| {
        files.retain(|(name, _)| name != "prepare.json");
        files
    };
    let one = strip(tree_bytes(&sb.path("one")));
    let two = strip(tree_bytes(&sb.path("two")));
    assert_eq!(
        one.iter().map(|f| &f.0).collect::<Vec<_>>(),
        two.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    assert!(
        one == two,
        "shards and tables must be byte-identical across thread counts"
    );
}

#[test]
fn a_killed_prepare_is_detected_and_rebuilt_identically() {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    synth(&tree, 80, 5, &[]);
    let clean = sb.path("clean");
    prepare(&tree, &clean, &["--shard-rows", "8", "--threads", "1"]);
    let data = sb.path("data");
    let mut child = std::process::Command::new(bin())
        .args([
            "-q",
            "prepare",
            "--shard-rows",
            "8",
            "--threads",
            "1",
            "--input",
        ])
        .arg(&tree)
        .arg("--out")
        .arg(&data)
        .spawn()
        .unwrap();
    let first = data.join("shards").join("slices-00000.parquet");
    let t0 = std::time::Instant::now();
    while !first.exists() && t0.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !data.join("prepare.json").exists(),
        "prepare finished before it could be killed; make the tree larger"
    );
    let rerun = prepare(&tree, &data, &["--shard-rows", "8", "--threads", "1"]);
    assert!(!rerun.stdout.contains("nothing to do"), "{}", rerun.stdout);
    let strip = |mut files: Vec<(String, Vec<u8>)>| {
        files.retain(|(name, _)| name != "prepare.json");
        files
    };
    assert!(strip(tree_bytes(&clean)) == strip(tree_bytes(&data)));
}

#[test]
fn rerun_does_nothing_and_changed_settings_need_overwrite() {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    synth(&tree, 3, 1, &[]);
    let data = sb.path("data");
    prepare(&tree, &data, &[]);
    let again = prepare(&tree, &data, &["--threads", "1"]);
    assert!(again.stdout.contains("nothing to do"), "{}", again.stdout);
    let changed = lungseg([
        "prepare".as_ref(),
        "--input".as_ref(),
        tree.as_os_str(),
        "--out".as_ref(),
        data.as_os_str(),
        "--keep-empty".as_ref(),
    ])
    .expect_code(2);
    assert!(changed.stderr.contains("--overwrite"), "{}", changed.stderr);
    let over = prepare(&tree, &data, &["--keep-empty", "--overwrite"]);
    assert!(!over.stdout.contains("nothing to do"));
}

#[test]
fn bad_arguments_and_missing_input_exit_2_with_one_line() {
    let sb = Sandbox::new();
    let bad =
        lungseg(["prepare", "--input", "x", "--out", "y", "--threads", "many"]).expect_code(2);
    assert_eq!(bad.stderr.trim().lines().count(), 1, "{}", bad.stderr);
    let missing = lungseg([
        "prepare".as_ref(),
        "--input".as_ref(),
        sb.path("nope").as_os_str(),
        "--out".as_ref(),
        sb.path("out").as_os_str(),
    ])
    .expect_code(2);
    assert_eq!(
        missing.stderr.trim().lines().count(),
        1,
        "{}",
        missing.stderr
    );
    assert!(missing.stderr.contains("nope"), "{}", missing.stderr);
    let inside = lungseg([
        "prepare".as_ref(),
        "--input".as_ref(),
        sb.root().as_os_str(),
        "--out".as_ref(),
        sb.path("out").as_os_str(),
    ])
    .expect_code(2);
    assert!(
        inside.stderr.contains("inside the input tree"),
        "{}",
        inside.stderr
    );
}

#[test]
fn empty_slices_are_counted_and_kept_only_on_request() {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    write_gray8(&tree.join("P/n/images/a-1.png"), 4, 4, vec![1; 16]);
    write_gray8(&tree.join("P/n/mask-0/a-1.png"), 4, 4, vec![0; 16]);
    write_gray8(&tree.join("P/n/images/a-2.png"), 4, 4, vec![1; 16]);
    write_rgb8(
        &tree.join("P/n/mask-3/a-2.png"),
        4,
        4,
        [255, 0, 0].repeat(16),
    );
    prepare(&tree, &sb.path("d1"), &[]);
    let rows = read_shards(&sb.path("d1"));
    assert_eq!(rows.len(), 1);
    // A pure-red colour mask reads as gray (9797*255)>>15 = 76 > 0, as OpenCV reads it.
    assert_eq!((rows[0].mask_pixels, rows[0].raters_present), (16, 8));
    prepare(&tree, &sb.path("d2"), &["--keep-empty"]);
    assert_eq!(read_shards(&sb.path("d2")).len(), 2);
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sb.path("d1/prepare.json")).unwrap()).unwrap();
    assert_eq!(record["counts"]["slices_empty"], 1);
    assert_eq!(record["counts"]["colour_files"], 1);
}

#[test]
fn python_polars_and_pyarrow_read_every_table() {
    if !python_has(&["polars", "pyarrow"]) {
        return;
    }
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    synth(&tree, 6, 2, &[]);
    std::fs::write(tree.join("stray.bin"), b"x").unwrap();
    let data = sb.path("data");
    prepare(&tree, &data, &[]);
    lungseg([
        "-q".as_ref(),
        "split".as_ref(),
        "--data".as_ref(),
        data.as_os_str(),
    ])
    .ok();
    let out = python_script("check_tables.py", &[&data]);
    for table in ["slices", "manifest", "rejects", "split", "slice_index"] {
        assert!(out.contains(&format!("ok {table}")), "{out}");
    }
}

#[test]
fn an_unreadable_folder_is_rejected_and_the_run_goes_on() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    let perm = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    perm(sb.root(), 0o755);
    let tree = sb.path("tree");
    for p in ["P1", "P2"] {
        write_gray8(
            &tree.join(p).join("nodule-1/images/s-1.png"),
            4,
            4,
            vec![9; 16],
        );
        write_gray8(
            &tree.join(p).join("nodule-1/mask-0/s-1.png"),
            4,
            4,
            vec![255; 16],
        );
    }
    perm(&tree.join("P2/nodule-1"), 0o000);
    let out_parent = sb.path("out");
    std::fs::create_dir_all(&out_parent).unwrap();
    perm(&out_parent, 0o777);
    let data = out_parent.join("data");
    // Root reads every folder, so as root the binary runs as `nobody` (a copy it can execute).
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let mut cmd = if is_root {
        let copy = sb.path("lungseg");
        std::fs::copy(bin(), &copy).unwrap();
        perm(&copy, 0o755);
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(copy);
        c
    } else {
        std::process::Command::new(bin())
    };
    let out = cmd
        .args(["-q", "prepare", "--input"])
        .arg(&tree)
        .arg("--out")
        .arg(&data)
        .output()
        .unwrap();
    perm(&tree.join("P2/nodule-1"), 0o755);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rejects = read_rejects(&data);
    assert_eq!(
        rejects,
        vec![(
            "P2/nodule-1".to_string(),
            "unreadable_dir".to_string(),
            Some("P2".to_string())
        )]
    );
    let kept: Vec<String> = read_shards(&data).into_iter().map(|r| r.slice_id).collect();
    assert_eq!(kept, ["P1/nodule-1/s-1"]);
}

/// The codec of every column chunk of `shard`, by column name (deduplicated across row groups).
fn column_codecs(shard: &Path) -> BTreeMap<String, String> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(std::fs::File::open(shard).unwrap()).unwrap();
    let mut codecs = BTreeMap::new();
    for rg in reader.metadata().row_groups() {
        for c in rg.columns() {
            let name = c.column_path().string();
            let codec = format!("{:?}", c.compression());
            let previous = codecs.insert(name.clone(), codec.clone());
            assert!(previous.is_none_or(|p| p == codec), "{name}: mixed codecs");
        }
    }
    codecs
}

#[test]
fn image_compression_changes_only_the_image_codec_and_the_size() {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    synth(&tree, 6, 19, &["--odd-sizes"]);
    prepare(&tree, &sb.path("plain"), &[]);
    prepare(&tree, &sb.path("zstd"), &["--image-compression", "zstd"]);
    // Same rows and pixels either way.
    let plain = read_shards(&sb.path("plain"));
    let zstd = read_shards(&sb.path("zstd"));
    assert!(!plain.is_empty());
    assert!(
        plain == zstd,
        "decoded shard contents must not depend on the codec"
    );
    // The default stores only `image` plain; everything else is zstd in both.
    let shard = |d: &str| sb.path(d).join("shards/slices-00000.parquet");
    let plain_codecs = column_codecs(&shard("plain"));
    let zstd_codecs = column_codecs(&shard("zstd"));
    for (name, codec) in &plain_codecs {
        let want = if name == "image" {
            "UNCOMPRESSED"
        } else {
            "ZSTD"
        };
        assert!(codec.starts_with(want), "default: {name} is {codec}");
        assert!(
            zstd_codecs[name].starts_with("ZSTD"),
            "zstd: {name} is {}",
            zstd_codecs[name]
        );
    }
    assert_eq!(plain_codecs.len(), 13);
    // f32 pixels of 8-bit sources compress about 3x.
    let size = |d: &str| std::fs::metadata(shard(d)).unwrap().len() as f64;
    let ratio = size("plain") / size("zstd");
    assert!(
        (2.0..5.0).contains(&ratio),
        "plain/zstd shard size {ratio:.2}"
    );
    // The setting is recorded, and a rerun with the other codec needs --overwrite.
    let record = std::fs::read_to_string(sb.path("zstd").join("prepare.json")).unwrap();
    assert!(
        record.contains("\"image_compression\": \"zstd\""),
        "{record}"
    );
    lungseg([
        "prepare",
        "--input",
        tree.to_str().unwrap(),
        "--out",
        sb.path("zstd").to_str().unwrap(),
    ])
    .expect_code(2);
}
