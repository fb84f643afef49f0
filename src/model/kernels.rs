//! Which implementation the U-Net's layers run: lungseg's fused CPU kernels, or candle's
//! reference compositions (kept selectable so that any change to the kernels can be checked
//! against them, down to a whole training run's epoch table).

use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// The implementation a [`crate::model::ConvLayer`], [`crate::model::DoubleConv`] and
/// [`crate::model::UNet`] use. Every variant has the same variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ConvImpl {
    /// candle's ops throughout: `conv2d` with its own backward, candle-nn's BatchNorm, ReLU,
    /// the composed bilinear upsampler and `Tensor::cat`, and max-pooling from reductions (with
    /// PyTorch's gradient; candle's `max_pool2d` divides it, see `model::cpu::pool`).
    CandleReference,
    /// lungseg's fused ops (`model::ops`): the U-Net's whole training pass is one autograd
    /// node (`model::ops::network`), on the CPU's kernels or, in a build with the `cudnn`
    /// feature, on cuDNN and lungseg's CUDA kernels (`model::gpu`); a lone
    /// [`crate::model::DoubleConv`] or [`crate::model::ConvLayer`] runs as
    /// [`ConvImpl::FusedLayers`]; evaluation records no backward (on the CPU each eval-mode
    /// BatchNorm folds into its convolution). Other devices and dtypes fall back to the
    /// reference compositions.
    Fused,
    /// The same kernels with one autograd node per layer operation (convolution,
    /// BatchNorm+ReLU, pooling, upsample+concat): candle's `GradStore` then zero-fills and adds
    /// every activation gradient. Kept to measure what the whole-network node saves.
    FusedLayers,
}

impl ConvImpl {
    /// True for the implementations that run lungseg's CPU kernels.
    pub fn is_fused(self) -> bool {
        matches!(self, ConvImpl::Fused | ConvImpl::FusedLayers)
    }
}

impl Default for ConvImpl {
    /// [`ConvImpl::Fused`], unless the environment variable `LUNGSEG_KERNELS` says `reference`
    /// (or `fused-layers`): that switches every model built with the defaults, such as the
    /// trainer's, to the reference ops for a comparison run.
    fn default() -> Self {
        static FROM_ENV: OnceLock<ConvImpl> = OnceLock::new();
        *FROM_ENV.get_or_init(|| match std::env::var("LUNGSEG_KERNELS").as_deref() {
            Ok("reference") | Ok("candle-reference") => ConvImpl::CandleReference,
            Ok("fused-layers") => ConvImpl::FusedLayers,
            _ => ConvImpl::Fused,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_impl_serde_is_kebab_case() -> candle_core::Result<()> {
        let s = serde_json::to_string(&ConvImpl::FusedLayers).map_err(candle_core::Error::wrap)?;
        assert_eq!(s, "\"fused-layers\"");
        let r: ConvImpl =
            serde_json::from_str("\"candle-reference\"").map_err(candle_core::Error::wrap)?;
        assert_eq!(r, ConvImpl::CandleReference);
        let f: ConvImpl = serde_json::from_str("\"fused\"").map_err(candle_core::Error::wrap)?;
        assert_eq!(f, ConvImpl::Fused);
        Ok(())
    }
}
