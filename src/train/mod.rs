//! The `train` stage: a candle U-Net trainer that streams shards, validates with pooled metrics
//! every epoch, stops early on a recall-first score and writes per-epoch tables.

pub mod commit;
pub mod early_stop;
pub mod epoch;
pub mod last;
pub mod log;
pub mod report;
pub mod start;
pub mod state;
pub mod trainer;

pub use report::TrainReport;
pub use trainer::run;

use std::sync::atomic::AtomicBool;

/// Set by the Ctrl-C handler: the loop finishes its current step, saves `last` and returns.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);
