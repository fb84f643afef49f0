//! lungseg: a lung-nodule segmentation pipeline (LIDC-IDRI slices → Parquet shards → candle U-Net).
//!
//! Each stage is a module with `run(&Config) -> Result<Report>`; stages talk only through the
//! fixed-name files that [`layout`] knows.

pub mod atomic;
pub mod cli;
pub mod config;
pub mod error;
pub mod eval;
pub mod layout;
pub mod malloc_tuning;
pub mod model;
pub mod predict;
pub mod prepare;
pub mod progress;
pub mod report;
pub mod rng;
pub mod schema;
pub mod split;
pub mod synth;
pub mod table;
pub mod train;

pub use error::{Error, Result};
