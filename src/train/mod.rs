//! Training support: losses on logits, pooled segmentation metrics and early stopping.

pub mod early_stop;
pub mod loss;
pub mod metrics;
