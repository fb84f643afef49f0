//! lungseg: a lung-nodule segmentation pipeline (LIDC-IDRI slices → Parquet shards → candle U-Net).
//!
//! Two layers. The shared layer (everything above `cli` in the list below) knows the data and run
//! directories (`data`, `run`, `layout`), the network (`model`, `infer`), the metrics and the
//! table contracts. The stages (`prepare`, `split`, `train`, `eval`, `predict`, `report`,
//! `synth`) are modules with `run(&Config) -> Result<Report>` built on the shared layer; they never
//! import each other and talk only through the fixed-name files that [`layout`] knows. `cli`
//! turns arguments into validated stage configs.

// Shared infrastructure.
pub mod atomic;
pub mod config;
pub mod data;
pub mod device;
pub mod error;
pub mod fingerprint;
pub mod infer;
pub mod json;
pub mod layout;
pub mod lock;
pub mod malloc_tuning;
pub mod metrics;
pub mod model;
pub mod natural;
pub mod overlay;
pub mod pixels;
pub mod progress;
pub mod rng;
pub mod run;
pub mod schema;
pub mod slice_id;
pub mod table;
pub mod wording;

// The stages, on top of the shared layer.
pub mod cli;
pub mod eval;
pub mod predict;
pub mod prepare;
pub mod report;
pub mod split;
pub mod synth;
pub mod train;

pub use error::{Error, Result};
