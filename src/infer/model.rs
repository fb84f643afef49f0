//! Loads a trained U-Net from a run directory (its `config.json` and a checkpoint), for `eval`
//! and `predict`.

use crate::data::SliceSample;
use crate::device::{self, DeviceSpec};
use crate::error::{Error, Result};
use crate::infer::tiled::{self, Tiling};
use crate::infer::Predictions;
use crate::layout::RunDir;
use crate::model::{UNet, UNetConfig};
use crate::run::checkpoint::{load_weights, CheckpointChoice};
use crate::run::record::{read_run_record, RunRecord};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use std::path::PathBuf;

/// A trained network ready for inference.
pub struct LoadedModel {
    /// The run's record (settings, threshold, fusion).
    pub record: RunRecord,
    /// The checkpoint file that was loaded.
    pub checkpoint: PathBuf,
    /// The device it runs on.
    pub device: Device,
    model: UNet,
    // Keeps the variables alive for the model's lifetime.
    _varmap: VarMap,
}

impl LoadedModel {
    /// Builds the run's U-Net on `device` and loads the chosen checkpoint into it.
    pub fn load(run: &RunDir, which: CheckpointChoice, spec: DeviceSpec) -> Result<Self> {
        let record = read_run_record(run)?;
        let checkpoint = which.path(run);
        if !checkpoint.is_file() {
            let hint = match which {
                CheckpointChoice::Best => {
                    "checkpoint not found (no epoch passed the min-precision guard?); try --checkpoint last"
                }
                CheckpointChoice::Last => "checkpoint not found",
            };
            return Err(Error::input(&checkpoint, hint));
        }
        let device = device::open(spec)?;
        let mut varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let model = UNet::new(
            &UNetConfig {
                base_channels: record.config.settings.base_channels,
            },
            vb,
        )
        .map_err(|e| Error::tensor("building the U-Net", e))?;
        load_weights(&mut varmap, &checkpoint)?;
        Ok(Self {
            record,
            checkpoint,
            device,
            model,
            _varmap: varmap,
        })
    }

    /// The run's own threshold.
    pub fn threshold(&self) -> f64 {
        self.record.config.settings.threshold
    }

    /// Runs the network on whole slices at native size (see [`crate::infer::predict`]).
    pub fn predict(&self, samples: Vec<SliceSample>) -> Result<Predictions> {
        crate::infer::predict(&self.model, &self.device, samples)
    }

    /// The probabilities of one `height`x`width` slice at native size, computed in tiles whose
    /// forward passes take about `window_bytes` each whatever the slice's size, and equal to
    /// [`LoadedModel::predict`]'s (see [`crate::infer::tiled`]).
    pub fn probabilities(
        &self,
        image: &[f32],
        size: (usize, usize),
        window_bytes: u64,
    ) -> Result<Vec<f32>> {
        let base_channels = self.record.config.settings.base_channels;
        let tiling = Tiling::within(window_bytes, base_channels, size);
        tiled::probabilities(&self.model, &self.device, image, size, tiling)
    }
}
