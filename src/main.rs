//! The `lungseg` binary: parses arguments, runs one stage, prints the error chain, sets the exit code.

use anyhow::Context;
use lungseg::cli::{Cli, Command};
use lungseg::wording::count;
use std::process::ExitCode;

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LUNGSEG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("lungseg={level},warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .init();
}

/// Ctrl-C asks the trainer to finish its step, save `last` and stop; a second Ctrl-C exits now.
fn install_interrupt_handler() {
    use std::sync::atomic::Ordering;
    let result = ctrlc::set_handler(|| {
        if lungseg::train::INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!(
            "interrupt: finishing the current step and saving last (Ctrl-C again to abort); continue later with the same command and --resume"
        );
    });
    if let Err(e) = result {
        tracing::warn!("cannot install the Ctrl-C handler: {e}");
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    // The closing summary line on stdout; `-q` leaves only errors (the results are in files).
    let say = |line: String| {
        if !cli.quiet {
            println!("{line}");
        }
    };
    match &cli.command {
        Command::Synth(args) => {
            let report = lungseg::synth::run(&lungseg::synth::SynthConfig {
                out: args.out.clone(),
                patients: args.patients,
                seed: args.seed,
                odd_sizes: args.odd_sizes,
                hu16: args.hu16,
                format: args.format,
                tcia_slices: args.slices,
                tcia_size: args.size,
            })?;
            say(match args.format {
                lungseg::synth::SynthFormat::Slices => format!(
                    "synth: {}, {}, {}, {} in {}",
                    count(report.patients, "patient"),
                    count(report.nodules, "nodule"),
                    count(report.slices, "slice"),
                    count(report.mask_files, "mask file"),
                    args.out.display()
                ),
                lungseg::synth::SynthFormat::Tcia => format!(
                    "synth: {}, {}, {}, {} in {} (TCIA layout; prepare it with --source tcia)",
                    count(report.patients, "patient"),
                    count(report.series, "CT series"),
                    count(report.slices, "DICOM slice"),
                    count(report.nodules, "nodule"),
                    args.out.display()
                ),
            });
        }
        Command::Prepare(args) => {
            let cfg = args.resolve(cli.quiet)?;
            let report = lungseg::prepare::run(&cfg)?;
            say(report.summary());
        }
        Command::Split(args) => {
            let cfg = args.resolve()?;
            let report = lungseg::split::run(&cfg)?;
            if let Some(w) = report.ratio_warning() {
                tracing::warn!("{w}");
            }
            say(report.summary());
        }
        Command::Report(args) => {
            let report = lungseg::report::run(&args.resolve())?;
            say(report.summary());
        }
        Command::Train(args) => {
            let cfg = args.resolve(cli.quiet)?;
            install_interrupt_handler();
            let report = lungseg::train::run(&cfg)?;
            say(report.summary());
        }
        Command::Eval(args) => {
            let report = lungseg::eval::run(&args.resolve(cli.quiet)?)?;
            say(report.summary());
        }
        Command::Predict(args) => {
            let report = lungseg::predict::run(&args.resolve()?)?;
            say(report.summary());
            if !report.failed.is_empty() {
                return Err(lungseg::Error::Partial(format!(
                    "predict: {} of {} files failed",
                    report.failed.len(),
                    report.failed.len() + report.written.len()
                ))
                .into());
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::parse_args() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print(); // --help and --version
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print(); // no command: the help, as an error
            return ExitCode::from(2);
        }
        Err(e) => {
            // Everything clap says (the error, missing arguments, a "did you mean" tip, the
            // usage line), on one line.
            eprintln!("{}", lungseg::cli::one_line_error(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    init_logging(cli.verbose, cli.quiet);
    match run(&cli).context("lungseg") {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = match (
                err.downcast_ref::<lungseg::Error>(),
                err.downcast_ref::<lungseg::synth::SynthError>(),
            ) {
                (Some(e), _) => e.exit_code(),
                (None, Some(e)) => e.exit_code(),
                (None, None) => 1,
            };
            eprintln!("error: {err:#}");
            ExitCode::from(code.clamp(1, 255) as u8)
        }
    }
}
