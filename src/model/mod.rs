//! The segmentation network: the notebook's U-Net and the differentiable bilinear upsampler it
//! needs (candle's own has no backward).

pub mod bilinear;
pub mod cpu;
pub mod fast_conv;
pub mod init;
pub mod kernels;
pub mod loss;
pub mod ops;
pub mod optim;
pub mod unet;

pub use bilinear::upsample_bilinear2x;
pub use fast_conv::conv2d_fast_backward;
pub use kernels::ConvImpl;
pub use unet::{
    is_running_stat, trainable_vars, ConvLayer, DoubleConv, UNet, UNetConfig, Upsample2x,
};
