//! `lungseg train` end to end on CPU: it learns, it resumes exactly, its outputs follow the
//! contracts, and bad inputs are clear errors.

use crate::common::*;
use lungseg::run::epochs::{read_epochs, EpochMetrics};
use pretty_assertions::assert_eq;
use std::path::Path;

/// Epoch rows without the timing columns, which legitimately differ between runs, and without
/// the run id (the run directory's name).
fn without_timing(rows: Vec<EpochMetrics>) -> Vec<EpochMetrics> {
    rows.into_iter()
        .map(|r| EpochMetrics {
            seconds: 0.0,
            train_patches_per_s: 0.0,
            run_id: String::new(),
            ..r
        })
        .collect()
}

#[test]
fn a_short_cpu_run_learns_to_segment_nodules() {
    // Measured (see README, "The learning test"): with this recipe the best epoch reaches a
    // pooled validation Dice of about 0.8 on this tree within 14 epochs; the bar sits below it.
    let sb = Sandbox::new();
    let data = dataset(&sb, 16, 21, &[]);
    let run = sb.path("run");
    let out = lungseg([
        "-q",
        "train",
        "--data",
        data.to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
        "--device",
        "cpu",
        "--base-channels",
        "8",
        "--patch",
        "64",
        "--fg-crop",
        "0.8",
        "--lr",
        "3e-3",
        "--max-epochs",
        "12",
        "--patience",
        "12",
        "--max-steps-per-epoch",
        "10",
    ])
    .ok();
    let rows = read_epochs(&run.join("epochs.parquet")).unwrap();
    let best = rows.last().unwrap().best_epoch.expect("a best epoch");
    let best = rows.iter().find(|r| r.epoch == best).expect("a best epoch");
    assert!(best.val_dice >= LEARNED_DICE, "{}\n{rows:#?}", out.stdout);
    assert!(
        best.val_precision >= 0.3,
        "the kept epoch must not be degenerate: {best:#?}"
    );
    assert!(best.val_recall >= 0.5, "{best:#?}");
    assert!(run.join("best.safetensors").is_file());
}

/// The pooled validation Dice the learning test must reach (set just under what it reliably
/// reaches; see the test's comment).
const LEARNED_DICE: f64 = 0.6;

#[test]
fn resume_after_interruption_equals_an_uninterrupted_run() {
    let sb = Sandbox::new();
    let data = dataset(&sb, 8, 3, &[]);
    let common = [
        "--max-epochs",
        "3",
        "--max-steps-per-epoch",
        "6",
        "--seed",
        "5",
    ];
    let full = sb.path("full");
    train_tiny(&data, &full, &common).ok();

    // Ctrl-C in the middle of epoch 2, then --resume.
    let part = sb.path("part");
    let mut args: Vec<String> = vec!["-q".into(), "train".into(), "--data".into()];
    args.push(data.display().to_string());
    args.extend(["--run".into(), part.display().to_string()]);
    args.extend(TINY.iter().chain(common.iter()).map(|s| s.to_string()));
    let child = std::process::Command::new(bin())
        .args(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let epochs = part.join("epochs.parquet");
    let t0 = std::time::Instant::now();
    while !epochs.exists() && t0.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let interrupted = child.wait_with_output().unwrap();
    let status = interrupted.status;
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(part.join("train_state.json")).unwrap()).unwrap();
    if status.code() == Some(130) {
        assert_eq!(state["finished"], false, "{state}");
        // The interrupt message says how to go on.
        let said = String::from_utf8_lossy(&interrupted.stderr);
        assert!(said.contains("--resume"), "{said}");
        let again = train_tiny(&data, &part, &common).expect_code(2);
        assert!(again.stderr.contains("--resume"), "{}", again.stderr);
    }
    train_tiny(&data, &part, &[&common[..], &["--resume"]].concat()).ok();
    assert_eq!(
        without_timing(read_epochs(&epochs).unwrap()),
        without_timing(read_epochs(&full.join("epochs.parquet")).unwrap())
    );
    assert_eq!(
        std::fs::read(part.join("last.safetensors")).unwrap(),
        std::fs::read(full.join("last.safetensors")).unwrap(),
        "resumed weights must equal uninterrupted weights"
    );
    // Killed outright after an epoch: the next --resume redoes the unfinished epoch.
    let hard = sb.path("hard");
    std::fs::create_dir_all(&hard).unwrap();
    train_tiny(
        &data,
        &hard,
        &[
            "--max-epochs",
            "1",
            "--max-steps-per-epoch",
            "6",
            "--seed",
            "5",
        ],
    )
    .ok();
    let mut st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hard.join("train_state.json")).unwrap()).unwrap();
    st["finished"] = serde_json::Value::Bool(false);
    st["stopping"]["max_epochs"] = serde_json::json!(3);
    std::fs::write(hard.join("train_state.json"), st.to_string()).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hard.join("config.json")).unwrap()).unwrap();
    cfg["config"]["settings"]["max_epochs"] = serde_json::json!(3);
    std::fs::write(hard.join("config.json"), cfg.to_string()).unwrap();
    train_tiny(&data, &hard, &[&common[..], &["--resume"]].concat()).ok();
    assert_eq!(
        without_timing(read_epochs(&hard.join("epochs.parquet")).unwrap())
            .into_iter()
            .map(|r| EpochMetrics {
                run_id: String::new(),
                ..r
            })
            .collect::<Vec<_>>(),
        without_timing(read_epochs(&full.join("epochs.parquet")).unwrap())
            .into_iter()
            .map(|r| EpochMetrics {
                run_id: String::new(),
                ..r
            })
            .collect::<Vec<_>>()
    );
}

#[test]
fn outputs_follow_their_contracts_and_reruns_skip() {
    let sb = Sandbox::new();
    let data = dataset(&sb, 6, 4, &[]);
    let run = sb.path("run");
    let first = train_tiny(
        &data,
        &run,
        &["--max-epochs", "2", "--max-steps-per-epoch", "2"],
    )
    .ok();
    assert!(
        first.stdout.starts_with("train: done; 2 epochs"),
        "{}",
        first.stdout
    );
    let rows = read_epochs(&run.join("epochs.parquet")).unwrap();
    assert_eq!(rows.iter().map(|r| r.epoch).collect::<Vec<_>>(), vec![1, 2]);
    for r in &rows {
        assert_eq!(r.run_id, "run");
        assert_eq!(r.threshold, 0.35);
        assert_eq!(r.monitor, "fbeta(beta=2)");
        let total = r.tp + r.fp + r.fn_ + r.tn;
        let val_pixels: i64 = 128
            * 128
            * (strings(&data.join("val.parquet"), Table::SliceIndex, "slice_id").len() as i64);
        assert_eq!(total, val_pixels, "pooled over every validation pixel");
    }
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    for key in [
        "data_fingerprint",
        "device",
        "git_revision",
        "seed",
        "config",
    ] {
        assert!(cfg.get(key).is_some(), "config.json lacks {key}: {cfg}");
    }
    assert_eq!(cfg["device"], "cpu");
    // The CUDA arithmetic is part of the resolved config (TF32 unless `--precision f32`).
    assert_eq!(cfg["config"]["precision"], "tf32", "{cfg}");
    let names = safetensor_names(&run.join("last.safetensors"));
    assert!(names.contains(&"d1.net.0.weight".to_string()), "{names:?}");
    assert!(
        names.contains(&"u2.net.4.running_var".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"out.bias".to_string()), "{names:?}");
    assert!(run.join("last.optim.safetensors").is_file());
    let again = train_tiny(
        &data,
        &run,
        &["--max-epochs", "2", "--max-steps-per-epoch", "2"],
    )
    .ok();
    assert!(
        again.stdout.contains("already finished"),
        "{}",
        again.stdout
    );
    if python_has(&["polars", "pyarrow"]) {
        let out = python_script("check_tables.py", &[&run]);
        assert!(out.contains("ok epochs"), "{out}");
    }
}

fn safetensor_names(path: &Path) -> Vec<String> {
    let tensors = candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap();
    let mut names: Vec<String> = tensors.into_keys().collect();
    names.sort();
    names
}

#[test]
fn same_seed_gives_the_same_first_epoch() {
    let sb = Sandbox::new();
    let data = dataset(&sb, 6, 6, &[]);
    let args = [
        "--max-epochs",
        "1",
        "--max-steps-per-epoch",
        "3",
        "--seed",
        "9",
    ];
    train_tiny(&data, &sb.path("a"), &args).ok();
    train_tiny(&data, &sb.path("b"), &args).ok();
    let a = without_timing(read_epochs(&sb.path("a/epochs.parquet")).unwrap());
    let b = without_timing(read_epochs(&sb.path("b/epochs.parquet")).unwrap());
    assert_eq!(a, b);
    let other = [
        "--max-epochs",
        "1",
        "--max-steps-per-epoch",
        "3",
        "--seed",
        "10",
    ];
    train_tiny(&data, &sb.path("c"), &other).ok();
    let c = read_epochs(&sb.path("c/epochs.parquet")).unwrap();
    assert_ne!(a[0].train_loss, c[0].train_loss);
}

#[test]
fn folds_select_validation_patients() {
    let sb = Sandbox::new();
    let data = dataset(&sb, 9, 2, &["--folds", "3"]);
    let run = sb.path("run");
    train_tiny(
        &data,
        &run,
        &[
            "--fold",
            "1",
            "--max-epochs",
            "1",
            "--max-steps-per-epoch",
            "1",
        ],
    )
    .ok();
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    let total = strings(&data.join("manifest.parquet"), Table::Manifest, "slice_id").len();
    let (t, v) = (
        cfg["train_slices"].as_u64().unwrap(),
        cfg["val_slices"].as_u64().unwrap(),
    );
    assert_eq!((t + v) as usize, total);
    assert!(v > 0 && t > 0);
    let other = Sandbox::new();
    let nofold = dataset(&other, 4, 2, &[]);
    let e = train_tiny(&nofold, &sb.path("r2"), &["--fold", "0"]).expect_code(2);
    assert!(e.stderr.contains("--folds"), "{}", e.stderr);
}

#[test]
fn bad_inputs_are_one_line_errors_with_exit_code_2() {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    synth(&tree, 4, 1, &[]);
    let data = sb.path("data");
    prepare(&tree, &data, &[]);
    let no_split = train_tiny(&data, &sb.path("r"), &[]).expect_code(2);
    assert!(no_split.stderr.contains("split"), "{}", no_split.stderr);
    assert_eq!(
        no_split.stderr.trim().lines().count(),
        1,
        "{}",
        no_split.stderr
    );
    let no_data = train_tiny(&sb.path("nothing"), &sb.path("r"), &[]).expect_code(2);
    assert_eq!(
        no_data.stderr.trim().lines().count(),
        1,
        "{}",
        no_data.stderr
    );
    let bad_precision = train_tiny(&data, &sb.path("r"), &["--precision", "f16"]).expect_code(2);
    assert!(
        bad_precision.stderr.contains("tf32") && bad_precision.stderr.contains("f32"),
        "{}",
        bad_precision.stderr
    );
    let bad_flag = train_tiny(&data, &sb.path("r"), &["--lr=-1"]).expect_code(2);
    assert!(bad_flag.stderr.contains("--lr"), "{}", bad_flag.stderr);
    let bad_fusion = train_tiny(&data, &sb.path("r"), &["--fusion", "most"]).expect_code(2);
    assert_eq!(
        bad_fusion.stderr.trim().lines().count(),
        1,
        "{}",
        bad_fusion.stderr
    );
    if !cfg!(feature = "cuda") {
        lungseg(["-q", "split", "--data", data.to_str().unwrap()]).ok();
        let cuda = train_tiny(&data, &sb.path("r"), &["--device", "cuda"]).expect_code(2);
        assert!(cuda.stderr.contains("cuda"), "{}", cuda.stderr);
        // A corrupt checkpoint on --resume.
        let run = sb.path("r3");
        train_tiny(
            &data,
            &run,
            &["--max-epochs", "2", "--max-steps-per-epoch", "1"],
        )
        .ok();
        let mut st: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run.join("train_state.json")).unwrap()).unwrap();
        st["finished"] = serde_json::Value::Bool(false);
        std::fs::write(run.join("train_state.json"), st.to_string()).unwrap();
        std::fs::write(run.join("last.safetensors"), b"not a checkpoint").unwrap();
        let corrupt = train_tiny(
            &data,
            &run,
            &[
                "--max-epochs",
                "2",
                "--max-steps-per-epoch",
                "1",
                "--resume",
            ],
        )
        .expect_code(2);
        assert!(
            corrupt.stderr.contains("last.safetensors"),
            "{}",
            corrupt.stderr
        );
    }
}

/// lungseg's fused CPU kernels and candle's reference ops (`LUNGSEG_KERNELS=reference`) give
/// the same 3-epoch table within 1e-3, at the default learning rate (the notebook's 1e-4).
/// (At the demo's 3e-3 the early epochs are chaotic: there two candle-only variants, the
/// reference and its conv backward done differently, differed by up to 7e-3 in the validation
/// columns; see BENCHMARKS.md.)
#[test]
fn fused_kernels_and_reference_ops_give_the_same_epoch_table() {
    let sb = Sandbox::new();
    let data = dataset(&sb, 16, 21, &[]);
    let run = |kernels: &str| {
        let dir = sb.path(&format!("run-{kernels}"));
        let out = std::process::Command::new(bin())
            .env("LUNGSEG_KERNELS", kernels)
            .args(["-q", "train", "--data", data.to_str().unwrap()])
            .args(["--run", dir.to_str().unwrap(), "--device", "cpu"])
            .args(["--base-channels", "8", "--patch", "64", "--fg-crop", "0.8"])
            .args(["--max-epochs", "3", "--patience", "3"])
            .args(["--max-steps-per-epoch", "10", "--seed", "1"])
            .output()
            .expect("spawn lungseg");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        read_epochs(&dir.join("epochs.parquet")).unwrap()
    };
    let (fused, reference) = (run("fused"), run("reference"));
    assert_eq!(fused.len(), 3);
    assert_eq!(reference.len(), 3);
    for (a, b) in fused.iter().zip(&reference) {
        let pairs = [
            ("train_loss", a.train_loss, b.train_loss),
            ("val_loss", a.val_loss, b.val_loss),
            ("val_recall", a.val_recall, b.val_recall),
            ("val_precision", a.val_precision, b.val_precision),
            ("val_dice", a.val_dice, b.val_dice),
            (
                "val_mean_slice_dice",
                a.val_mean_slice_dice,
                b.val_mean_slice_dice,
            ),
            ("monitor_value", a.monitor_value, b.monitor_value),
        ];
        for (name, x, y) in pairs {
            assert!((x - y).abs() < 1e-3, "epoch {}: {name} {x} vs {y}", a.epoch);
        }
        assert_eq!((a.epoch, a.best_epoch), (b.epoch, b.best_epoch));
    }
}
