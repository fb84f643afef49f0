//! The segmentation network: the notebook's U-Net, its losses, optimizer and initialisation, and
//! the CPU kernels (`cpu`) and fused candle ops (`ops`) it trains and predicts with; candle's
//! reference compositions stay selectable (`ConvImpl`).

pub mod bilinear;
pub mod bn_stats;
pub mod cpu;
pub mod gpu;
pub mod init;
pub mod kernels;
pub mod loss;
pub mod ops;
pub mod optim;
pub mod unet;

#[cfg(test)]
mod lockstep_tests;

pub use bilinear::upsample_bilinear2x;
pub use kernels::ConvImpl;
pub use unet::{
    is_running_stat, trainable_vars, ConvLayer, DoubleConv, UNet, UNetConfig, Upsample2x,
};
