//! The `train` stage: a candle U-Net trainer that streams shards, validates with pooled metrics
//! every epoch, stops early on a recall-first score and writes per-epoch tables.

pub mod early_stop;
pub mod state;
pub mod trainer;

pub use trainer::{run, TrainReport, INTERRUPTED};
