//! Hand-written CPU kernels for the U-Net's layers, on plain f32 slices (no candle types): the
//! fused operations of `model::ops` call them from their `cpu_fwd` and backward passes.

pub mod adam;
pub mod bn_relu;
pub mod buffers;
pub mod conv;
pub mod loss;
pub mod par;
pub mod pool;
pub mod scratch;
pub mod simd;
pub mod upsample;
