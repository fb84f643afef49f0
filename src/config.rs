//! Stage defaults: `pipeline/<stage>.toml` is embedded in the binary and can be replaced with
//! `--config FILE`; command-line flags then override single fields.

use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use std::path::Path;

/// A stage with a `pipeline/<stage>.toml` of defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `pipeline/prepare.toml`.
    Prepare,
    /// `pipeline/split.toml`.
    Split,
    /// `pipeline/train.toml`.
    Train,
}

impl Stage {
    /// The stage's name, as in `pipeline/<name>.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Prepare => "prepare",
            Stage::Split => "split",
            Stage::Train => "train",
        }
    }

    /// The embedded default TOML text.
    pub fn default_text(self) -> &'static str {
        match self {
            Stage::Prepare => include_str!("../pipeline/prepare.toml"),
            Stage::Split => include_str!("../pipeline/split.toml"),
            Stage::Train => include_str!("../pipeline/train.toml"),
        }
    }
}

/// Loads a stage's defaults: from `file` when given, else the embedded `pipeline/<stage>.toml`.
/// Unknown keys are errors, so a typo in a config file is caught before any work starts.
pub fn load_stage<T: DeserializeOwned>(stage: Stage, file: Option<&Path>) -> Result<T> {
    let (text, origin) = match file {
        Some(path) => (
            std::fs::read_to_string(path)
                .map_err(|e| Error::input(path, format!("cannot read the config file: {e}")))?,
            path.to_path_buf(),
        ),
        None => (
            stage.default_text().to_string(),
            Path::new("pipeline").join(format!("{}.toml", stage.name())),
        ),
    };
    toml::from_str(&text).map_err(|e| Error::Toml {
        path: origin,
        message: e.to_string().trim().replace('\n', " "),
    })
}
