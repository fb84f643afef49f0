//! Write-then-rename, so a killed stage never leaves a half-written output under its final name.

use crate::error::{IoContext, Result};
use crate::layout::temporary_name;
use std::path::Path;

/// Writes `bytes` to `path` through a temporary file and an atomic rename. A failed write (a
/// full disk) removes its temporary file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temporary_name(path);
    if let Err(e) = std::fs::write(&tmp, bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(crate::Error::io(&tmp, e));
    }
    commit(&tmp, path)
}

/// Renames a finished temporary file into place.
pub fn commit(tmp: &Path, path: &Path) -> Result<()> {
    fault_injection::before_rename();
    std::fs::rename(tmp, path).at(path)
}

/// A test hook for crash consistency: with `LUNGSEG_KILL_AT_RENAME=N` in the environment, the
/// process aborts (as a `kill -9` would end it) just before its N-th rename into place. The
/// integration tests use it to interrupt every rename of a training run in turn.
mod fault_injection {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    static RENAMES: AtomicU64 = AtomicU64::new(0);

    pub(super) fn before_rename() {
        static KILL_AT: OnceLock<Option<u64>> = OnceLock::new();
        let kill_at = KILL_AT.get_or_init(|| {
            std::env::var("LUNGSEG_KILL_AT_RENAME")
                .ok()
                .and_then(|v| v.parse().ok())
        });
        if let Some(n) = *kill_at {
            if RENAMES.fetch_add(1, Ordering::SeqCst) + 1 == n {
                std::process::abort();
            }
        }
    }
}

/// Removes a file or directory if it exists.
pub fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path).at(path),
        Ok(_) => std::fs::remove_file(path).at(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(crate::Error::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"{\"k\": 1}").unwrap();
        assert!(p.exists());
        assert!(!temporary_name(&p).exists());
        remove_if_exists(&p).unwrap();
        assert!(!p.exists());
        remove_if_exists(&p).unwrap();
    }
}
