//! How a `train` invocation meets an existing run directory: start fresh, resume an interrupted
//! run, or report a finished one; and refuse a run started with other settings.

use crate::atomic::remove_if_exists;
use crate::error::{Error, Result};
use crate::json::read_json;
use crate::layout::RunDir;
use crate::run::record::RunRecord;
use crate::run::settings::TrainConfig;
use crate::train::commit::recover;
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
/// A run started with other settings, or on data that has changed since (`data_fingerprint` is
/// the manifest's), is refused; so is a state or record that does not validate.
pub fn decide_start(cfg: &TrainConfig, run: &RunDir, data_fingerprint: &str) -> Result<Start> {
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
        recover(run, None)?;
        return Ok(Start::Fresh);
    }
    let state = read_json::<TrainState>(&run.train_state())?;
    recover(run, state.as_ref())?;
    let Some(state) = state else {
        return Ok(Start::Fresh);
    };
    state.validate(&cfg.settings, &run.train_state())?;
    if let Some(previous) = read_json::<RunRecord>(&run.config())? {
        ensure_same_run(cfg, &previous, run)?;
        if previous.data_fingerprint != data_fingerprint {
            return Err(Error::Usage(format!(
                "{}: this run was trained on other data (manifest fingerprint {}, now {}): the data directory was prepared again or is another one; use another --run or --overwrite",
                run.root().display(),
                previous.data_fingerprint,
                data_fingerprint
            )));
        }
    }
    match state {
        st if st.finished => Ok(Start::Finished(st)),
        st if cfg.resume => Ok(Start::Resume(st)),
        _ => Err(Error::Usage(format!(
            "{}: holds an unfinished run; pass --resume to continue it or --overwrite to start over",
            run.root().display()
        ))),
    }
}

/// Refuses to continue a run whose `config.json` holds other settings, naming them.
fn ensure_same_run(cfg: &TrainConfig, previous: &RunRecord, run: &RunDir) -> Result<()> {
    let mut changed = crate::config::settings_diff(&previous.config.settings, &cfg.settings);
    if previous.config.fold != cfg.fold {
        changed.push(format!("fold {:?} -> {:?}", previous.config.fold, cfg.fold));
    }
    if changed.is_empty() {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "{}: this run was started with different settings ({}); use another --run or --overwrite",
        run.config().display(),
        changed.join(", ")
    )))
}
