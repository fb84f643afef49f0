//! The training loop: epochs of streamed patches, a pooled validation pass, early stopping,
//! checkpoints and the epoch table, with exact `--resume` after an interruption.

use crate::atomic::remove_if_exists;
use crate::data::batcher::Batcher;
use crate::data::patch::{PatchBatch, PatchSampler};
use crate::data::{Order, ShardStream, SliceIndex, StreamOptions};
use crate::device;
use crate::error::{Error, IoContext, Result};
use crate::fingerprint::fingerprint;
use crate::json::read_json;
use crate::json::write_json_atomic;
use crate::layout::{DataDir, RunDir};
use crate::metrics::confusion::{EpochAccumulator, EpochScores};
use crate::model::init;
use crate::model::optim::Adam;
use crate::model::{trainable_vars, UNet, UNetConfig};
use crate::rng::SplitMix64;
use crate::run::checkpoint::{load_weights, save_weights};
use crate::run::epochs::{read_epochs, write_epochs, EpochMetrics};
use crate::run::record::{git_revision, RunRecord};
use crate::run::settings::{TrainConfig, TrainSettings};
use crate::run::status::StopReason;
use crate::train::early_stop::EarlyStopping;
use crate::train::state::{load_optimizer, save_last, TrainState};
use candle_core::{DType, Device, ModuleT};
use candle_nn::{VarBuilder, VarMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Set by the Ctrl-C handler: the loop finishes its current step, saves `last` and returns.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The outcome of a `train` run.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// The run had already finished; nothing was done.
    pub skipped: bool,
    /// Rows of `epochs.parquet`.
    pub epochs: Vec<EpochMetrics>,
    /// Why training ended (or paused).
    pub stop_reason: Option<StopReason>,
    /// The device used.
    pub device: String,
}

impl TrainReport {
    /// The best epoch's row, if any epoch was admissible.
    pub fn best(&self) -> Option<&EpochMetrics> {
        let best = self.epochs.last()?.best_epoch;
        self.epochs.iter().find(|e| e.epoch == best)
    }

    /// The one-line summary.
    pub fn summary(&self) -> String {
        let reason = self
            .stop_reason
            .map_or_else(|| "unknown".to_string(), |r| r.to_string());
        let prefix = if self.skipped {
            "train: already finished (use --overwrite to retrain)"
        } else {
            "train: done"
        };
        match self.best() {
            Some(b) => format!(
                "{prefix}; {} epochs on {}, stopped: {reason}; best epoch {} (recall {:.3}, precision {:.3}, Dice {:.3}, {} {:.3})",
                self.epochs.len(),
                self.device,
                b.epoch,
                b.val_recall,
                b.val_precision,
                b.val_dice,
                b.monitor,
                b.monitor_value
            ),
            None => format!(
                "{prefix}; {} epochs on {}, stopped: {reason}; no epoch passed the min-precision guard",
                self.epochs.len(),
                self.device
            ),
        }
    }
}

/// What to do with an existing run directory.
enum Start {
    Fresh,
    Resume(TrainState),
    Finished(TrainState),
}

fn decide_start(cfg: &TrainConfig, run: &RunDir) -> Result<Start> {
    let state: Option<TrainState> = read_json(&run.train_state())?;
    if cfg.overwrite {
        for p in [
            run.config(),
            run.epochs(),
            run.best_checkpoint(),
            run.last_checkpoint(),
            run.last_optimizer(),
            run.train_state(),
        ] {
            remove_if_exists(&p)?;
        }
        return Ok(Start::Fresh);
    }
    let previous: Option<RunRecord> = read_json(&run.config())?;
    if let (Some(prev), Some(_)) = (&previous, &state) {
        if prev.config.settings != cfg.settings || prev.config.fold != cfg.fold {
            return Err(Error::Usage(format!(
                "{}: this run was started with different settings; use another --run or --overwrite",
                run.config().display()
            )));
        }
    }
    match state {
        Some(st) if st.finished => Ok(Start::Finished(st)),
        Some(st) if cfg.resume => Ok(Start::Resume(st)),
        Some(_) => Err(Error::Usage(format!(
            "{}: holds an unfinished run; pass --resume to continue it or --overwrite to start over",
            run.root().display()
        ))),
        None => Ok(Start::Fresh),
    }
}

/// Runs the stage.
pub fn run(cfg: &TrainConfig) -> Result<TrainReport> {
    let s = &cfg.settings;
    s.validate()?;
    let data = DataDir::new(&cfg.data);
    crate::data::prepare_record::require(&data)?;
    let run_dir = RunDir::new(&cfg.run);
    let start = decide_start(cfg, &run_dir)?;
    if let Start::Finished(st) = start {
        return Ok(TrainReport {
            skipped: true,
            epochs: read_epochs(&run_dir.epochs())?,
            stop_reason: st.stop_reason,
            device: String::new(),
        });
    }
    let (train_index, val_index) = crate::data::split_table::train_val_indexes(&data, cfg.fold)?;
    if train_index.is_empty() {
        return Err(Error::input(
            data.train_index(),
            "the training split is empty",
        ));
    }
    std::fs::create_dir_all(run_dir.root()).at(run_dir.root())?;
    let device = device::open(cfg.device)?;
    let device_name = device::describe(&device);
    let tensor_err = |what: &str| {
        let what = what.to_string();
        move |e| Error::tensor(what.clone(), e)
    };

    let mut varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let model = UNet::new(
        &UNetConfig {
            base_channels: s.base_channels,
        },
        vb,
    )
    .map_err(tensor_err("building the U-Net"))?;
    let mut opt = Adam::new(trainable_vars(&varmap), s.adam()).map_err(tensor_err("optimizer"))?;

    let (mut state, mut rows) = match start {
        Start::Resume(st) => {
            load_weights(&mut varmap, &run_dir.last_checkpoint())?;
            load_optimizer(&run_dir, &mut opt, &device)?;
            let rows = read_epochs(&run_dir.epochs()).or_else(|e| {
                if st.next_epoch == 1 {
                    Ok(Vec::new())
                } else {
                    Err(e)
                }
            })?;
            tracing::info!(
                "resuming at epoch {} (step {})",
                st.next_epoch,
                st.steps_done
            );
            (st, rows)
        }
        _ => {
            init::init_like_pytorch(&varmap, s.seed).map_err(tensor_err("initialising weights"))?;
            let st = TrainState {
                next_epoch: 1,
                steps_done: 0,
                partial_loss_sum: 0.0,
                partial_patches: 0,
                stopping: EarlyStopping::new(s.monitor_spec(), s.patience, s.max_epochs),
                finished: false,
                stop_reason: None,
            };
            (st, Vec::new())
        }
    };
    write_json_atomic(
        &run_dir.config(),
        &RunRecord {
            version: env!("CARGO_PKG_VERSION").to_string(),
            git_revision: git_revision(),
            config: cfg.clone(),
            data_fingerprint: fingerprint(&data.manifest())?,
            device: device_name.clone(),
            seed: s.seed,
            train_slices: train_index.len(),
            val_slices: val_index.len(),
        },
    )?;
    tracing::info!(
        "training on {device_name}: {} train slices, {} val slices, base {} channels, up to {} epochs",
        train_index.len(),
        val_index.len(),
        s.base_channels,
        s.max_epochs
    );
    let run_id = run_dir
        .root()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    let ctx = EpochContext {
        cfg,
        data: &data,
        device: &device,
        model: &model,
        train_index: &train_index,
        val_index: &val_index,
    };

    while !state.finished {
        let epoch = state.next_epoch;
        let started = Instant::now();
        let train = ctx.train_epoch(epoch, &mut opt, &mut state, &run_dir)?;
        let Some((train_loss, patches, train_seconds)) = train else {
            state.stop_reason = Some(StopReason::Interrupted);
            save_last(&run_dir, &varmap, &opt, &state)?;
            return Err(Error::Interrupted);
        };
        let (scores, acc) = ctx.validate()?;
        let decision = state.stopping.step(epoch, &scores);
        if decision.improved {
            save_weights(&varmap, &run_dir.best_checkpoint())?;
        }
        let spec = s.monitor_spec();
        rows.push(EpochMetrics {
            run_id: run_id.clone(),
            epoch: epoch as i32,
            train_loss,
            val_loss: scores.loss,
            val_recall: scores.recall,
            val_precision: scores.precision,
            val_dice: scores.dice,
            val_dice_per_slice: scores.mean_slice_dice,
            tp: acc.counts.tp as i64,
            fp: acc.counts.fp as i64,
            fn_: acc.counts.fn_ as i64,
            tn: acc.counts.tn as i64,
            threshold: s.threshold,
            lr: opt.lr(),
            seconds: started.elapsed().as_secs_f64(),
            train_patches_per_s: patches as f64 / train_seconds.max(1e-9),
            monitor: s.monitor_name(),
            monitor_value: spec.value(&scores),
            improved: decision.improved,
            best_epoch: state.stopping.best.best_epoch.unwrap_or(0) as i32,
        });
        write_epochs(&run_dir.epochs(), &rows)?;
        tracing::info!(
            "epoch {epoch}/{}: train loss {train_loss:.4}, val loss {:.4}, recall {:.3}, precision {:.3}, Dice {:.3}, {} {:.3}{} ({:.0} patches/s)",
            s.max_epochs,
            scores.loss,
            scores.recall,
            scores.precision,
            scores.dice,
            s.monitor_name(),
            spec.value(&scores),
            if decision.improved { ", best so far" } else { "" },
            patches as f64 / train_seconds.max(1e-9)
        );
        state.next_epoch = epoch + 1;
        state.steps_done = 0;
        state.partial_loss_sum = 0.0;
        state.partial_patches = 0;
        if let Some(reason) = decision.stop {
            state.finished = true;
            state.stop_reason = Some(reason);
        }
        save_last(&run_dir, &varmap, &opt, &state)?;
    }
    if !run_dir.best_checkpoint().exists() {
        tracing::warn!(
            "no epoch reached precision >= {}; best.safetensors was not written",
            s.min_precision
        );
    }
    Ok(TrainReport {
        skipped: false,
        epochs: rows,
        stop_reason: state.stop_reason,
        device: device_name,
    })
}

struct EpochContext<'a> {
    cfg: &'a TrainConfig,
    data: &'a DataDir,
    device: &'a Device,
    model: &'a UNet,
    train_index: &'a SliceIndex,
    val_index: &'a SliceIndex,
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

    /// One training epoch. Returns (mean loss, patches, seconds), or `None` when interrupted
    /// (the state then records the steps done, and `last` must be saved by the caller).
    fn train_epoch(
        &self,
        epoch: usize,
        opt: &mut Adam,
        state: &mut TrainState,
        run_dir: &RunDir,
    ) -> Result<Option<(f64, usize, f64)>> {
        let s = self.settings();
        let stream = self.stream(
            self.train_index,
            Order::Shuffled {
                seed: s.seed,
                epoch: epoch as u64,
                buffer: s.shuffle_buffer,
            },
        )?;
        let sampler = PatchSampler {
            patch: s.patch,
            fg_crop: s.fg_crop,
            flips: s.flips,
        };
        let mut rng = SplitMix64::derive(s.seed, &format!("patches-epoch-{epoch}"));
        let total_batches = self.train_index.len().div_ceil(s.batch_size);
        let steps = if s.max_steps_per_epoch > 0 {
            total_batches.min(s.max_steps_per_epoch)
        } else {
            total_batches
        };
        let bar = crate::progress::bar(steps as u64, &format!("epoch {epoch}"), self.cfg.quiet);
        let started = Instant::now();
        let (mut loss_sum, mut patches) = (state.partial_loss_sum, state.partial_patches);
        let mut step = 0usize;
        for batch in Batcher::new(stream).batch_size(s.batch_size) {
            if step >= steps {
                break;
            }
            let samples = batch?;
            let batch = PatchBatch::from_samples(&samples, &sampler, &mut rng);
            step += 1;
            if step <= state.steps_done {
                bar.inc(1);
                continue; // replaying an interrupted epoch up to where it stopped
            }
            let n = batch.batch;
            let (x, y) = batch
                .to_tensors(self.device)
                .map_err(|e| Error::tensor("uploading a batch", e))?;
            let loss = self
                .model
                .forward_t(&x, true)
                .and_then(|logits| s.loss.compute_with(&logits, &y, &s.tversky()))
                .map_err(|e| Error::tensor(format!("epoch {epoch} step {step}: forward"), e))?;
            opt.backward_step(&loss)
                .map_err(|e| Error::tensor(format!("epoch {epoch} step {step}: backward"), e))?;
            let value = loss
                .to_scalar::<f32>()
                .map_err(|e| Error::tensor("reading the loss", e))?;
            loss_sum += f64::from(value);
            patches += n;
            state.steps_done = step;
            state.partial_loss_sum = loss_sum;
            state.partial_patches = patches;
            bar.inc(1);
            let rate = patches as f64 / started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("epoch {epoch} loss {value:.4} {rate:.1} patch/s"));
            if INTERRUPTED.load(Ordering::SeqCst) {
                bar.finish_and_clear();
                tracing::warn!(
                    "interrupted after epoch {epoch} step {step}; saving last to {}",
                    run_dir.root().display()
                );
                return Ok(None);
            }
        }
        bar.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        let mean = if step == 0 {
            0.0
        } else {
            loss_sum / step as f64
        };
        Ok(Some((mean, patches, seconds)))
    }

    /// The validation pass over whole slices at native size (padded to a multiple of 4).
    fn validate(&self) -> Result<(EpochScores, EpochAccumulator)> {
        let s = self.settings();
        let mut acc = EpochAccumulator::new(s.threshold as f32);
        if self.val_index.is_empty() {
            return Ok((acc.finish(), acc));
        }
        let stream = self.stream(self.val_index, Order::Index)?;
        for batch in Batcher::new(stream).batch_size(s.val_batch_size) {
            let predictions = crate::infer::predict(self.model, self.device, batch?)?;
            let (_x, y) = predictions
                .batch
                .to_tensors(self.device)
                .map_err(|e| Error::tensor("uploading a validation batch", e))?;
            let loss = s
                .loss
                .compute_with(&predictions.logits, &y, &s.tversky())
                .and_then(|l| l.to_scalar::<f32>())
                .map_err(|e| Error::tensor("validation loss", e))?;
            for slice in predictions.slices() {
                acc.add_batch(
                    &slice.probs,
                    &slice.mask,
                    slice.probs.len(),
                    f64::from(loss),
                );
            }
        }
        Ok((acc.finish(), acc))
    }
}
