//! `lungseg prepare` against inputs built to break it: decompression bombs, FIFOs and devices
//! named like slices, non-UTF-8 folder names, a rerun from another tree, `--input` at the wrong
//! level, an `--out` that is a file, and a disk that fills up.

use crate::common::*;
use std::path::Path;
use std::time::Duration;

/// One good 8x8 slice `s-1.png` in the nodule folder `n` (rater 0 marks one pixel).
fn good_nodule(n: &Path) {
    write_gray8(&n.join("images/s-1.png"), 8, 8, vec![100; 64]);
    let mut m = vec![0u8; 64];
    m[9] = 255;
    write_gray8(&n.join("mask-0/s-1.png"), 8, 8, m);
}

/// Patients of one good nodule folder `nodule-1` each.
fn good_tree(tree: &Path, patients: &[&str]) {
    for p in patients {
        good_nodule(&tree.join(p).join("nodule-1"));
    }
}

fn prepare_args(tree: &Path, data: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "prepare".to_string(),
        "--threads".into(),
        "2".into(),
        "--input".into(),
        tree.display().to_string(),
        "--out".into(),
        data.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Enough address space for a normal prepare (or predict) run with two threads, and far too
/// little for any bomb below (each declares 4 GB or more).
const ADDRESS_SPACE: u64 = 3 << 30;

#[test]
fn decompression_bombs_are_rejected_before_allocation_and_the_run_goes_on() {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    good_tree(&tree, &["P1", "P2", "P3"]);
    // 65535x65535: 4.3 GB at 8 bits, 8.6 GB at 16 bits; 34 GB as 16-bit RGBA.
    let bombs = [
        ("P1/nodule-1/images/s-2.png", bomb_png(65535, 65535, 0, 8)),
        ("P2/nodule-1/images/s-2.png", bomb_png(65535, 65535, 0, 16)),
        ("P3/nodule-1/mask-1/s-1.png", bomb_png(65535, 65535, 6, 16)),
    ];
    for (rel, bytes) in &bombs {
        assert!(bytes.len() < 400);
        std::fs::create_dir_all(tree.join(rel).parent().unwrap()).unwrap();
        std::fs::write(tree.join(rel), bytes).unwrap();
    }
    // A 9x9 slice is too large as well under a cap of 64 pixels (the 8x8 slices fit).
    write_gray8(&tree.join("P3/nodule-1/images/s-3.png"), 9, 9, vec![1; 81]);
    write_gray8(
        &tree.join("P3/nodule-1/mask-0/s-3.png"),
        9,
        9,
        vec![255; 81],
    );
    let data = sb.path("data");
    let limited = lungseg_limited(
        prepare_args(&tree, &data, &["--max-pixels", "64"]),
        Limits {
            address_space: Some(ADDRESS_SPACE),
            timeout: Some(Duration::from_secs(120)),
            ..Limits::default()
        },
    );
    let run = limited.run.ok();
    assert!(run.stdout.contains("3 kept"), "{}", run.stdout);
    let rejects = read_rejects(&data);
    let want: Vec<(String, String, Option<String>)> = [
        ("P1/nodule-1/images/s-2.png", "P1"),
        ("P2/nodule-1/images/s-2.png", "P2"),
        ("P3/nodule-1/mask-1/s-1.png", "P3"),
    ]
    .iter()
    .map(|(p, patient)| (p.to_string(), "too_large".into(), Some(patient.to_string())))
    .collect();
    let bombs_found: Vec<_> = rejects
        .iter()
        .filter(|r| r.0 != "P3/nodule-1/images/s-3.png")
        .cloned()
        .collect();
    assert_eq!(bombs_found, want);
    assert!(rejects.iter().any(|r| r
        == &(
            "P3/nodule-1/images/s-3.png".into(),
            "too_large".into(),
            Some("P3".into())
        )));
    // Default cap: the 9x9 slice is kept.
    let again = sb.path("default-cap");
    lungseg(prepare_args(&tree, &again, &[])).ok();
    assert_eq!(read_shards(&again).len(), 4);
}

#[test]
fn fifos_and_devices_named_like_slices_are_rejected_without_blocking() {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    good_tree(&tree, &["P1", "P2"]);
    mkfifo(&tree.join("P1/nodule-1/images/s-2.png"));
    mkfifo(&tree.join("P2/nodule-1/mask-1/s-1.png"));
    std::fs::create_dir_all(tree.join("P2/nodule-1/mask-2")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", tree.join("P1/nodule-1/images/s-3.png")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", tree.join("P2/nodule-1/mask-2/s-1.png")).unwrap();
    // A regular file longer than any PNG under the cap: not read to the end.
    std::fs::write(tree.join("P2/nodule-1/images/s-4.png"), vec![0u8; 2 << 20]).unwrap();
    let data = sb.path("data");
    let limited = lungseg_limited(
        prepare_args(&tree, &data, &["--max-pixels", "1000"]),
        Limits {
            address_space: Some(ADDRESS_SPACE),
            timeout: Some(Duration::from_secs(60)),
            ..Limits::default()
        },
    );
    assert!(!limited.timed_out, "prepare hung on a FIFO");
    let run = limited.run.ok();
    assert!(run.stdout.contains("2 kept"), "{}", run.stdout);
    let reasons: Vec<(String, String)> = read_rejects(&data)
        .into_iter()
        .map(|(p, r, _)| (p, r))
        .collect();
    let want: Vec<(String, String)> = [
        ("P1/nodule-1/images/s-2.png", "not_a_regular_file"),
        ("P1/nodule-1/images/s-3.png", "not_a_regular_file"),
        ("P2/nodule-1/images/s-4.png", "too_large"),
        ("P2/nodule-1/mask-1/s-1.png", "not_a_regular_file"),
        ("P2/nodule-1/mask-2/s-1.png", "not_a_regular_file"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(reasons, want);
}

#[test]
fn non_utf8_folder_names_are_rejected_instead_of_merged() {
    use std::os::unix::ffi::OsStrExt;
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    good_tree(&tree, &["P1"]);
    let odd = |b: &[u8]| std::ffi::OsStr::from_bytes(b).to_os_string();
    // Two patients whose names differ only in a byte that is not UTF-8: read lossily, both
    // would be `P-\u{fffd}`.
    for name in [odd(b"P-\xff"), odd(b"P-\xfe")] {
        good_nodule(&tree.join(name).join("nodule-1"));
    }
    good_nodule(&tree.join("P2").join(odd(b"n-\xe9")));
    let data = sb.path("data");
    prepare(&tree, &data, &[]);
    let kept: Vec<String> = read_shards(&data).into_iter().map(|r| r.slice_id).collect();
    assert_eq!(kept, ["P1/nodule-1/s-1"]);
    let rejects = read_rejects(&data);
    let want: Vec<(String, String, Option<String>)> = [
        ("P-\\xfe", "P-\\xfe"),
        ("P-\\xff", "P-\\xff"),
        ("P2/n-\\xe9", "P2"),
    ]
    .iter()
    .map(|(p, patient)| {
        (
            p.to_string(),
            "non_utf8_name".into(),
            Some(patient.to_string()),
        )
    })
    .collect();
    assert_eq!(rejects, want);
}

#[test]
fn a_rerun_from_another_or_a_changed_tree_is_refused() {
    let sb = Sandbox::new();
    let (a, b) = (sb.path("a"), sb.path("b"));
    good_tree(&a, &["P1", "P2"]);
    good_tree(&b, &["P1", "P2"]);
    let data = sb.path("data");
    prepare(&a, &data, &[]);
    let again = prepare(&a, &data, &[]);
    assert!(
        again.stdout.contains("already complete"),
        "{}",
        again.stdout
    );
    let other = lungseg(prepare_args(&b, &data, &[])).expect_code(2);
    assert_eq!(other.stderr.trim().lines().count(), 1, "{}", other.stderr);
    let (ca, cb) = (a.canonicalize().unwrap(), b.canonicalize().unwrap());
    let want = format!(
        "was prepared from {}, not from {}",
        ca.display(),
        cb.display()
    );
    assert!(other.stderr.contains(&want), "{}", other.stderr);
    assert!(
        other.stderr.contains("--overwrite or another --out"),
        "{}",
        other.stderr
    );
    // The same folder after a slice was added is another input too.
    good_tree(&a, &["P3"]);
    let changed = lungseg(prepare_args(&a, &data, &[])).expect_code(2);
    assert!(
        changed
            .stderr
            .contains("as it was then (2 slice files; it now has 3"),
        "{}",
        changed.stderr
    );
    prepare(&b, &data, &["--overwrite"]);
    assert!(prepare(&b, &data, &[]).stdout.contains("already complete"));
}

#[test]
fn input_at_the_wrong_level_exits_2_with_the_folder_meant() {
    let sb = Sandbox::new();
    let root = sb.path("wrap/LIDC-IDRI-slices");
    good_tree(&root, &["LIDC-IDRI-0001"]);
    let root = root.canonicalize().unwrap();
    let data = sb.path("data");
    std::fs::create_dir_all(sb.path("empty")).unwrap();
    let hint = format!("did you mean --input {}?", root.display());
    for (input, want) in [
        (sb.path("wrap"), hint.as_str()),
        (root.join("LIDC-IDRI-0001"), hint.as_str()),
        (root.join("LIDC-IDRI-0001/nodule-1"), hint.as_str()),
        (sb.path("empty"), "expected <patient>/<nodule>/images/*.png"),
    ] {
        // Without -q too: one line, not a warning per folder read at the wrong level.
        let loud = prepare_args(&input, &data, &[])
            .into_iter()
            .filter(|a| a != "-q");
        let r = lungseg(loud).expect_code(2);
        assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
        assert!(r.stderr.contains("no slices found"), "{}", r.stderr);
        assert!(r.stderr.contains(want), "{input:?}: {}", r.stderr);
    }
    assert!(!data.exists(), "a refused prepare writes nothing");
}

#[test]
fn an_out_that_is_a_file_exits_2_with_one_line() {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    good_tree(&tree, &["P1"]);
    let file = sb.path("a-file");
    std::fs::write(&file, b"x").unwrap();
    for out in [file.clone(), file.join("data")] {
        let r = lungseg(prepare_args(&tree, &out, &[])).expect_code(2);
        assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
        assert!(r.stderr.contains("is not a directory"), "{}", r.stderr);
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

/// A small tmpfs at `dir` (as root), unmounted when dropped; `None` where mounting is not
/// allowed.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(dir.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_failed_write_leaves_no_temporaries_and_a_rerun_starts_clean() {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    synth(&tree, 6, 8, &[]);
    // A full disk: a 1 MiB tmpfs where mounting is allowed (root); elsewhere a 256 KiB limit on
    // the size of any file the child writes, which fails the write the same way.
    let disk = SmallDisk::mount(&sb.path("disk"), "1m");
    let (data, limits) = match &disk {
        Some(d) => (d.0.join("data"), Limits::default()),
        None => (
            sb.path("data"),
            Limits {
                file_size: Some(256 << 10),
                ..Limits::default()
            },
        ),
    };
    let failed = lungseg_limited(prepare_args(&tree, &data, &["--shard-rows", "8"]), limits).run;
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    assert_eq!(temporaries(&data), Vec::<String>::new());
    assert!(!data.join("prepare.json").exists());
    assert!(
        !data.join("shards").exists(),
        "partial shards are removed too"
    );
    drop(disk);
    // With room again, a rerun into the same place completes.
    let rerun = prepare(&tree, &data, &["--shard-rows", "8"]);
    assert!(
        !rerun.stdout.contains("already complete"),
        "{}",
        rerun.stdout
    );
    assert!(data.join("prepare.json").is_file());
}
