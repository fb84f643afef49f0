//! Crash-consistent saves of a run's epoch-end files. Every file of one save (`best` and `last`
//! weights, the optimizer's moments, `epochs.parquet`) is first written under a name tagged with
//! the save's generation; then `train_state.json`, naming that generation and its files, is
//! renamed into place: that rename is the commit point; last, the tagged files are renamed to
//! their real names. A kill before the commit leaves the previous generation whole (the tagged
//! files are deleted at the next start); a kill after it is completed at the next start (the
//! renames are redone). Either way `--resume` continues from one consistent state.

use crate::atomic::{commit, remove_if_exists};
use crate::error::{IoContext, Result};
use crate::json::write_json_atomic;
use crate::layout::RunDir;
use crate::train::state::TrainState;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The tag that marks a file written for generation `g` and not yet moved into place.
fn tag(g: u64) -> String {
    format!(".gen-{g}")
}

/// The name `path` is written under until generation `g` commits.
pub fn staged_name(path: &Path, g: u64) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(tag(g));
    path.with_file_name(name)
}

/// One save in progress.
pub struct Save<'a> {
    run: &'a RunDir,
    generation: u64,
    files: Vec<String>,
}

impl<'a> Save<'a> {
    /// Starts the save after `state`'s generation.
    pub fn begin(run: &'a RunDir, state: &TrainState) -> Self {
        Self {
            run,
            generation: state.generation + 1,
            files: Vec::new(),
        }
    }

    /// The name to write the run file `path` under for this save.
    pub fn stage(&mut self, path: &Path) -> PathBuf {
        if let Some(name) = path.file_name().and_then(OsStr::to_str) {
            self.files.push(name.to_string());
        }
        staged_name(path, self.generation)
    }

    /// Commits `state` with this save's files, then moves them into place.
    pub fn commit(self, state: &mut TrainState) -> Result<()> {
        state.generation = self.generation;
        state.pending = self.files;
        write_json_atomic(&self.run.train_state(), state)?;
        move_into_place(self.run, state)
    }
}

/// Moves the committed generation's staged files that are still there into place.
fn move_into_place(run: &RunDir, state: &TrainState) -> Result<()> {
    for name in &state.pending {
        if Path::new(name).file_name().and_then(OsStr::to_str) != Some(name.as_str()) {
            continue; // only plain file names of the run directory itself
        }
        let path = run.root().join(name);
        let staged = staged_name(&path, state.generation);
        if staged.exists() {
            commit(&staged, &path)?;
        }
    }
    Ok(())
}

/// Brings a run directory back to its last committed save after a kill: completes the committed
/// generation's renames and deletes staged files of any other generation and leftover `.tmp`
/// files. `state` is the run's `train_state.json`, if it has one.
pub fn recover(run: &RunDir, state: Option<&TrainState>) -> Result<()> {
    if let Some(state) = state {
        move_into_place(run, state)?;
    }
    let Ok(entries) = std::fs::read_dir(run.root()) else {
        return Ok(()); // no run directory yet
    };
    for entry in entries {
        let path = entry.at(run.root())?.path();
        let name = path.file_name().and_then(OsStr::to_str).unwrap_or_default();
        let staged = name
            .rsplit_once(".gen-")
            .is_some_and(|(_, g)| g.parse::<u64>().is_ok());
        if staged || (name.ends_with(".tmp") && path.is_file()) {
            tracing::debug!("removing {} (an unfinished save)", path.display());
            remove_if_exists(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::monitor::MonitorSpec;
    use crate::train::early_stop::EarlyStopping;

    fn state() -> TrainState {
        TrainState::start(EarlyStopping::new(MonitorSpec::default(), 5, 10))
    }

    fn read(p: PathBuf) -> String {
        std::fs::read_to_string(p).unwrap_or_else(|_| "absent".into())
    }

    #[test]
    fn a_save_killed_before_its_commit_is_rolled_back_and_after_it_rolled_forward() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let mut st = state();
        // Generation 1, committed.
        let mut save = Save::begin(&run, &st);
        std::fs::write(save.stage(&run.last_checkpoint()), "w1").unwrap();
        save.commit(&mut st).unwrap();
        assert_eq!(read(run.last_checkpoint()), "w1");
        assert_eq!(st.generation, 1);

        // Generation 2, killed before its commit: w2 is staged, the state still says 1.
        let mut save = Save::begin(&run, &st);
        std::fs::write(save.stage(&run.last_checkpoint()), "w2").unwrap();
        std::fs::write(dir.path().join("epochs.parquet.tmp"), "half").unwrap();
        drop(save);
        recover(&run, Some(&st)).unwrap();
        assert_eq!(read(run.last_checkpoint()), "w1");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1 + 1,
            "last + state only"
        );

        // Generation 2 again, killed after its commit but before the rename.
        let mut save = Save::begin(&run, &st);
        std::fs::write(save.stage(&run.last_checkpoint()), "w2").unwrap();
        let mut committed = st.clone();
        committed.generation = 2;
        committed.pending = vec!["last.safetensors".into()];
        crate::json::write_json_atomic(&run.train_state(), &committed).unwrap();
        recover(&run, Some(&committed)).unwrap();
        assert_eq!(read(run.last_checkpoint()), "w2");
        assert!(!staged_name(&run.last_checkpoint(), 2).exists());
        // Recovering twice changes nothing.
        recover(&run, Some(&committed)).unwrap();
        assert_eq!(read(run.last_checkpoint()), "w2");
    }
}
