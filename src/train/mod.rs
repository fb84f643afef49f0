//! Training support: rater fusion, streaming shard loading, patch sampling and batching, losses
//! on logits, pooled segmentation metrics and early stopping.

pub mod batcher;
pub mod early_stop;
pub mod fusion;
pub mod loader;
pub mod loss;
pub mod metrics;
pub mod patch;

#[cfg(test)]
mod test_shards;
