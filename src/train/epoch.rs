//! One epoch's two passes: training steps over streamed, shuffled patches (replaying an
//! interrupted epoch up to where it stopped), and the pooled validation pass on whole slices.

use crate::data::batcher::Batcher;
use crate::data::patch::{PatchBatch, PatchSampler};
use crate::data::{Order, ShardStream, SliceIndex, StreamOptions};
use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::layout::DataDir;
use crate::metrics::confusion::{ConfusionCounts, EpochAccumulator, EpochScores};
use crate::model::bn_stats::refresh_running_stats;
use crate::model::optim::Adam;
use crate::model::UNet;
use crate::rng::SplitMix64;
use crate::run::settings::{TrainConfig, TrainSettings};
use crate::train::state::TrainState;
use crate::train::INTERRUPTED;
use candle_core::{Device, ModuleT};
use candle_nn::VarMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// What one training pass did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainedEpoch {
    /// Mean loss over the epoch's steps.
    pub mean_loss: f64,
    /// Patches trained on.
    pub patches: usize,
    /// Wall-clock seconds of the pass.
    pub seconds: f64,
}

impl TrainedEpoch {
    /// Training throughput.
    pub fn patches_per_second(&self) -> f64 {
        self.patches as f64 / self.seconds.max(1e-9)
    }
}

/// What one validation pass measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Validation {
    /// Pooled scores (the early-stopping input).
    pub scores: EpochScores,
    /// The pooled confusion matrix behind them.
    pub counts: ConfusionCounts,
}

/// Everything an epoch reads but does not change.
pub struct EpochContext<'a> {
    /// The resolved config.
    pub cfg: &'a TrainConfig,
    /// The data directory.
    pub data: &'a DataDir,
    /// The training device.
    pub device: &'a Device,
    /// The network.
    pub model: &'a UNet,
    /// Training slices.
    pub train_index: &'a SliceIndex,
    /// Validation slices.
    pub val_index: &'a SliceIndex,
}

impl EpochContext<'_> {
    fn settings(&self) -> &TrainSettings {
        &self.cfg.settings
    }

    fn stream(&self, index: &SliceIndex, order: Order) -> Result<ShardStream> {
        let s = self.settings();
        let options = StreamOptions {
            fusion: s.fusion,
            capacity: s.queue_capacity,
            order,
        };
        ShardStream::open(self.data, index, &options)
    }

    /// Training steps of `epoch`: every batch of the split, or `max_steps_per_epoch`.
    fn steps(&self) -> usize {
        let s = self.settings();
        let total = self.train_index.len().div_ceil(s.batch_size);
        if s.max_steps_per_epoch > 0 {
            total.min(s.max_steps_per_epoch)
        } else {
            total
        }
    }

    /// One training pass, continuing from `state`'s partial progress. Returns `None` when
    /// interrupted; `state` then records the steps done, and the caller saves `last`.
    pub fn train(
        &self,
        epoch: usize,
        opt: &mut Adam,
        state: &mut TrainState,
    ) -> Result<Option<TrainedEpoch>> {
        let s = self.settings();
        let order = Order::Shuffled {
            seed: s.seed,
            epoch: epoch as u64,
            buffer: s.shuffle_buffer,
        };
        let stream = self.stream(self.train_index, order)?;
        let sampler = PatchSampler {
            patch: s.patch,
            fg_crop: s.fg_crop,
            flips: s.flips,
        };
        let mut rng = SplitMix64::derive(s.seed, &format!("patches-epoch-{epoch}"));
        let steps = self.steps();
        let bar = crate::progress::bar(steps as u64, &format!("epoch {epoch}"), self.cfg.quiet);
        let started = Instant::now();
        let mut step = 0usize;
        for batch in Batcher::new(stream).batch_size(s.batch_size).take(steps) {
            let batch = PatchBatch::from_samples(&batch?, &sampler, &mut rng);
            step += 1;
            bar.inc(1);
            if step <= state.steps_done {
                continue; // replaying an interrupted epoch up to where it stopped
            }
            let step_started = Instant::now();
            let loss = self.step(&batch, opt, epoch, step)?;
            if step == 1 {
                self.warn_if_slow_cpu_fallback(step_started.elapsed().as_secs_f64());
            }
            state.steps_done = step;
            state.partial_loss_sum += f64::from(loss);
            state.partial_patches += batch.batch;
            let rate = state.partial_patches as f64 / started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("epoch {epoch} loss {loss:.4} {rate:.1} patch/s"));
            if INTERRUPTED.load(Ordering::SeqCst) {
                bar.finish_and_clear();
                tracing::warn!("interrupted after epoch {epoch} step {step}; saving last");
                return Ok(None);
            }
        }
        bar.finish_and_clear();
        Ok(Some(TrainedEpoch {
            mean_loss: if step == 0 {
                0.0
            } else {
                state.partial_loss_sum / step as f64
            },
            patches: state.partial_patches,
            seconds: started.elapsed().as_secs_f64(),
        }))
    }

    /// `--device auto` found no GPU and trains a large model on the CPU: says so once, with the
    /// run's projected time from the first step, instead of a silent hours-long run.
    fn warn_if_slow_cpu_fallback(&self, first_step_seconds: f64) {
        let s = self.settings();
        if self.cfg.device != DeviceSpec::Auto || !self.device.is_cpu() || s.base_channels < 32 {
            return;
        }
        static ONCE: std::sync::Once = std::sync::Once::new();
        let steps = self.steps();
        let hours = first_step_seconds * (steps * s.max_epochs) as f64 / 3600.0;
        ONCE.call_once(|| tracing::warn!(
            "no GPU found, so --device auto trains the width-{} U-Net on the CPU: {first_step_seconds:.1} s per step, about {hours:.1} h for {} epochs of {steps} steps; on a CUDA machine use `make train FEATURES=cudnn` (--device cpu silences this)",
            s.base_channels,
            s.max_epochs
        ));
    }

    /// One optimizer step on `batch`; returns its loss.
    fn step(&self, batch: &PatchBatch, opt: &mut Adam, epoch: usize, step: usize) -> Result<f32> {
        let s = self.settings();
        let (x, y) = batch
            .to_tensors(self.device)
            .map_err(|e| Error::tensor("uploading a batch", e))?;
        let loss = self
            .model
            .forward_t(&x, true)
            .and_then(|logits| s.loss.compute_with(&logits, &y, &s.tversky()))
            .map_err(|e| Error::tensor(format!("epoch {epoch} step {step}: forward"), e))?;
        let value = loss
            .to_scalar::<f32>()
            .map_err(|e| Error::tensor("reading the loss", e))?;
        if !value.is_finite() {
            return Err(Error::Diverged(format!(
                "epoch {epoch} step {step}: the training loss is {value}; the run diverged (try a lower --lr); nothing was saved for this epoch"
            )));
        }
        opt.backward_step(&loss)
            .map_err(|e| Error::tensor(format!("epoch {epoch} step {step}: backward"), e))?;
        Ok(value)
    }

    /// Replaces the batch-norm running averages by the statistics of `bn_refresh_batches`
    /// training batches (at most one epoch's steps) under the weights `epoch` ended with, drawn
    /// in an order of their own (so the training stream is untouched). Returns the batches used.
    pub fn refresh_batch_norm(&self, epoch: usize, varmap: &VarMap) -> Result<usize> {
        let s = self.settings();
        let batches = s.bn_refresh_batches.min(self.steps());
        if batches == 0 {
            return Ok(0);
        }
        let order = Order::Shuffled {
            seed: SplitMix64::derive(s.seed, "bn-refresh").next_u64(),
            epoch: epoch as u64,
            buffer: s.shuffle_buffer,
        };
        let sampler = PatchSampler {
            patch: s.patch,
            fg_crop: s.fg_crop,
            flips: s.flips,
        };
        let mut rng = SplitMix64::derive(s.seed, &format!("bn-refresh-patches-{epoch}"));
        let stream = self.stream(self.train_index, order)?;
        let mut failure = None;
        let inputs = Batcher::new(stream)
            .batch_size(s.batch_size)
            .take(batches)
            .map_while(|batch| match batch {
                Ok(samples) => Some(
                    PatchBatch::from_samples(&samples, &sampler, &mut rng)
                        .to_tensors(self.device)
                        .map(|(x, _)| x),
                ),
                Err(e) => {
                    failure = Some(e);
                    None
                }
            });
        let used = refresh_running_stats(self.model, varmap, inputs).map_err(|e| {
            Error::tensor(
                format!("epoch {epoch}: refreshing batch-norm statistics"),
                e,
            )
        })?;
        match failure {
            Some(e) => Err(e),
            None => Ok(used),
        }
    }

    /// The validation pass over whole slices at native size, pooled over every pixel.
    pub fn validate(&self) -> Result<Validation> {
        let s = self.settings();
        let mut acc = EpochAccumulator::new(s.threshold as f32);
        if !self.val_index.is_empty() {
            let stream = self.stream(self.val_index, Order::Index)?;
            for batch in Batcher::new(stream).batch_size(s.val_batch_size) {
                let predictions = crate::infer::predict(self.model, self.device, batch?)?;
                let y = predictions
                    .batch
                    .mask_tensor(self.device)
                    .map_err(|e| Error::tensor("uploading a validation batch", e))?;
                let loss = s
                    .loss
                    .compute_with(&predictions.logits, &y, &s.tversky())
                    .and_then(|l| l.to_scalar::<f32>())
                    .map_err(|e| Error::tensor("validation loss", e))?;
                for slice in predictions.slices() {
                    let pixels = slice.probs.len();
                    acc.add_batch(&slice.probs, &slice.mask, pixels, f64::from(loss));
                }
            }
        }
        Ok(Validation {
            scores: acc.finish(),
            counts: acc.counts,
        })
    }
}
