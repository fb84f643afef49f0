//! Faults on the run side: kills at every rename of a save, divergence, tampered and stale
//! records, concurrent writers, and the messages and exit codes of bad input.

use crate::common::*;
use lungseg::run::epochs::{read_epochs, EpochMetrics};
use pretty_assertions::assert_eq;
use std::path::Path;

/// Two short epochs of the tiny model.
const SHORT: &[&str] = &[
    "--max-epochs",
    "2",
    "--max-steps-per-epoch",
    "2",
    "--seed",
    "9",
];

fn rows_without_timing(run: &Path) -> Vec<EpochMetrics> {
    read_epochs(&run.join("epochs.parquet"))
        .unwrap()
        .into_iter()
        .map(|r| EpochMetrics {
            seconds: 0.0,
            train_patches_per_s: 0.0,
            run_id: String::new(),
            ..r
        })
        .collect()
}

fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

fn one_line(run: &Run) {
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
}

#[test]
fn a_kill_at_any_rename_of_a_run_then_resume_gives_the_uninterrupted_run() {
    let sb = Sandbox::new();
    let data = dataset(&sb, 4, 2, &[]);
    let full = sb.path("full");
    train_tiny(&data, &full, SHORT).ok();
    let resume: Vec<&str> = SHORT.iter().copied().chain(["--resume"]).collect();
    let mut kills = 0;
    for n in 1.. {
        let run = sb.path(&format!("killed-{n}"));
        let at = n.to_string();
        let killed = train_tiny_with_env(&data, &run, SHORT, &[("LUNGSEG_KILL_AT_RENAME", &at)]);
        if killed.code == 0 {
            break; // the run has fewer renames than n: every one was interrupted once
        }
        kills += 1;
        train_tiny(&data, &run, &resume).ok();
        assert_eq!(
            rows_without_timing(&run),
            rows_without_timing(&full),
            "kill at rename {n}"
        );
        for file in [
            "last.safetensors",
            "best.safetensors",
            "last.optim.safetensors",
        ] {
            assert!(
                bytes(&run.join(file)) == bytes(&full.join(file)),
                "kill at rename {n}: {file} differs"
            );
        }
        let leftovers: Vec<String> = std::fs::read_dir(&run)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains(".gen-") || name.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "kill at rename {n}: {leftovers:?}");
    }
    // config.json, then per epoch: epochs (tmp), state (tmp), and the moves into place.
    assert!(kills >= 8, "only {kills} renames were interrupted");
}

#[test]
fn a_diverging_run_stops_with_exit_1_and_saves_no_weights() {
    let sb = Sandbox::new();
    let data = dataset(&sb, 4, 2, &[]);
    let run = sb.path("run");
    let out = train_tiny(&data, &run, &[SHORT, &["--lr", "1e30", "-q"]].concat()).expect_code(1);
    assert!(out.stderr.contains("diverged"), "{}", out.stderr);
    one_line(&out);
    for file in ["best.safetensors", "last.safetensors", "train_state.json"] {
        assert!(!run.join(file).exists(), "{file} was written");
    }
}

#[test]
fn nan_and_out_of_range_settings_are_refused_before_any_work() {
    let sb = Sandbox::new();
    let data = dataset(&sb, 4, 2, &[]);
    for (flag, value) in [
        ("--tversky-alpha", "nan"),
        ("--weight-decay", "NaN"),
        ("--base-channels", "100000"),
        ("--beta", "0"),
    ] {
        let run = sb.path("run");
        let out = train_tiny(&data, &run, &[flag, value]).expect_code(2);
        assert!(out.stderr.contains(flag), "{flag}: {}", out.stderr);
        one_line(&out);
        assert!(
            !run.exists(),
            "{flag}: a refused run left {}",
            run.display()
        );
    }
    let folds = lungseg([
        "-q",
        "split",
        "--data",
        data.to_str().unwrap(),
        "--folds",
        "9",
        "--overwrite",
    ])
    .expect_code(2);
    assert!(folds.stderr.contains("fold"), "{}", folds.stderr);
}

#[test]
fn tampered_records_are_one_line_input_errors() {
    let sb = Sandbox::new();
    let data = dataset(&sb, 4, 2, &[]);
    let run = sb.path("run");
    // Rename 12 falls in epoch 2's save, after epoch 1's was committed, whether or not either
    // epoch wrote a best checkpoint.
    let halfway = train_tiny_with_env(&data, &run, SHORT, &[("LUNGSEG_KILL_AT_RENAME", "12")]);
    assert_ne!(halfway.code, 0, "the run was meant to be killed");
    let state_path = run.join("train_state.json");
    let state: serde_json::Value = serde_json::from_slice(&bytes(&state_path)).unwrap();
    let resume: Vec<&str> = SHORT.iter().copied().chain(["--resume"]).collect();

    let mut huge = state.clone();
    huge["next_epoch"] = serde_json::json!(u64::MAX);
    std::fs::write(&state_path, huge.to_string()).unwrap();
    let out = train_tiny(&data, &run, &resume).expect_code(2);
    assert!(out.stderr.contains("train_state.json"), "{}", out.stderr);
    one_line(&out);

    std::fs::write(&state_path, b"{ not json").unwrap();
    let out = train_tiny(&data, &run, &resume).expect_code(2);
    assert!(out.stderr.contains("train_state.json"), "{}", out.stderr);
    one_line(&out);

    // A state that disagrees with the epoch table (an epoch table of 1 row, a state at epoch 1).
    let mut behind = state.clone();
    behind["next_epoch"] = serde_json::json!(1);
    behind["stopping"]["best"] = serde_json::json!({"best_value": null, "best_dice": 0.0, "best_epoch": null, "best_scores": null});
    std::fs::write(&state_path, behind.to_string()).unwrap();
    let out = train_tiny(&data, &run, &resume).expect_code(2);
    assert!(out.stderr.contains("epochs.parquet"), "{}", out.stderr);
    one_line(&out);

    std::fs::write(&state_path, state.to_string()).unwrap();
    train_tiny(&data, &run, &resume).ok();
    // A config.json that asks for an absurd network is refused, not allocated.
    let config_path = run.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&bytes(&config_path)).unwrap();
    config["config"]["settings"]["base_channels"] = serde_json::json!(100_000);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let eval = lungseg([
        "-q",
        "eval",
        "--data",
        data.to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
        "--device",
        "cpu",
    ])
    .expect_code(2);
    assert!(eval.stderr.contains("--base-channels"), "{}", eval.stderr);
    one_line(&eval);
}

#[test]
fn stale_results_are_redone_or_refused_never_reported() {
    let sb = Sandbox::new();
    let data = dataset(&sb, 4, 2, &[]);
    let run = sb.path("run");
    let eval = |extra: &[&str]| {
        let mut args = vec!["eval", "--data", data.to_str().unwrap()];
        args.extend([
            "--run",
            run.to_str().unwrap(),
            "--device",
            "cpu",
            "--overlays",
            "0",
        ]);
        args.extend(["--checkpoint", "last"]);
        args.extend_from_slice(extra);
        lungseg(&args)
    };
    train_tiny(&data, &run, SHORT).ok();
    eval(&[]).ok();
    let first: serde_json::Value =
        serde_json::from_slice(&bytes(&run.join("eval/summary.json"))).unwrap();
    assert!(eval(&[]).ok().stdout.contains("already done"));

    // Retrained (another seed): the evaluation is redone, not reported as done.
    train_tiny(
        &data,
        &run,
        &[&SHORT[..4], &["--seed", "10", "--overwrite"]].concat(),
    )
    .ok();
    let again = eval(&[]).ok();
    assert!(!again.stdout.contains("already done"), "{}", again.stdout);
    let second: serde_json::Value =
        serde_json::from_slice(&bytes(&run.join("eval/summary.json"))).unwrap();
    assert_ne!(
        first["checkpoint_fingerprint"],
        second["checkpoint_fingerprint"]
    );

    // The data re-prepared from another tree: resuming or extending the run is refused.
    let tree2 = sb.path("tree2");
    synth(&tree2, 4, 77, &[]);
    prepare(&tree2, &data, &["--overwrite"]);
    lungseg(["-q", "split", "--data", data.to_str().unwrap()]).ok();
    let resumed = train_tiny(
        &data,
        &run,
        &[&SHORT[..4], &["--seed", "10", "--resume"]].concat(),
    )
    .expect_code(2);
    assert!(resumed.stderr.contains("other data"), "{}", resumed.stderr);
    one_line(&resumed);

    // A split whose outputs were deleted is redone, not "already done".
    std::fs::remove_file(data.join("val.parquet")).unwrap();
    let split = lungseg(["split", "--data", data.to_str().unwrap()]).ok();
    assert!(!split.stdout.contains("already done"), "{}", split.stdout);
    assert!(data.join("val.parquet").is_file());
}

#[test]
fn a_second_writer_and_bad_paths_get_one_line_and_exit_2() {
    let sb = Sandbox::new();
    let data = dataset(&sb, 4, 2, &[]);
    let run = sb.path("run");
    std::fs::create_dir_all(&run).unwrap();
    let lock = std::fs::File::create(run.join(".lungseg.lock")).unwrap();
    lock.try_lock().unwrap();
    let second = train_tiny(&data, &run, SHORT).expect_code(2);
    assert!(
        second.stderr.contains("another lungseg process"),
        "{}",
        second.stderr
    );
    one_line(&second);
    drop(lock);

    let file = sb.path("a-file");
    std::fs::write(&file, b"x").unwrap();
    let run_is_file = train_tiny(&data, &file, SHORT).expect_code(2);
    one_line(&run_is_file);
    let no_config =
        train_tiny(&data, &run, &["--config", "/nonexistent/train.toml"]).expect_code(2);
    assert!(
        no_config.stderr.contains("/nonexistent/train.toml"),
        "{}",
        no_config.stderr
    );
    one_line(&no_config);
    // The cause is printed once, not twice ("X: X").
    let text = no_config.stderr.trim();
    let cause = text.rsplit(": ").next().unwrap_or_default();
    assert_eq!(text.matches(cause).count(), 1, "{text}");
}

#[test]
fn a_mis_shaped_checkpoint_is_one_line_even_with_backtraces_on() {
    let sb = Sandbox::new();
    let data = dataset(&sb, 4, 2, &[]);
    let run = sb.path("run");
    let other = sb.path("other");
    train_tiny(&data, &run, SHORT).ok();
    train_tiny(&data, &other, &[SHORT, &["--base-channels", "8"]].concat()).ok();
    std::fs::copy(run.join("last.safetensors"), sb.path("own.safetensors")).unwrap();
    std::fs::copy(other.join("last.safetensors"), run.join("last.safetensors")).unwrap();
    let args = [
        "eval",
        "--data",
        data.to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
    ];
    let args = [&args[..], &["--device", "cpu", "--checkpoint", "last"]].concat();
    let out = lungseg_with_env(args, &[("RUST_BACKTRACE", "1")]).expect_code(2);
    assert!(out.stderr.contains("last.safetensors"), "{}", out.stderr);
    assert_eq!(
        out.stderr
            .lines()
            .filter(|l| l.starts_with("error"))
            .count(),
        1,
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("backtrace"), "{}", out.stderr);

    // The optimizer moments of another network: --resume refuses them in one line.
    std::fs::copy(sb.path("own.safetensors"), run.join("last.safetensors")).unwrap();
    std::fs::copy(
        other.join("last.optim.safetensors"),
        run.join("last.optim.safetensors"),
    )
    .unwrap();
    let state_path = run.join("train_state.json");
    let mut state: serde_json::Value = serde_json::from_slice(&bytes(&state_path)).unwrap();
    state["finished"] = serde_json::Value::Bool(false);
    state["next_epoch"] = serde_json::json!(2);
    // A state as epoch 1 left it, whichever epoch the run kept: its best epoch is 1.
    state["stopping"]["best"]["best_epoch"] = serde_json::json!(1);
    std::fs::write(&state_path, state.to_string()).unwrap();
    let resume: Vec<&str> = SHORT.iter().copied().chain(["--resume"]).collect();
    let out = train_tiny(&data, &run, &resume).expect_code(2);
    assert!(
        out.stderr.contains("last.optim.safetensors"),
        "{}",
        out.stderr
    );
    one_line(&out);
}

#[test]
fn report_names_runs_by_their_path_and_reports_a_broken_run_as_a_row() {
    let sb = Sandbox::new();
    let data = dataset(&sb, 4, 2, &[]);
    let runs = sb.path("runs");
    train_tiny(&data, &runs.join("a/run"), SHORT).ok();
    for copy in ["b/run", "c/run"] {
        let to = runs.join(copy);
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(runs.join("a/run")).unwrap() {
            let e = e.unwrap();
            if e.path().is_file() {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }
    std::fs::write(runs.join("c/run/epochs.parquet"), b"damaged").unwrap();
    let out = lungseg(["report", "--runs", runs.to_str().unwrap()]).ok();
    let md = std::fs::read_to_string(runs.join("report/report.md")).unwrap();
    for row in ["| a/run |", "| b/run |", "| c/run |"] {
        assert!(md.contains(row), "{row} missing\n{md}\n{}", out.stderr);
    }
    assert!(md.contains("unreadable"), "{md}");
    assert!(runs.join("report/a_run_curve.png").is_file());
    assert!(runs.join("report/b_run_curve.png").is_file());
}
