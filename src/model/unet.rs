//! The notebook's three-level U-Net, with variable names equal to the PyTorch `state_dict` keys
//! so that a saved safetensors file loads into the original module tree.
//!
//! Naming: a `DoubleConv` is PyTorch's `nn.Sequential` called `net`, whose children are
//! `0` conv, `1` batch-norm, `2` ReLU, `3` conv, `4` batch-norm, `5` ReLU; so the keys are
//! `d1.net.0.weight`, `d1.net.1.running_mean`, …, `out.weight`, `out.bias`.
//!
//! PyTorch's `BatchNorm2d` also carries an integer buffer `num_batches_tracked` that candle has
//! no equivalent of. It only matters when `momentum=None` (cumulative averaging), which the
//! notebook does not use, so: a loader into PyTorch should call `load_state_dict(sd,
//! strict=False)` or insert `num_batches_tracked = tensor(0, dtype=torch.long)` for each
//! batch-norm; a loader from PyTorch into candle should drop those keys (`VarMap::load` ignores
//! names it does not know).

use candle_core::{Module, ModuleT, Result, Tensor, Var};
use candle_nn::{BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::bilinear::upsample_bilinear2x;
use super::cpu::buffers::BufferPool;
use super::kernels::ConvImpl;
use super::ops::bn_relu::{batch_norm_relu_reference, batch_norm_relu_train, update_running_stats};
use super::ops::conv::{conv2d, conv2d_bn_relu_inference, conv2d_inference, fold_batch_norm};
use super::ops::inference::{unet_eval_forward, EvalParams, FoldedConv};
use super::ops::network::{unet_eval_forward_packed, unet_train_forward, NetStats};
use super::ops::pool::{max_pool2x2, max_pool2x2_reference};
use super::ops::upsample::upsample_cat;
use super::ops::{fused_applies, network_op_applies};

/// Hyper-parameters of the U-Net.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UNetConfig {
    /// Channels of the first level (`c`); the levels use `c`, `2c`, `4c`. The notebook uses 64.
    pub base_channels: usize,
}

impl Default for UNetConfig {
    fn default() -> Self {
        Self { base_channels: 64 }
    }
}

/// Which ×2 upsampling the decoder uses. Swappable without touching the training loop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Upsample2x {
    /// Bilinear, `align_corners=False`, composed from differentiable candle ops (trainable).
    #[default]
    Bilinear,
    /// candle's native `upsample_bilinear2d` kernel: same values, but it has **no backward**,
    /// so use it for inference only.
    CandleNative,
}

impl Upsample2x {
    /// `(B, C, H, W)` → `(B, C, 2H, 2W)`.
    pub fn apply(self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::Bilinear => upsample_bilinear2x(xs),
            Self::CandleNative => {
                let (_b, _c, h, w) = xs.dims4()?;
                xs.upsample_bilinear2d(2 * h, 2 * w, false)
            }
        }
    }
}

/// A 2-D convolution with PyTorch-compatible `weight`/`bias` names; a seam for swapping the
/// convolution implementation (candle's `conv2d` is the reference, see [`ConvImpl`]).
///
/// [`Module::forward`] records the backward; [`ConvLayer::forward_inference`] does not.
#[derive(Debug, Clone)]
pub struct ConvLayer {
    conv: Conv2d,
    imp: ConvImpl,
}

impl ConvLayer {
    /// A `kernel × kernel` convolution with `padding` and bias, initialised as candle does, using
    /// the default implementation ([`ConvImpl::Fused`] unless `LUNGSEG_KERNELS` says otherwise).
    pub fn new(
        in_c: usize,
        out_c: usize,
        kernel: usize,
        padding: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Self::with_impl(in_c, out_c, kernel, padding, ConvImpl::default(), vb)
    }

    /// [`ConvLayer::new`] with a chosen implementation. The variables are the same either way.
    pub fn with_impl(
        in_c: usize,
        out_c: usize,
        kernel: usize,
        padding: usize,
        imp: ConvImpl,
        vb: VarBuilder,
    ) -> Result<Self> {
        let cfg = Conv2dConfig {
            padding,
            ..Default::default()
        };
        Ok(Self {
            conv: candle_nn::conv2d(in_c, out_c, kernel, cfg, vb)?,
            imp,
        })
    }

    /// The implementation this layer was built with (non-CPU devices always run the reference).
    pub fn conv_impl(&self) -> ConvImpl {
        self.imp
    }

    /// The forward pass without recording a backward (evaluation and prediction).
    ///
    /// # Shapes
    /// `(B, C_in, H, W)` → `(B, C_out, H + 2p - k + 1, W + 2p - k + 1)`.
    pub fn forward_inference(&self, xs: &Tensor) -> Result<Tensor> {
        match (self.imp, self.conv.bias()) {
            (imp, Some(bias)) if imp.is_fused() => {
                conv2d_inference(xs, self.conv.weight(), bias, self.padding())
            }
            _ => Ok(self.forward(xs)?.detach()),
        }
    }

    /// `relu(bn(self(xs)))` with `bn` in evaluation mode, without recording a backward; the
    /// fused implementation folds the batch-norm into the convolution's epilogue.
    fn forward_bn_relu_inference(&self, xs: &Tensor, bn: &BatchNorm) -> Result<Tensor> {
        match (self.imp, self.conv.bias()) {
            (imp, Some(bias)) if imp.is_fused() => {
                conv2d_bn_relu_inference(xs, self.conv.weight(), bias, bn, self.padding())
            }
            _ => Ok(batch_norm_relu_reference(&self.forward(xs)?, bn, false)?.detach()),
        }
    }

    fn padding(&self) -> usize {
        self.conv.config().padding
    }
}

impl Module for ConvLayer {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self.imp {
            ConvImpl::Fused | ConvImpl::FusedLayers => match self.conv.bias() {
                Some(bias) => conv2d(xs, self.conv.weight(), bias, self.padding()),
                None => self.conv.forward(xs),
            },
            _ => self.conv.forward(xs),
        }
    }
}

/// `Conv3x3 → BN → ReLU → Conv3x3 → BN → ReLU`, PyTorch's `DoubleConv.net`.
#[derive(Debug, Clone)]
pub struct DoubleConv {
    conv1: ConvLayer,
    bn1: BatchNorm,
    conv2: ConvLayer,
    bn2: BatchNorm,
}

/// The running statistics' momentum, PyTorch's default: `running ← 0.9·running + 0.1·batch`.
pub const BN_MOMENTUM: f64 = 0.1;

/// PyTorch `BatchNorm2d` defaults.
fn bn_config() -> BatchNormConfig {
    BatchNormConfig {
        eps: 1e-5,
        momentum: BN_MOMENTUM,
        affine: true,
        remove_mean: true,
    }
}

impl DoubleConv {
    /// Creates the block under `vb` (which should be the module's prefix, e.g. `d1`).
    pub fn new(in_c: usize, out_c: usize, vb: VarBuilder) -> Result<Self> {
        Self::with_impl(in_c, out_c, ConvImpl::default(), vb)
    }

    /// [`DoubleConv::new`] with a chosen convolution implementation.
    pub fn with_impl(in_c: usize, out_c: usize, conv: ConvImpl, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("net");
        Ok(Self {
            conv1: ConvLayer::with_impl(in_c, out_c, 3, 1, conv, vb.pp("0"))?,
            bn1: candle_nn::batch_norm(out_c, bn_config(), vb.pp("1"))?,
            conv2: ConvLayer::with_impl(out_c, out_c, 3, 1, conv, vb.pp("3"))?,
            bn2: candle_nn::batch_norm(out_c, bn_config(), vb.pp("4"))?,
        })
    }

    /// The block's trainable tensors in the fused network's packing order (conv 1 weight and
    /// bias, batch-norm 1 weight and bias, then the same for conv 2 and batch-norm 2), or
    /// `None` if a layer lacks a bias or affine parameters.
    fn params(&self) -> Option<[&Tensor; 8]> {
        let (g1, b1) = self.bn1.weight_and_bias()?;
        let (g2, b2) = self.bn2.weight_and_bias()?;
        Some([
            self.conv1.conv.weight(),
            self.conv1.conv.bias()?,
            g1,
            b1,
            self.conv2.conv.weight(),
            self.conv2.conv.bias()?,
            g2,
            b2,
        ])
    }
}

impl ModuleT for DoubleConv {
    /// `train` selects batch statistics (and updates the running ones) and records the
    /// backward; evaluation records nothing (with the fused implementation).
    ///
    /// # Shapes
    /// `(B, in_c, H, W)` → `(B, out_c, H, W)`.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let fused = self.conv1.conv_impl().is_fused();
        if !train {
            let xs = self.conv1.forward_bn_relu_inference(xs, &self.bn1)?; // (B, out_c, H, W)
            return self.conv2.forward_bn_relu_inference(&xs, &self.bn2); // (B, out_c, H, W)
        }
        let bn_relu = |xs: &Tensor, bn: &BatchNorm| {
            if fused {
                batch_norm_relu_train(xs, bn)
            } else {
                batch_norm_relu_reference(xs, bn, true)
            }
        };
        let xs = self.conv1.forward(xs)?; // (B, out_c, H, W)
        let xs = bn_relu(&xs, &self.bn1)?; // (B, out_c, H, W)
        let xs = self.conv2.forward(&xs)?; // (B, out_c, H, W)
        bn_relu(&xs, &self.bn2) // (B, out_c, H, W)
    }
}

/// The notebook's U-Net: two poolings, bilinear decoder, one-channel logit head.
#[derive(Debug, Clone)]
pub struct UNet {
    d1: DoubleConv,
    d2: DoubleConv,
    d3: DoubleConv,
    u1: DoubleConv,
    u2: DoubleConv,
    out: ConvLayer,
    upsample: Upsample2x,
    imp: ConvImpl,
    base: usize,
    /// Activation and gradient buffers of the fused training pass, reused across steps.
    buffers: BufferPool,
    /// Activation buffers of the fused eval forward, kept for one input shape at a time.
    eval_buffers: BufferPool,
}

impl UNet {
    /// Builds the net under the root of `vb` with the trainable bilinear upsampler.
    pub fn new(cfg: &UNetConfig, vb: VarBuilder) -> Result<Self> {
        Self::with_upsample(cfg, Upsample2x::default(), vb)
    }

    /// Builds the net with a chosen upsampling implementation.
    pub fn with_upsample(cfg: &UNetConfig, upsample: Upsample2x, vb: VarBuilder) -> Result<Self> {
        Self::with_impls(cfg, upsample, ConvImpl::default(), vb)
    }

    /// Builds the net with chosen upsampling and convolution implementations (the variables do
    /// not depend on either).
    pub fn with_impls(
        cfg: &UNetConfig,
        upsample: Upsample2x,
        conv: ConvImpl,
        vb: VarBuilder,
    ) -> Result<Self> {
        let c = cfg.base_channels;
        if c == 0 {
            candle_core::bail!("UNet base_channels must be positive")
        }
        Ok(Self {
            d1: DoubleConv::with_impl(1, c, conv, vb.pp("d1"))?,
            d2: DoubleConv::with_impl(c, 2 * c, conv, vb.pp("d2"))?,
            d3: DoubleConv::with_impl(2 * c, 4 * c, conv, vb.pp("d3"))?,
            u1: DoubleConv::with_impl(4 * c + 2 * c, 2 * c, conv, vb.pp("u1"))?,
            u2: DoubleConv::with_impl(2 * c + c, c, conv, vb.pp("u2"))?,
            out: ConvLayer::with_impl(c, 1, 1, 0, conv, vb.pp("out"))?,
            upsample,
            imp: conv,
            base: c,
            buffers: BufferPool::default(),
            eval_buffers: BufferPool::default(),
        })
    }

    /// Sigmoid of [`ModuleT::forward_t`]: per-pixel nodule probabilities `(B, 1, H, W)`.
    pub fn probabilities(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        candle_nn::ops::sigmoid(&self.forward_t(xs, train)?)
    }

    /// The five blocks in network order.
    fn blocks(&self) -> [&DoubleConv; 5] {
        [&self.d1, &self.d2, &self.d3, &self.u1, &self.u2]
    }

    /// The training forward as one fused op (`model::ops::network`), if this net and input
    /// allow it: the fused implementation with the trainable bilinear upsampler, f32 on the
    /// CPU (or on CUDA with the `cudnn` feature), every layer with its bias and affine
    /// parameters. Updates the running statistics.
    fn forward_train_fused(&self, xs: &Tensor) -> Result<Option<Tensor>> {
        if self.imp != ConvImpl::Fused
            || self.upsample != Upsample2x::Bilinear
            || !network_op_applies(xs)
        {
            return Ok(None);
        }
        let Some(packed) = self.packed_params()? else {
            return Ok(None);
        };
        // Every batch-norm of the net is built with the same `bn_config`.
        let eps = self.d1.bn1.eps();
        let (logits, stats) = unet_train_forward(xs, &packed, self.base, eps, &self.buffers)?;
        let update = |bn: &BatchNorm, i: usize, n: usize| -> Result<()> {
            match &stats {
                NetStats::Host(s) => update_running_stats(bn, &s[i], n),
                #[cfg(feature = "cudnn")]
                NetStats::Device(s) => crate::model::gpu::update_running_stats(bn, &s[i], n),
            }
        };
        let (b, _one, h, w) = xs.dims4()?;
        let levels = [1, 2, 4, 2, 1]; // d1, d2, d3, u1, u2: input size over the block's
        for (j, (block, div)) in self.blocks().iter().zip(levels).enumerate() {
            let n = b * (h / div) * (w / div);
            update(&block.bn1, 2 * j, n)?;
            update(&block.bn2, 2 * j + 1, n)?;
        }
        Ok(Some(logits))
    }

    /// The 42 trainable tensors flattened and concatenated in `ops::network::param_sizes`
    /// order, or `None` if a layer lacks its bias or affine parameters.
    fn packed_params(&self) -> Result<Option<Tensor>> {
        let mut params = Vec::with_capacity(42);
        for block in self.blocks() {
            let Some(p) = block.params() else {
                return Ok(None);
            };
            params.extend(p);
        }
        let (Some(out_bias), out_weight) = (self.out.conv.bias(), self.out.conv.weight()) else {
            return Ok(None);
        };
        params.extend([out_weight, out_bias]);
        let flat = params
            .iter()
            .map(|t| t.flatten_all())
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Tensor::cat(&flat, 0)?))
    }

    /// The eval-mode forward on the whole-network op's kernels (`ops::network`): the packed
    /// parameters and running statistics in, logits out, no backward node. CUDA's fused
    /// evaluation; on the CPU [`UNet::forward_eval_fused`] folds the batch-norms instead.
    fn forward_eval_packed(&self, xs: &Tensor) -> Result<Option<Tensor>> {
        let Some(packed) = self.packed_params()? else {
            return Ok(None);
        };
        let mut running = Vec::with_capacity(20);
        for block in self.blocks() {
            for bn in [&block.bn1, &block.bn2] {
                running.extend([
                    bn.running_mean().flatten_all()?,
                    bn.running_var().flatten_all()?,
                ]);
            }
        }
        let running = Tensor::cat(&running, 0)?;
        let eps = self.d1.bn1.eps();
        let logits = unet_eval_forward_packed(xs, &packed, &running, self.base, eps, &self.buffers);
        Ok(Some(logits?))
    }

    /// The eval-mode forward as one fused op without a backward node (on the CPU
    /// `model::ops::inference`, on CUDA [`UNet::forward_eval_packed`]), under the same
    /// conditions as [`UNet::forward_train_fused`].
    fn forward_eval_fused(&self, xs: &Tensor) -> Result<Option<Tensor>> {
        if self.imp != ConvImpl::Fused
            || self.upsample != Upsample2x::Bilinear
            || !network_op_applies(xs)
        {
            return Ok(None);
        }
        if !fused_applies(xs) {
            return self.forward_eval_packed(xs);
        }
        let fold = |conv: &ConvLayer, bn: &BatchNorm| -> Result<Option<FoldedConv>> {
            let Some(bias) = conv.conv.bias() else {
                return Ok(None);
            };
            let (scale, shift) = fold_batch_norm(bn, bias)?;
            let weight = conv.conv.weight().flatten_all()?.to_vec1()?;
            Ok(Some(FoldedConv {
                weight,
                scale,
                shift,
            }))
        };
        let mut blocks = Vec::with_capacity(5);
        for block in self.blocks() {
            match (
                fold(&block.conv1, &block.bn1)?,
                fold(&block.conv2, &block.bn2)?,
            ) {
                (Some(a), Some(b)) => blocks.push([a, b]),
                _ => return Ok(None),
            }
        }
        let (Ok(blocks), Some(bias)) = (blocks.try_into(), self.out.conv.bias()) else {
            return Ok(None);
        };
        let params = EvalParams {
            blocks,
            head_weight: self.out.conv.weight().flatten_all()?.to_vec1()?,
            head_bias: bias.to_vec1()?,
        };
        self.eval_buffers.reserve_for(xs.dims());
        Ok(Some(unet_eval_forward(
            xs,
            self.base,
            params,
            &self.eval_buffers,
        )?))
    }

    /// 2×2 max-pooling: the fused op, or the reference composition.
    fn pool(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        if self.imp.is_fused() {
            max_pool2x2(xs, train)
        } else {
            max_pool2x2_reference(xs)
        }
    }

    /// `cat([upsample(low), skip], 1)`: the fused op for the trainable bilinear upsampler with
    /// the fused implementation, else the composition.
    fn up_cat(&self, low: &Tensor, skip: &Tensor, train: bool) -> Result<Tensor> {
        if self.imp.is_fused() && self.upsample == Upsample2x::Bilinear {
            upsample_cat(low, skip, train)
        } else {
            Tensor::cat(&[&self.upsample.apply(low)?, skip], 1)
        }
    }
}

impl ModuleT for UNet {
    /// Returns **logits** (apply a sigmoid, or use [`UNet::probabilities`], for probabilities).
    /// `train` selects batch statistics (and updates the running ones) in every batch-norm.
    /// With the fused implementation on the CPU (or on CUDA with the `cudnn` feature), training
    /// records one backward node for the whole net (`model::ops::network`) and evaluation
    /// records none (`model::ops::inference` on the CPU, the network op's kernels on CUDA).
    ///
    /// # Shapes
    /// `xs`: `(B, 1, H, W)` with `H` and `W` multiples of 4 → `(B, 1, H, W)`.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let (_b, _one, h, w) = xs.dims4()?;
        if h % 4 != 0 || w % 4 != 0 {
            candle_core::bail!("UNet input H and W must be multiples of 4, got {h}x{w}")
        }
        let fused = if train {
            self.forward_train_fused(xs)?
        } else {
            self.forward_eval_fused(xs)?
        };
        if let Some(logits) = fused {
            return Ok(logits);
        }
        let c1 = self.d1.forward_t(xs, train)?; // (B, c, H, W)
        let c2 = self.d2.forward_t(&self.pool(&c1, train)?, train)?; // (B, 2c, H/2, W/2)
        let c3 = self.d3.forward_t(&self.pool(&c2, train)?, train)?; // (B, 4c, H/4, W/4)
        let up3 = self.up_cat(&c3, &c2, train)?; // (B, 4c + 2c, H/2, W/2)
        let u1 = self.u1.forward_t(&up3, train)?; // (B, 2c, H/2, W/2)
        let up1 = self.up_cat(&u1, &c1, train)?; // (B, 2c + c, H, W)
        let u2 = self.u2.forward_t(&up1, train)?; // (B, c, H, W)
        if train {
            self.out.forward(&u2) // (B, 1, H, W)
        } else {
            self.out.forward_inference(&u2) // (B, 1, H, W)
        }
    }
}

/// True for batch-norm running statistics, which are saved but not trained.
pub fn is_running_stat(name: &str) -> bool {
    name.ends_with(".running_mean") || name.ends_with(".running_var")
}

/// The variables an optimizer should update, with their names: everything in `varmap` except
/// batch-norm running statistics, sorted by name so the order is deterministic.
pub fn trainable_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let map = varmap
        .data()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut named: Vec<(String, Var)> = map
        .iter()
        .filter(|(name, _)| !is_running_stat(name))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::testing::rel_err;
    use candle_core::{DType, Device};

    fn build(base: usize) -> Result<(VarMap, UNet)> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let net = UNet::new(
            &UNetConfig {
                base_channels: base,
            },
            vb,
        )?;
        Ok((varmap, net))
    }

    #[test]
    fn unet_shapes_base4() -> Result<()> {
        let (_vm, net) = build(4)?;
        let x = Tensor::randn(0f32, 1.0, (2, 1, 16, 16), &Device::Cpu)?;
        assert_eq!(net.forward_t(&x, true)?.dims(), &[2, 1, 16, 16]);
        assert_eq!(net.forward_t(&x, false)?.dims(), &[2, 1, 16, 16]);
        let p = net
            .probabilities(&x, false)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert!(p.iter().all(|v| (0.0..=1.0).contains(v)));
        Ok(())
    }

    #[test]
    fn unet_rejects_non_multiple_of_4() -> Result<()> {
        let (_vm, net) = build(4)?;
        let x = Tensor::zeros((1, 1, 18, 16), DType::F32, &Device::Cpu)?;
        assert!(net.forward_t(&x, false).is_err());
        Ok(())
    }

    #[test]
    fn unet_var_names_match_pytorch_state_dict() -> Result<()> {
        let (varmap, _net) = build(4)?;
        let data = varmap
            .data()
            .lock()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let mut got: Vec<(String, Vec<usize>)> = data
            .iter()
            .map(|(k, v)| (k.clone(), v.dims().to_vec()))
            .collect();
        got.sort();
        // PyTorch state_dict of the notebook's UNet(base=4), minus `num_batches_tracked`.
        // (module, in, out) per DoubleConv: d1 1→4, d2 4→8, d3 8→16, u1 24→8, u2 12→4.
        let mut want: Vec<(String, Vec<usize>)> = Vec::new();
        for (m, i, o) in [
            ("d1", 1, 4),
            ("d2", 4, 8),
            ("d3", 8, 16),
            ("u1", 24, 8),
            ("u2", 12, 4),
        ] {
            want.push((format!("{m}.net.0.weight"), vec![o, i, 3, 3]));
            want.push((format!("{m}.net.0.bias"), vec![o]));
            for s in ["weight", "bias", "running_mean", "running_var"] {
                want.push((format!("{m}.net.1.{s}"), vec![o]));
            }
            want.push((format!("{m}.net.3.weight"), vec![o, o, 3, 3]));
            want.push((format!("{m}.net.3.bias"), vec![o]));
            for s in ["weight", "bias", "running_mean", "running_var"] {
                want.push((format!("{m}.net.4.{s}"), vec![o]));
            }
        }
        want.push(("out.weight".to_string(), vec![1, 4, 1, 1]));
        want.push(("out.bias".to_string(), vec![1]));
        want.sort();
        assert_eq!(got, want);
        Ok(())
    }

    #[test]
    fn trainable_vars_skip_running_stats() -> Result<()> {
        let (varmap, _net) = build(4)?;
        // 5 DoubleConvs × (2 conv × 2 + 2 bn × 2) + out conv 2 = 42 trainable tensors.
        assert_eq!(trainable_vars(&varmap).len(), 42);
        assert_eq!(varmap.all_vars().len(), 42 + 20);
        Ok(())
    }

    #[test]
    fn train_mode_updates_running_stats() -> Result<()> {
        let (varmap, net) = build(4)?;
        let x = Tensor::randn(0f32, 1.0, (2, 1, 8, 8), &Device::Cpu)?;
        net.forward_t(&x, true)?;
        let data = varmap
            .data()
            .lock()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let rm = data
            .get("d1.net.1.running_mean")
            .ok_or_else(|| candle_core::Error::Msg("missing running_mean".into()))?;
        let moved = rm.as_tensor().abs()?.sum_all()?.to_scalar::<f32>()?;
        assert!(moved > 0.0, "running mean did not move");
        Ok(())
    }

    #[test]
    fn one_adamw_step_reduces_dice_loss() -> Result<()> {
        use crate::model::loss::soft_dice_loss;
        use candle_nn::{AdamW, Optimizer, ParamsAdamW};
        let (varmap, net) = build(4)?;
        crate::model::init::init_like_pytorch(&varmap, 3)?;
        let dev = Device::Cpu;
        let (x, _) = seeded_batch(5, &dev)?;
        // A square "nodule" in each slice.
        let mut mask = vec![0f32; 2 * 16 * 16];
        for b in 0..2 {
            for r in 5..10 {
                for c in 6..11 {
                    mask[b * 256 + r * 16 + c] = 1.0;
                }
            }
        }
        let y = Tensor::from_vec(mask, (2, 1, 16, 16), &dev)?;
        let params = ParamsAdamW {
            lr: 1e-2,
            weight_decay: 0.0,
            ..Default::default()
        };
        let vars = trainable_vars(&varmap)
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        let mut opt = AdamW::new(vars, params)?;
        let before = soft_dice_loss(&net.forward_t(&x, true)?, &y)?;
        opt.backward_step(&before)?;
        let after = soft_dice_loss(&net.forward_t(&x, true)?, &y)?;
        let (b, a) = (before.to_scalar::<f32>()?, after.to_scalar::<f32>()?);
        assert!(a < b, "dice loss did not decrease: {b} -> {a}");
        Ok(())
    }

    /// A seeded (B=2, 1, 16, 16) input and a {0,1} target with about 30% foreground.
    fn seeded_batch(seed: u64, dev: &Device) -> Result<(Tensor, Tensor)> {
        let mut rng = crate::rng::SplitMix64::new(seed);
        let x: Vec<f32> = (0..512).map(|_| rng.normal() as f32).collect();
        let y: Vec<f32> = (0..512)
            .map(|_| f32::from(u8::from(rng.chance(0.3))))
            .collect();
        Ok((
            Tensor::from_vec(x, (2, 1, 16, 16), dev)?,
            Tensor::from_vec(y, (2, 1, 16, 16), dev)?,
        ))
    }

    /// A seeded `(B, 1, H, W)` input and target on the CPU.
    fn seeded_input(seed: u64, dims: (usize, usize, usize)) -> Result<(Tensor, Tensor)> {
        crate::model::ops::testing::seeded_batch(seed, dims, &Device::Cpu)
    }

    /// The forward error of `imp` against the reference ops, after checking every parameter's
    /// gradient of the Dice loss to 1e-4 of the largest gradient in the net. Both nets share
    /// their variables, so both see the same running statistics.
    fn unet_error_against_reference(
        imp: ConvImpl,
        base: usize,
        dims: (usize, usize, usize),
    ) -> Result<f32> {
        use crate::model::loss::soft_dice_loss;
        let varmap = VarMap::new();
        let dev = Device::Cpu;
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let cfg = UNetConfig {
            base_channels: base,
        };
        let reference = UNet::with_impls(
            &cfg,
            Upsample2x::Bilinear,
            ConvImpl::CandleReference,
            vb.clone(),
        )?;
        let other = UNet::with_impls(&cfg, Upsample2x::Bilinear, imp, vb)?;
        assert_eq!(other.out.conv_impl(), imp);
        crate::model::init::init_like_pytorch(&varmap, 7)?;
        let (x, y) = seeded_input(11, dims)?;
        let logits_ref = reference.forward_t(&x, true)?;
        let logits = other.forward_t(&x, true)?;
        let fwd_err = rel_err(&logits, &logits_ref)?;
        let g_ref = soft_dice_loss(&logits_ref, &y)?.backward()?;
        let g = soft_dice_loss(&logits, &y)?.backward()?;
        let names = trainable_vars(&varmap);
        assert_eq!(names.len(), 42);
        let mut pairs = Vec::new();
        for (name, var) in names {
            let missing = || candle_core::Error::Msg(format!("no gradient for {name}"));
            let a = g.get(var.as_tensor()).ok_or_else(missing)?.clone();
            let b = g_ref.get(var.as_tensor()).ok_or_else(missing)?.clone();
            let scale = b.abs()?.max_all()?.to_scalar::<f32>()?;
            pairs.push((name, a, b, scale));
        }
        // The biases of convolutions followed by a train-mode batch-norm have an exactly-zero
        // true gradient (the mean is subtracted), so theirs are rounding noise (~1e-9): measure
        // every error against at least 1e-3 of the largest gradient in the net.
        let floor = 1e-3 * pairs.iter().map(|p| p.3).fold(0f32, f32::max);
        assert!(floor > 0.0, "all gradients are zero");
        for (name, a, b, scale) in pairs {
            let diff = (&a - &b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            if name.ends_with(".net.0.bias") || name.ends_with(".net.3.bias") {
                // Zero in exact arithmetic: both sides must be rounding noise.
                assert!(scale < floor, "{name}: |g| {scale} is not negligible");
                let own = a.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(own < floor, "{name}: |g| {own} is not negligible ({imp:?})");
                continue;
            }
            let err = diff / scale.max(floor);
            assert!(
                err < 1e-4,
                "{name}: rel err {err} (max |g| {scale}, {imp:?})"
            );
        }
        Ok(fwd_err)
    }

    #[test]
    fn fused_unet_forward_and_gradients_match_reference() -> Result<()> {
        // Widths that are not multiples of 8, odd sizes of the deepest level, batch 1.
        for imp in [ConvImpl::Fused, ConvImpl::FusedLayers] {
            for (base, dims) in [(4, (2, 16, 16)), (3, (1, 12, 20)), (5, (3, 8, 4))] {
                let err = unet_error_against_reference(imp, base, dims)?;
                assert!(
                    err < 1e-4,
                    "{imp:?} base {base} {dims:?}: forward rel err {err}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn fused_training_updates_running_stats_like_reference() -> Result<()> {
        let build = |imp| -> Result<(VarMap, UNet)> {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
            let cfg = UNetConfig { base_channels: 3 };
            let net = UNet::with_impls(&cfg, Upsample2x::Bilinear, imp, vb)?;
            crate::model::init::init_like_pytorch(&varmap, 5)?;
            Ok((varmap, net))
        };
        let (vm_ref, reference) = build(ConvImpl::CandleReference)?;
        let (vm_fused, fused) = build(ConvImpl::Fused)?;
        for seed in 0..2 {
            let (x, _) = seeded_input(seed, (2, 8, 12))?;
            reference.forward_t(&x, true)?;
            fused.forward_t(&x, true)?;
        }
        let (a, b) = (
            vm_ref.data().lock().unwrap(),
            vm_fused.data().lock().unwrap(),
        );
        let stats: Vec<&String> = a.keys().filter(|k| is_running_stat(k)).collect();
        assert_eq!(stats.len(), 20);
        for name in stats {
            let (ra, rb) = (a[name].as_tensor(), b[name].as_tensor());
            let err = rel_err(rb, ra)?;
            assert!(err < 1e-5, "{name}: rel err {err}");
        }
        Ok(())
    }

    #[test]
    fn fused_eval_forward_matches_reference_and_records_nothing() -> Result<()> {
        let varmap = VarMap::new();
        let dev = Device::Cpu;
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let cfg = UNetConfig { base_channels: 6 };
        let reference = UNet::with_impls(
            &cfg,
            Upsample2x::Bilinear,
            ConvImpl::CandleReference,
            vb.clone(),
        )?;
        let fused = UNet::with_impls(&cfg, Upsample2x::Bilinear, ConvImpl::Fused, vb)?;
        crate::model::init::init_like_pytorch(&varmap, 3)?;
        // Move the running statistics away from (0, 1) with a few training passes.
        for seed in 0..3 {
            fused.forward_t(&seeded_input(seed, (2, 16, 12))?.0, true)?;
        }
        let (x, _) = seeded_input(9, (1, 20, 16))?;
        let a = fused.forward_t(&x, false)?;
        assert!(!a.track_op(), "the eval forward recorded a backward node");
        let b = reference.forward_t(&x, false)?;
        let err = rel_err(&a, &b)?;
        assert!(err < 1e-4, "eval forward rel err {err}");
        // CUDA's evaluation path (the whole-network op with running statistics), run on the
        // CPU's kernels: the same logits, and no backward node either.
        let packed = fused
            .forward_eval_packed(&x)?
            .ok_or_else(|| candle_core::Error::Msg("no packed eval forward".into()))?;
        assert!(
            !packed.track_op(),
            "the packed eval forward recorded a backward node"
        );
        let err = rel_err(&packed, &b)?;
        assert!(err < 1e-4, "packed eval forward rel err {err}");
        Ok(())
    }

    #[test]
    fn native_upsample_matches_composed_forward() -> Result<()> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let cfg = UNetConfig { base_channels: 4 };
        let a = UNet::with_upsample(&cfg, Upsample2x::Bilinear, vb.clone())?;
        let b = UNet::with_upsample(&cfg, Upsample2x::CandleNative, vb)?;
        let x = Tensor::randn(0f32, 1.0, (1, 1, 8, 12), &Device::Cpu)?;
        let diff = (a.forward_t(&x, false)? - b.forward_t(&x, false)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-5, "max diff {diff}");
        Ok(())
    }
}
