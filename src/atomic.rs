//! Write-then-rename, so a killed stage never leaves a half-written output under its final name.

use crate::error::{IoContext, Result};
use crate::layout::temporary_name;
use std::path::Path;

/// Writes `bytes` to `path` through a temporary file and an atomic rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temporary_name(path);
    std::fs::write(&tmp, bytes).at(&tmp)?;
    commit(&tmp, path)
}

/// Renames a finished temporary file into place.
pub fn commit(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(tmp, path).at(path)
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
