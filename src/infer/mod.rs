//! Inference with a trained U-Net on whole slices: loading a run's network, and the one
//! whole-slice path (pad to a multiple of 4, forward in evaluation mode, crop back) that
//! validation, `eval` and `predict` share, also in tiles of bounded memory for large slices.

pub mod batch;
pub mod model;
pub mod tiled;

pub use batch::WholeSliceBatch;
pub use model::LoadedModel;

use crate::data::SliceSample;
use crate::error::{Error, Result};
use crate::model::UNet;
use candle_core::{Device, ModuleT, Tensor};

/// The network's multiple: two 2x2 poolings, so H and W must be multiples of 4.
pub const SIZE_MULTIPLE: usize = 4;

/// A batch of whole slices run through the network.
pub struct Predictions {
    /// The padded inputs, masks, ids and native sizes.
    pub batch: WholeSliceBatch,
    /// Padded logits, `(B, 1, H, W)`.
    pub logits: Tensor,
    /// Padded probabilities, `B * H * W`, plane after plane.
    probs: Vec<f32>,
}

/// One slice of a [`Predictions`], cut back to its native size.
#[derive(Debug, Clone, PartialEq)]
pub struct NativeSlice<'a> {
    /// `patient/nodule/stem`.
    pub slice_id: &'a str,
    /// Patient folder name.
    pub patient_id: &'a str,
    /// Native height.
    pub height: usize,
    /// Native width.
    pub width: usize,
    /// Intensities.
    pub image: Vec<f32>,
    /// Truth mask (0/1).
    pub mask: Vec<u8>,
    /// Probabilities.
    pub probs: Vec<f32>,
}

impl Predictions {
    /// Number of slices.
    pub fn len(&self) -> usize {
        self.batch.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// Slice `i` at native size.
    pub fn slice(&self, i: usize) -> NativeSlice<'_> {
        let b = &self.batch;
        let plane = b.plane();
        let (height, width) = b.dims[i];
        NativeSlice {
            slice_id: &b.slice_ids[i],
            patient_id: &b.patient_ids[i],
            height,
            width,
            image: b.crop_back(i, b.padded_image(i)),
            mask: b.crop_back(i, b.padded_mask(i)),
            probs: b.crop_back(i, &self.probs[i * plane..(i + 1) * plane]),
        }
    }

    /// Every slice at native size, in batch order.
    pub fn slices(&self) -> impl Iterator<Item = NativeSlice<'_>> {
        (0..self.len()).map(|i| self.slice(i))
    }
}

/// Pads `samples` to one size (a multiple of [`SIZE_MULTIPLE`]), runs `model` in evaluation mode
/// on `device` and keeps the logits and probabilities for cutting back.
///
/// # Shapes
/// `samples`: B slices of any sizes → logits `(B, 1, H, W)` with `H`, `W` the padded size.
pub fn predict(model: &UNet, device: &Device, samples: Vec<SliceSample>) -> Result<Predictions> {
    let batch = WholeSliceBatch::from_samples(samples, SIZE_MULTIPLE);
    let (logits, probs) =
        forward(model, device, &batch).map_err(|e| Error::tensor("inference", e))?;
    Ok(Predictions {
        batch,
        logits,
        probs,
    })
}

fn forward(
    model: &UNet,
    device: &Device,
    batch: &WholeSliceBatch,
) -> candle_core::Result<(Tensor, Vec<f32>)> {
    let x = Tensor::from_slice(
        &batch.images,
        (batch.len(), 1, batch.height, batch.width),
        device,
    )?; // (B, 1, H, W)
    let logits = model.forward_t(&x, false)?; // (B, 1, H, W)
    let probs = candle_nn::ops::sigmoid(&logits)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok((logits, probs))
}
