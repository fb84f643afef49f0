//! Inference with a trained run: loading its U-Net and the one whole-slice path (pad to a
//! multiple of 4, forward, crop back) that validation, `eval` and `predict` share.

pub mod model;
