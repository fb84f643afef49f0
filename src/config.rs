//! Stage defaults: `pipeline/<stage>.toml` is embedded in the binary and can be replaced with
//! `--config FILE`; command-line flags then override single fields.

use crate::error::{Error, IoContext, Result};
use serde::de::DeserializeOwned;
use std::path::Path;

/// The embedded defaults of each stage.
const DEFAULTS: &[(&str, &str)] = &[
    ("prepare", include_str!("../pipeline/prepare.toml")),
    ("split", include_str!("../pipeline/split.toml")),
    ("train", include_str!("../pipeline/train.toml")),
];

/// The default TOML text for `stage`.
pub fn default_text(stage: &str) -> Option<&'static str> {
    DEFAULTS.iter().find(|(s, _)| *s == stage).map(|(_, t)| *t)
}

/// Loads a stage's defaults: from `file` when given, else the embedded `pipeline/<stage>.toml`.
/// Unknown keys are errors, so a typo in a config file is caught before any work starts.
pub fn load_stage<T: DeserializeOwned>(stage: &str, file: Option<&Path>) -> Result<T> {
    let (text, origin) = match file {
        Some(path) => (std::fs::read_to_string(path).at(path)?, path.to_path_buf()),
        None => (
            default_text(stage)
                .ok_or_else(|| Error::Usage(format!("no defaults for stage {stage}")))?
                .to_string(),
            Path::new("pipeline").join(format!("{stage}.toml")),
        ),
    };
    toml::from_str(&text).map_err(|e| Error::Toml {
        path: origin,
        message: e.to_string().trim().replace('\n', " "),
    })
}
