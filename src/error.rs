//! The library's error type: every failure carries the path or input it concerns.

use std::path::{Path, PathBuf};

/// Result alias for library code.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop a stage. I/O-like variants lead with the path. Each message holds its
/// cause's text, so the variants expose no separate `source()`: printed as a chain (`{:#}`), a
/// cause would otherwise appear twice.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system operation failed.
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// Reading or writing a Parquet file failed.
    #[error("{path}: {cause}")]
    Parquet {
        path: PathBuf,
        cause: parquet::errors::ParquetError,
    },
    /// Building or reading an Arrow record batch failed.
    #[error("{path}: {cause}")]
    Arrow {
        path: PathBuf,
        cause: arrow_schema::ArrowError,
    },
    /// A JSON file (config, summary, schema) could not be read or written.
    #[error("{path}: {cause}")]
    Json {
        path: PathBuf,
        cause: serde_json::Error,
    },
    /// A TOML config file is malformed.
    #[error("{path}: {message}")]
    Toml { path: PathBuf, message: String },
    /// A table does not match its contract in `schemas/`.
    #[error("{path}: does not match schema `{table}`: {detail}")]
    Schema {
        path: PathBuf,
        table: String,
        detail: String,
    },
    /// The user's input (a directory, a file, a previous stage's output) is missing or unusable.
    /// Exit code 2.
    #[error("{path}: {message}")]
    Input { path: PathBuf, message: String },
    /// An argument or config value is invalid. Exit code 2.
    #[error("{0}")]
    Usage(String),
    /// A tensor operation failed. The message is the first line of candle's error (candle
    /// appends a backtrace when `RUST_BACKTRACE` is set).
    #[error("{context}: {message}")]
    Tensor { context: String, message: String },
    /// Training produced a non-finite loss or weights; nothing non-finite is ever saved.
    #[error("{0}")]
    Diverged(String),
    /// The run was interrupted (Ctrl-C) after saving what it could.
    #[error("interrupted; the run was saved: rerun the same command with --resume to continue it")]
    Interrupted,
    /// Some items of a batch command failed after the others were done (exit code 1).
    #[error("{0}")]
    Partial(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            cause: source,
        }
    }

    /// Wraps a Parquet error with the path it concerns.
    pub fn parquet(path: impl AsRef<Path>, source: parquet::errors::ParquetError) -> Self {
        Error::Parquet {
            path: path.as_ref().to_path_buf(),
            cause: source,
        }
    }

    /// Wraps an Arrow error with the path it concerns.
    pub fn arrow(path: impl AsRef<Path>, source: arrow_schema::ArrowError) -> Self {
        Error::Arrow {
            path: path.as_ref().to_path_buf(),
            cause: source,
        }
    }

    /// A missing or unusable input at `path`.
    pub fn input(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::Input {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }

    /// Wraps a candle error with what was being done.
    pub fn tensor(context: impl Into<String>, source: candle_core::Error) -> Self {
        Error::Tensor {
            context: context.into(),
            message: first_line(&source.to_string()),
        }
    }

    /// The process exit code for this error: 2 for bad arguments or inputs, 130 for an
    /// interruption, 1 for a failure of the stage itself.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Input { .. } | Error::Schema { .. } | Error::Toml { .. } => 2,
            Error::Interrupted => 130,
            _ => 1,
        }
    }
}

/// Adds the path to an `io::Result`.
pub trait IoContext<T> {
    /// Attaches `path` to the error.
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

/// The first line of a message (candle and other libraries may append backtraces).
pub fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_printed_once_and_on_one_line() {
        let io = Error::io("/x/config.toml", std::io::Error::other("disk full"));
        let chain = format!("{:#}", anyhow::Error::new(io).context("lungseg"));
        assert_eq!(chain, "lungseg: /x/config.toml: disk full");
        let tensor = Error::tensor(
            "loading",
            candle_core::Error::Msg("bad\nstack backtrace:\n 0: x".into()),
        );
        assert_eq!(tensor.to_string(), "loading: bad");
    }
}
