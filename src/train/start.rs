//! How a `train` invocation meets an existing run directory: start fresh, resume an interrupted
//! run, or report a finished one; and refuse a run started with other settings.

use crate::atomic::remove_if_exists;
use crate::error::{Error, Result};
use crate::json::read_json;
use crate::layout::RunDir;
use crate::run::record::RunRecord;
use crate::run::settings::TrainConfig;
use crate::train::state::TrainState;

/// What to do with an existing run directory.
pub enum Start {
    /// No run (or `--overwrite`): initialise and start at epoch 1.
    Fresh,
    /// An interrupted run and `--resume`: continue from `last`.
    Resume(TrainState),
    /// A finished run: nothing to do.
    Finished(TrainState),
}

/// Decides from the run directory's state and the flags; `--overwrite` clears the run's files.
pub fn decide_start(cfg: &TrainConfig, run: &RunDir) -> Result<Start> {
    let state: Option<TrainState> = read_json(&run.train_state())?;
    if cfg.overwrite {
        for p in [
            run.config(),
            run.epochs(),
            run.best_checkpoint(),
            run.last_checkpoint(),
            run.last_optimizer(),
            run.train_state(),
        ] {
            remove_if_exists(&p)?;
        }
        return Ok(Start::Fresh);
    }
    let previous: Option<RunRecord> = read_json(&run.config())?;
    if let (Some(prev), Some(_)) = (&previous, &state) {
        if prev.config.settings != cfg.settings || prev.config.fold != cfg.fold {
            return Err(Error::Usage(format!(
                "{}: this run was started with different settings; use another --run or --overwrite",
                run.config().display()
            )));
        }
    }
    match state {
        Some(st) if st.finished => Ok(Start::Finished(st)),
        Some(st) if cfg.resume => Ok(Start::Resume(st)),
        Some(_) => Err(Error::Usage(format!(
            "{}: holds an unfinished run; pass --resume to continue it or --overwrite to start over",
            run.root().display()
        ))),
        None => Ok(Start::Fresh),
    }
}
