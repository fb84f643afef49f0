//! Command-line arguments, and their conversion into validated stage configs before any work:
//! one file per stage, and one argument group per concern that several stages share.

mod eval;
mod predict;
mod prepare;
mod report;
pub mod shared;
mod split;
mod synth;
mod train;

pub use eval::EvalArgs;
pub use predict::PredictArgs;
pub use prepare::PrepareArgs;
pub use report::ReportArgs;
pub use split::SplitArgs;
pub use synth::SynthArgs;
pub use train::TrainArgs;

use crate::config::Stage;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// The help heading of the options every command takes.
const GLOBAL: &str = "Global options";

/// Lung-nodule segmentation on LIDC-IDRI slices: prepare shards, split by patient, train a U-Net.
#[derive(Debug, Parser)]
#[command(
    name = "lungseg",
    version,
    about,
    long_about = None,
    propagate_version = true,
    args_override_self = true
)]
pub struct Cli {
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, help_heading = GLOBAL)]
    pub verbose: u8,
    /// Only errors: no log lines, progress bars or closing summary (the results are in the
    /// output files).
    #[arg(short, long, global = true, help_heading = GLOBAL)]
    pub quiet: bool,
    /// The stage to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The stages.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a deterministic synthetic LIDC-style tree (for tests and the demo).
    Synth(SynthArgs),
    /// Turn an LIDC slice tree into Parquet shards, a manifest and a rejects table.
    Prepare(PrepareArgs),
    /// Split a prepared data directory into train and val by patient, deterministically.
    Split(SplitArgs),
    /// Train the U-Net on the split, stopping early on a recall-first validation score.
    Train(Box<TrainArgs>),
    /// Evaluate a run on whole slices: pooled, per-slice, lesion- and nodule-level metrics, a
    /// threshold sweep and overlays, written to RUN_DIR/eval/.
    Eval(EvalArgs),
    /// Segment PNG files of any size with a trained run; writes masks and overlays.
    Predict(PredictArgs),
    /// Summarise every run under a folder: report.md, learning curves, recall-precision curves.
    Report(ReportArgs),
}

impl Cli {
    /// Parses the process arguments with [`command`]'s help. Errors are clap's (printed whole by
    /// the caller: the message, any "did you mean" tip and the usage line).
    pub fn parse_args() -> Result<Self, clap::Error> {
        Self::from_arg_matches(&command().try_get_matches()?)
    }
}

/// The command-line interface, with every option that `pipeline/<stage>.toml` gives a default
/// showing that default in `--help` (the flags are optional so that a `--config` file can sit
/// between the defaults and the flags).
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    for stage in [Stage::Prepare, Stage::Split, Stage::Train] {
        let Ok(defaults) = stage.default_text().parse::<toml::Table>() else {
            continue;
        };
        cmd = cmd.mut_subcommand(stage.name(), |mut sub| {
            let ids: Vec<String> = sub
                .get_arguments()
                .map(|a| a.get_id().to_string())
                .collect();
            for (key, value) in &defaults {
                if !ids.contains(key) {
                    continue;
                }
                let shown = match value {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                sub = sub.mut_arg(key, |arg| {
                    let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                    let help = help.trim_end_matches('.');
                    arg.help(format!("{help} [default: {shown}]"))
                });
            }
            sub
        });
    }
    cmd
}

/// clap's error message on one line, keeping everything it says: the error, the missing
/// arguments, any "a similar argument exists" tip and the usage line
/// (`error: … (tip: …; usage: …; see --help)`).
pub fn one_line_error(rendered: &str) -> String {
    let mut lines = rendered
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"));
    let first = lines
        .next()
        .unwrap_or("error: invalid arguments")
        .trim_end_matches(':');
    let rest: Vec<String> = lines
        .map(|l| match l.strip_prefix("Usage: ") {
            Some(usage) => format!("usage: {usage}"),
            None => l.to_string(),
        })
        .collect();
    if rest.is_empty() {
        format!("{first} (see --help)")
    } else {
        format!("{first}: {} (see --help)", rest.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_errors_keep_every_part_on_one_line() {
        let missing = command()
            .try_get_matches_from(["lungseg", "train"])
            .unwrap_err()
            .render()
            .to_string();
        let line = one_line_error(&missing);
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.contains("--data <DATA_DIR>") && line.contains("--run <RUN_DIR>"),
            "{line}"
        );
        assert!(line.contains("usage: lungseg train"), "{line}");
        let typo = command()
            .try_get_matches_from(["lungseg", "prepare", "--inputs", "x", "--out", "y"])
            .unwrap_err()
            .render()
            .to_string();
        let line = one_line_error(&typo);
        assert!(
            line.contains("tip: a similar argument exists: '--input'"),
            "{line}"
        );
    }

    #[test]
    fn help_shows_the_pipeline_defaults() {
        let mut cmd = command();
        cmd.build();
        let train = cmd.find_subcommand_mut("train").unwrap();
        let help = train.render_long_help().to_string();
        assert!(help.contains("[default: 0.0001]"), "{help}");
        assert!(help.contains("[default: union]"), "{help}");
        assert!(help.contains("Global options"), "{help}");
        command().debug_assert();
    }
}
