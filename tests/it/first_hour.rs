//! The first hour's traps (issue #16), one test each: what a new user types, the message they
//! must get and the exit code.

use crate::common::*;

/// The whole of clap's message on one line: the missing arguments, the usage, the help hint.
#[test]
fn missing_arguments_are_named_with_the_usage_on_one_line() {
    let r = lungseg(["train"]).expect_code(2);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    for want in [
        "--data <DATA_DIR>",
        "--run <RUN_DIR>",
        "usage: lungseg train",
    ] {
        assert!(r.stderr.contains(want), "no {want:?} in {}", r.stderr);
    }
}

#[test]
fn a_misspelt_option_gets_the_similar_one_named() {
    let r = lungseg(["prepare", "--inputs", "x", "--out", "y"]).expect_code(2);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("'--inputs'"), "{}", r.stderr);
    assert!(r.stderr.contains("tip:"), "{}", r.stderr);
    assert!(r.stderr.contains("'--input'"), "{}", r.stderr);
}

#[test]
fn help_shows_the_pipeline_defaults_and_sets_global_options_apart() {
    let r = lungseg(["train", "--help"]).ok();
    // pipeline/train.toml's values, not clap's.
    for want in [
        "[default: 0.0001]",
        "[default: 0.35]",
        "[default: 5]",
        "Global options",
    ] {
        assert!(r.stdout.contains(want), "no {want:?} in\n{}", r.stdout);
    }
    assert!(
        !r.stdout.contains("[`"),
        "doc markup in --help:\n{}",
        r.stdout
    );
    assert!(!r.stdout.contains("last one given wins"), "{}", r.stdout);
}

#[test]
fn quiet_prints_nothing_on_success_and_the_summary_otherwise() {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    synth(&tree, 2, 1, &[]);
    let q = sb.path("q");
    let quiet = lungseg(
        ["-q", "prepare", "--input", tree.to_str().unwrap()]
            .iter()
            .chain(&["--out", q.to_str().unwrap()]),
    )
    .ok();
    assert_eq!((quiet.stdout.as_str(), quiet.stderr.as_str()), ("", ""));
    assert!(q.join("prepare.json").is_file());
    let loud = prepare(&tree, &sb.path("loud"), &[]);
    assert!(
        loud.stdout.starts_with("prepare: 2 patients,"),
        "{}",
        loud.stdout
    );
    // Counted nouns: "1 shard", never "1 shards"; rejects rows named as such.
    assert!(loud.stdout.contains("; 1 shard, "), "{}", loud.stdout);
    assert!(
        loud.stdout.contains("in rejects.parquet"),
        "{}",
        loud.stdout
    );
}

#[test]
fn messages_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let sb = Sandbox::new();
    synth(&sb.path("in/tree"), 2, 1, &[]);
    // The tree's parent folder, one level too high: an error with a hint on stderr.
    let r = lungseg([
        "prepare",
        "--input",
        sb.path("in").to_str().unwrap(),
        "--out",
        sb.path("data").to_str().unwrap(),
    ])
    .expect_code(2);
    assert!(r.stderr.contains("did you mean --input"), "{}", r.stderr);
    assert!(!r.stderr.contains('\x1b'), "escape codes in {:?}", r.stderr);
}

#[test]
fn a_partial_config_overrides_only_its_keys() {
    let sb = Sandbox::new();
    let data = dataset(&sb, 4, 2, &[]);
    let config = sb.path("mine.toml");
    std::fs::write(&config, "min_precision = 0.2\n").unwrap();
    let run = sb.path("run");
    let one_step = ["--max-epochs", "1", "--max-steps-per-epoch", "1"];
    let mine = ["--config", config.to_str().unwrap()];
    train_tiny(&data, &run, &[&one_step[..], &mine].concat()).ok();
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    let s = &saved["config"]["settings"];
    assert_eq!(s["min_precision"], 0.2, "{saved}");
    // Everything else keeps pipeline/train.toml's defaults (or the flags given).
    assert_eq!(s["val_batch_size"], 8, "{saved}");
    assert_eq!(s["threshold"], 0.35, "{saved}");
    assert_eq!(s["lr"], 3e-3, "{saved}");
    // A TOML error keeps its line breaks: the line, the caret and the message.
    std::fs::write(&config, "lr = = 3\n").unwrap();
    let bad = lungseg([
        "train",
        "--data",
        data.to_str().unwrap(),
        "--run",
        sb.path("run2").to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ])
    .expect_code(2);
    assert!(bad.stderr.contains("mine.toml"), "{}", bad.stderr);
    assert!(bad.stderr.lines().count() > 1, "{}", bad.stderr);
    assert!(
        !sb.path("run2").exists(),
        "a refused run left its directory"
    );
}

#[test]
fn a_gpu_device_on_a_cpu_build_names_the_build_fix_and_leaves_no_run_directory() {
    if cfg!(feature = "cuda") {
        return; // this build has the backend: the message is for CPU-only builds
    }
    let sb = Sandbox::new();
    let data = dataset(&sb, 4, 2, &[]);
    let run = sb.path("run");
    let r = train_tiny(&data, &run, &["--device", "cuda:1"]).expect_code(2);
    assert!(
        r.stderr.contains("make train FEATURES=cudnn"),
        "{}",
        r.stderr
    );
    assert!(
        !run.exists(),
        "a run that never started left {}",
        run.display()
    );
}

#[test]
fn training_leaves_a_log_ending_with_the_next_commands_and_eval_finds_the_data() {
    let sb = Sandbox::new();
    let data = dataset(&sb, 4, 2, &[]);
    let run = sb.path("run");
    train_tiny(
        &data,
        &run,
        &["--max-epochs", "1", "--max-steps-per-epoch", "2"],
    )
    .ok();
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    let tail: Vec<&str> = log.lines().rev().take(3).collect();
    assert!(
        tail.iter().any(|l| l.contains("lungseg eval")),
        "train.log ends with:\n{}",
        tail.join("\n")
    );
    assert!(
        tail.iter().any(|l| l.contains("lungseg report")),
        "{}",
        tail.join("\n")
    );
    // eval without --data: the run's config.json names it. (Two tiny steps rarely pass the
    // min-precision guard, so the last checkpoint is evaluated.)
    let r = lungseg([
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--device",
        "cpu",
        "--checkpoint",
        "last",
    ])
    .ok();
    assert!(r.stdout.starts_with("eval: done;"), "{}", r.stdout);
}

#[test]
fn a_large_model_falling_back_to_the_cpu_warns_with_the_projected_time() {
    if cfg!(any(feature = "cuda", feature = "metal")) {
        return; // auto may find a GPU here
    }
    let sb = Sandbox::new();
    let data = dataset(&sb, 4, 2, &[]);
    // Later flags win: TINY's `--device cpu` becomes auto.
    let train = |width: &str, run: &str| {
        let args = ["--device", "auto", "--base-channels", width];
        let one_step = ["--max-epochs", "1", "--max-steps-per-epoch", "1"];
        train_tiny(&data, &sb.path(run), &[&args[..], &one_step].concat()).ok()
    };
    let large = train("32", "large");
    assert!(
        large
            .stderr
            .contains("no GPU found, so --device auto trains the width-32 U-Net on the CPU"),
        "{}",
        large.stderr
    );
    assert!(large.stderr.contains(" h for 1 epochs"), "{}", large.stderr);
    let small = train("8", "small");
    assert!(!small.stderr.contains("no GPU found"), "{}", small.stderr);
}

#[test]
fn check_tables_on_a_folder_without_tables_fails() {
    if !python_has(&["polars", "pyarrow"]) {
        return;
    }
    let sb = Sandbox::new();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_tables.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(sb.root())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("no lungseg tables"), "{said}");
}

#[test]
fn a_run_started_with_other_settings_names_them() {
    let sb = Sandbox::new();
    let data = dataset(&sb, 3, 5, &[]);
    let run = sb.path("run");
    let steps = ["--max-epochs", "1", "--max-steps-per-epoch", "1"];
    train_tiny(&data, &run, &steps).ok();
    let again = train_tiny(&data, &run, &[&steps[..], &["--lr", "0.01"]].concat()).expect_code(2);
    assert!(
        again
            .stderr
            .contains("started with different settings (lr 0.003 -> 0.01)"),
        "{}",
        again.stderr
    );
}
