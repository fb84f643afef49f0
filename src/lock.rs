//! Advisory locks on output directories, so that two runs never write into the same one: the
//! second gets a one-line error instead of a directory that looks complete but mixes both.

use crate::error::{Error, IoContext, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// The name of the lock file each locked directory holds.
pub const LOCK_FILE: &str = ".lungseg.lock";

/// An exclusive lock on a directory, held until dropped (or the process ends, however it ends:
/// the kernel releases `flock` locks with the last open file).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
    /// The directory did not exist before: remove it again if the run leaves nothing in it.
    created: Option<PathBuf>,
}

impl DirLock {
    /// Creates `dir` if needed and locks it for `what` (e.g. "prepare --out"). Another process
    /// holding the lock is a usage error (exit 2) that names the directory.
    pub fn acquire(dir: &Path, what: &str) -> Result<Self> {
        if dir.exists() && !dir.is_dir() {
            return Err(Error::input(dir, "exists and is not a directory"));
        }
        let created = (!dir.exists()).then(|| dir.to_path_buf());
        std::fs::create_dir_all(dir).at(dir)?;
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .at(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Self {
                _file: file,
                path,
                created,
            }),
            Err(TryLockError::WouldBlock) => Err(Error::Usage(format!(
                "{}: another lungseg process is writing here; wait for it to finish or give {what} another directory",
                dir.display()
            ))),
            Err(TryLockError::Error(e)) => Err(Error::io(&path, e)),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether another process holds `dir`'s lock right now (a stage is writing there).
pub fn is_locked(dir: &Path) -> bool {
    let Ok(file) = File::open(dir.join(LOCK_FILE)) else {
        return false;
    };
    matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock))
}

impl Drop for DirLock {
    /// A directory this lock created and the run left empty (it failed before writing anything)
    /// is removed again, so a refused run leaves nothing behind.
    fn drop(&mut self) {
        let Some(dir) = &self.created else {
            return;
        };
        let only_the_lock = std::fs::read_dir(dir)
            .map(|entries| entries.flatten().all(|e| e.path() == self.path))
            .unwrap_or(false);
        if only_the_lock {
            let _ = std::fs::remove_file(&self.path);
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        assert!(!is_locked(&out));
        let first = DirLock::acquire(&out, "prepare --out").unwrap();
        assert!(first.path().is_file());
        assert!(is_locked(&out));
        let err = DirLock::acquire(&out, "prepare --out").unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("another lungseg process"), "{err}");
        drop(first);
        // The directory was created by the lock and is empty again: it is gone.
        assert!(!out.exists());
        let lock = DirLock::acquire(&out, "prepare --out").unwrap();
        std::fs::write(out.join("manifest.parquet"), b"x").unwrap();
        drop(lock);
        assert!(out.join("manifest.parquet").is_file(), "outputs stay");
        let file = out.join("manifest.parquet");
        assert_eq!(
            DirLock::acquire(&file, "train --run")
                .unwrap_err()
                .exit_code(),
            2
        );
    }
}
