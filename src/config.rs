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

/// Loads a stage's settings: the embedded `pipeline/<stage>.toml`, with the keys of `file` (when
/// given) in place of the defaults they name; the others keep their defaults. Unknown keys are
/// errors, so a typo in a config file is caught before any work starts.
pub fn load_stage<T: DeserializeOwned>(stage: Stage, file: Option<&Path>) -> Result<T> {
    let default_path = Path::new("pipeline").join(format!("{}.toml", stage.name()));
    let mut table = parse(stage.default_text(), &default_path)?;
    let origin = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::input(path, format!("cannot read the config file: {e}")))?;
            table.extend(parse(&text, path)?);
            path.to_path_buf()
        }
        None => default_path,
    };
    T::deserialize(table).map_err(|e| toml_error(&origin, &e))
}

/// `name old -> new` for every setting that differs between two settings structs of a stage
/// (compared as their JSON form), for "started with different settings (...)" messages.
pub fn settings_diff<T: serde::Serialize>(old: &T, new: &T) -> Vec<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return vec!["settings".into()];
    };
    a.iter()
        .filter_map(|(key, was)| {
            let now = b.get(key)?;
            (was != now).then(|| format!("{key} {was} -> {now}"))
        })
        .collect()
}

fn parse(text: &str, path: &Path) -> Result<toml::Table> {
    text.parse::<toml::Table>()
        .map_err(|e| toml_error(path, &e))
}

/// A TOML error as toml words it, its caret diagram of the offending line included.
fn toml_error(path: &Path, e: &impl std::fmt::Display) -> Error {
    Error::Toml {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::settings::TrainSettings;

    #[test]
    fn the_diff_names_each_changed_setting() {
        let old: TrainSettings = load_stage(Stage::Train, None).unwrap();
        let mut new = old.clone();
        assert!(settings_diff(&old, &new).is_empty());
        new.lr = 0.01;
        new.patience = 8;
        assert_eq!(
            settings_diff(&old, &new),
            vec!["lr 0.0001 -> 0.01", "patience 5 -> 8"]
        );
    }

    #[test]
    fn a_partial_config_overrides_only_the_keys_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.toml");
        std::fs::write(&path, "lr = 3e-3\nbase_channels = 8\n").unwrap();
        let s: TrainSettings = load_stage(Stage::Train, Some(&path)).unwrap();
        let d: TrainSettings = load_stage(Stage::Train, None).unwrap();
        assert_eq!((s.lr, s.base_channels), (3e-3, 8));
        assert_eq!(
            TrainSettings {
                lr: d.lr,
                base_channels: d.base_channels,
                ..s
            },
            d
        );
        std::fs::write(&path, "lr = 3e-3\nlearning_rate = 1\n").unwrap();
        let err = load_stage::<TrainSettings>(Stage::Train, Some(&path)).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("learning_rate"), "{err}");
    }
}
