//! `train.log` in the run directory: the run's start, one line per epoch and its end with the
//! commands to run next, so a run can be read after the terminal is gone.

use crate::layout::RunDir;
use std::fs::{File, OpenOptions};
use std::io::Write;

/// An append-only log file; a log that cannot be written is reported once and then skipped.
pub struct TrainLog {
    file: Option<File>,
}

impl TrainLog {
    /// Opens (appending to) the run's `train.log`.
    pub fn open(run: &RunDir) -> Self {
        let path = run.train_log();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| tracing::warn!("{}: {e}; training goes on without it", path.display()))
            .ok();
        Self { file }
    }

    /// Appends one line.
    pub fn line(&mut self, text: &str) {
        if let Some(file) = &mut self.file {
            if let Err(e) = writeln!(file, "{text}") {
                tracing::warn!("train.log: {e}; training goes on without it");
                self.file = None;
            }
        }
    }
}

/// The commands that follow a finished run: evaluating it and reporting on its folder.
pub fn next_commands(data: &std::path::Path, run: &RunDir) -> String {
    let runs = run
        .root()
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| ".".into(), |p| p.display().to_string());
    format!(
        "next: lungseg eval --data {} --run {}; lungseg report --runs {runs}",
        data.display(),
        run.root().display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_appended_and_the_next_commands_name_data_and_run() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path().join("runs/a"));
        std::fs::create_dir_all(run.root()).unwrap();
        TrainLog::open(&run).line("one");
        TrainLog::open(&run).line("two");
        let text = std::fs::read_to_string(run.train_log()).unwrap();
        assert_eq!(text, "one\ntwo\n");
        let next = next_commands(std::path::Path::new("data"), &run);
        assert!(next.contains("eval --data data --run "), "{next}");
        assert!(
            next.ends_with(&format!(
                "report --runs {}",
                dir.path().join("runs").display()
            )),
            "{next}"
        );
    }
}
