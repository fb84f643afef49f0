//! The segmentation network and what training it needs from candle: the notebook's U-Net, the
//! differentiable bilinear upsampler (candle's own has no backward), the fast CPU convolution
//! backward, the losses, Adam with savable state, and PyTorch-like seeded initialisation.

pub mod bilinear;
pub mod fast_conv;
pub mod init;
pub mod loss;
pub mod optim;
pub mod unet;

pub use bilinear::upsample_bilinear2x;
pub use fast_conv::{conv2d_fast_backward, ConvImpl};
pub use unet::{
    is_running_stat, trainable_vars, ConvLayer, DoubleConv, UNet, UNetConfig, Upsample2x,
};
