//! The library's error type: every failure carries the path or input it concerns.

use std::path::{Path, PathBuf};

/// Result alias for library code.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop a stage. I/O-like variants lead with the path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system operation failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing a Parquet file failed.
    #[error("{path}: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Building or reading an Arrow record batch failed.
    #[error("{path}: {source}")]
    Arrow {
        path: PathBuf,
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// A JSON file (config, summary, schema) could not be read or written.
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
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
    /// A tensor operation failed.
    #[error("{context}: {source}")]
    Tensor {
        context: String,
        #[source]
        source: candle_core::Error,
    },
    /// The run was interrupted (Ctrl-C) after saving what it could.
    #[error("interrupted")]
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
            source,
        }
    }

    /// Wraps a Parquet error with the path it concerns.
    pub fn parquet(path: impl AsRef<Path>, source: parquet::errors::ParquetError) -> Self {
        Error::Parquet {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// Wraps an Arrow error with the path it concerns.
    pub fn arrow(path: impl AsRef<Path>, source: arrow_schema::ArrowError) -> Self {
        Error::Arrow {
            path: path.as_ref().to_path_buf(),
            source,
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
            source,
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
