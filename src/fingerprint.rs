//! Content fingerprints of input files, so a stage can tell whether its inputs changed.

use crate::error::{Error, Result};
use std::path::Path;

/// FNV-1a 64 of a file's bytes, in hex.
pub fn fingerprint(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(format!("{:016x}", crate::rng::fnv1a64(&bytes)))
}
