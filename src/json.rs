//! The JSON records stages leave behind (`prepare.json`, `split.json`, `config.json`,
//! `train_state.json`, `eval/summary.json`): read if present, written atomically.

use crate::atomic::write_atomic;
use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// Reads a JSON file if it exists.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::input(path, format!("not a readable record: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Serialises `value` as pretty JSON into `path`, atomically.
pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_vec_pretty(value).map_err(|cause| Error::Json {
        path: path.to_path_buf(),
        cause,
    })?;
    write_atomic(path, &text)
}
