//! The `train` stage: a candle U-Net trainer that streams shards, validates with pooled metrics
//! every epoch, stops early on a recall-first score and writes per-epoch tables.

pub mod batcher;
pub mod device;
pub mod early_stop;
pub mod epochs;
pub mod fusion;
pub mod loader;
pub mod metrics;
pub mod patch;
pub mod settings;
pub mod state;
pub mod trainer;

#[cfg(test)]
pub(crate) mod test_shards;

pub use trainer::{run, TrainReport, INTERRUPTED};
