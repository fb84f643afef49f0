//! The training loop: epochs of streamed patches, a pooled validation pass, early stopping,
//! checkpoints and the epoch table, with exact `--resume` after an interruption.

use crate::data::SliceIndex;
use crate::device;
use crate::error::{Error, IoContext, Result};
use crate::fingerprint::fingerprint;
use crate::json::write_json_atomic;
use crate::layout::{DataDir, RunDir};
use crate::lock::DirLock;
use crate::model::init;
use crate::model::optim::Adam;
use crate::model::{trainable_vars, UNet, UNetConfig};
use crate::run::checkpoint::{first_non_finite, load_weights, save_weights};
use crate::run::epochs::{read_epochs, write_epochs, EpochMetrics};
use crate::run::record::{git_revision, RunRecord};
use crate::run::settings::TrainConfig;
use crate::run::status::StopReason;
use crate::train::commit::Save;
use crate::train::early_stop::{EarlyStopping, EpochDecision};
use crate::train::epoch::{EpochContext, TrainedEpoch, Validation};
use crate::train::last::{load_optimizer, stage_last};
use crate::train::log::{next_commands, TrainLog};
use crate::train::report::TrainReport;
use crate::train::start::{decide_start, Start};
use crate::train::state::TrainState;
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use std::time::Instant;

/// Runs the stage.
pub fn run(cfg: &TrainConfig) -> Result<TrainReport> {
    cfg.settings.validate()?;
    let data = DataDir::new(&cfg.data);
    crate::data::prepare_record::require(&data)?;
    let run_dir = RunDir::new(&cfg.run);
    let _lock = DirLock::acquire(run_dir.root(), "train --run")?;
    let data_fingerprint = fingerprint(&data.manifest())?;
    let start = decide_start(cfg, &run_dir, &data_fingerprint)?;
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
    if val_index.is_empty() {
        return Err(Error::input(
            data.val_index(),
            "the validation split is empty; training needs validation slices to keep the best epoch and to stop early (split again with --val-ratio above 0)",
        ));
    }
    std::fs::create_dir_all(run_dir.root()).at(run_dir.root())?;
    let mut trainer = Trainer::open(cfg, run_dir, start)?;
    trainer.write_record(&data_fingerprint, &train_index, &val_index)?;
    while !trainer.state.finished {
        trainer.run_epoch(&data, &train_index, &val_index)?;
    }
    Ok(trainer.finish())
}

/// The network, its optimizer and the loop state of one run.
struct Trainer<'a> {
    cfg: &'a TrainConfig,
    run_dir: RunDir,
    device: Device,
    varmap: VarMap,
    model: UNet,
    opt: Adam,
    state: TrainState,
    rows: Vec<EpochMetrics>,
    log: TrainLog,
}

fn tensor_err(what: &'static str) -> impl Fn(candle_core::Error) -> Error {
    move |e| Error::tensor(what, e)
}

impl<'a> Trainer<'a> {
    /// Builds the network on the configured device, then initialises it (fresh) or loads
    /// `last`, the optimizer and the epoch rows (resume).
    fn open(cfg: &'a TrainConfig, run_dir: RunDir, start: Start) -> Result<Self> {
        let s = &cfg.settings;
        let device = device::open(cfg.device)?;
        if device.is_cuda() {
            crate::model::gpu::set_precision(cfg.precision);
        }
        let mut varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let unet = UNetConfig {
            base_channels: s.base_channels,
        };
        let model = UNet::new(&unet, vb).map_err(tensor_err("building the U-Net"))?;
        let mut opt =
            Adam::new(trainable_vars(&varmap), s.adam()).map_err(tensor_err("optimizer"))?;
        let (state, rows) = match start {
            Start::Resume(st) => {
                load_weights(&mut varmap, &run_dir.last_checkpoint())?;
                load_optimizer(&run_dir, &mut opt, &varmap, &device)?;
                let rows = read_epochs(&run_dir.epochs()).or_else(|e| {
                    if st.next_epoch == 1 {
                        Ok(Vec::new())
                    } else {
                        Err(e)
                    }
                })?;
                if rows.len() + 1 != st.next_epoch {
                    return Err(Error::input(
                        run_dir.epochs(),
                        format!(
                            "holds {} epochs but train_state.json continues at epoch {}; the run directory was edited",
                            rows.len(),
                            st.next_epoch
                        ),
                    ));
                }
                tracing::info!(
                    "resuming at epoch {} (step {})",
                    st.next_epoch,
                    st.steps_done
                );
                (st, rows)
            }
            Start::Fresh | Start::Finished(_) => {
                init::init_like_pytorch(&varmap, s.seed)
                    .map_err(tensor_err("initialising weights"))?;
                let stopping = EarlyStopping::new(s.monitor_spec(), s.patience, s.max_epochs);
                (TrainState::start(stopping), Vec::new())
            }
        };
        let log = TrainLog::open(&run_dir);
        Ok(Self {
            cfg,
            run_dir,
            device,
            varmap,
            model,
            opt,
            state,
            rows,
            log,
        })
    }

    /// Writes `config.json`: the resolved config, data fingerprint, device and split sizes.
    fn write_record(
        &mut self,
        data_fingerprint: &str,
        train: &SliceIndex,
        val: &SliceIndex,
    ) -> Result<()> {
        let s = &self.cfg.settings;
        let device_name = device::describe(&self.device);
        write_json_atomic(
            &self.run_dir.config(),
            &RunRecord {
                version: env!("CARGO_PKG_VERSION").to_string(),
                git_revision: git_revision(),
                config: self.cfg.clone(),
                data_fingerprint: data_fingerprint.to_string(),
                device: device_name.clone(),
                seed: s.seed,
                train_slices: train.len(),
                val_slices: val.len(),
            },
        )?;
        let line = format!(
            "training on {device_name}: {} train slices, {} val slices, base {} channels, up to {} epochs (lungseg {}, {})",
            train.len(),
            val.len(),
            s.base_channels,
            s.max_epochs,
            env!("CARGO_PKG_VERSION"),
            self.cfg.run.display()
        );
        tracing::info!("{line}");
        self.log.line(&line);
        Ok(())
    }

    /// Trains and validates one epoch, records it, saves checkpoints and the state. An
    /// interruption saves `last` and returns [`Error::Interrupted`].
    fn run_epoch(&mut self, data: &DataDir, train: &SliceIndex, val: &SliceIndex) -> Result<()> {
        let ctx = EpochContext {
            cfg: self.cfg,
            data,
            device: &self.device,
            model: &self.model,
            train_index: train,
            val_index: val,
        };
        let epoch = self.state.next_epoch;
        let started = Instant::now();
        let Some(trained) = ctx.train(epoch, &mut self.opt, &mut self.state)? else {
            tracing::warn!("saving last to {}", self.run_dir.root().display());
            self.state.stop_reason = Some(StopReason::Interrupted);
            let mut save = Save::begin(&self.run_dir, &self.state);
            stage_last(&mut save, &self.run_dir, &self.varmap, &self.opt)?;
            save.commit(&mut self.state)?;
            return Err(Error::Interrupted);
        };
        if let Some(name) = first_non_finite(&self.varmap)? {
            return Err(Error::Diverged(format!(
                "epoch {epoch}: `{name}` holds a NaN or an infinity; the run diverged (try a lower --lr); nothing of this epoch was saved"
            )));
        }
        ctx.refresh_batch_norm(epoch, &self.varmap)?;
        let validation = ctx.validate()?;
        let decision = self.state.stopping.step(epoch, &validation.scores);
        let mut save = Save::begin(&self.run_dir, &self.state);
        if decision.improved {
            save_weights(&self.varmap, &save.stage(&self.run_dir.best_checkpoint()))?;
        }
        let row = self.epoch_row(epoch, &trained, &validation, decision, started);
        let line = self.epoch_line(&row, &trained);
        tracing::info!("{line}");
        self.log.line(&line);
        self.rows.push(row);
        write_epochs(&save.stage(&self.run_dir.epochs()), &self.rows)?;
        stage_last(&mut save, &self.run_dir, &self.varmap, &self.opt)?;
        self.state.end_epoch(epoch, decision.stop);
        save.commit(&mut self.state)
    }

    /// The epoch's row of `epochs.parquet`.
    fn epoch_row(
        &self,
        epoch: usize,
        trained: &TrainedEpoch,
        v: &Validation,
        decision: EpochDecision,
        started: Instant,
    ) -> EpochMetrics {
        let s = &self.cfg.settings;
        let run_id = self
            .run_dir
            .root()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into());
        EpochMetrics {
            run_id,
            epoch: epoch as i32,
            train_loss: trained.mean_loss,
            val_loss: v.scores.loss,
            val_recall: v.scores.recall,
            val_precision: v.scores.precision,
            val_dice: v.scores.dice,
            val_mean_slice_dice: v.scores.mean_slice_dice,
            tp: v.counts.tp as i64,
            fp: v.counts.fp as i64,
            fn_: v.counts.fn_ as i64,
            tn: v.counts.tn as i64,
            threshold: s.threshold,
            lr: self.opt.lr(),
            seconds: started.elapsed().as_secs_f64(),
            train_patches_per_s: trained.patches_per_second(),
            monitor: s.monitor_name(),
            monitor_value: s.monitor_spec().value(&v.scores),
            improved: decision.improved,
            best_epoch: self.state.stopping.best.best_epoch.map(|e| e as i32),
        }
    }

    /// The epoch's line in the terminal and in `train.log`.
    fn epoch_line(&self, r: &EpochMetrics, trained: &TrainedEpoch) -> String {
        format!(
            "epoch {}/{}: train loss {:.4}, val loss {:.4}, recall {:.3}, precision {:.3}, Dice {:.3}, {} {:.3}{} ({:.0} patches/s)",
            r.epoch,
            self.cfg.settings.max_epochs,
            r.train_loss,
            r.val_loss,
            r.val_recall,
            r.val_precision,
            r.val_dice,
            r.monitor,
            r.monitor_value,
            if r.improved { ", best so far" } else { "" },
            trained.patches_per_second()
        )
    }

    /// The report, after warning when no epoch was good enough to keep; `train.log` ends with
    /// the summary and the commands to run next.
    fn finish(mut self) -> TrainReport {
        if !self.run_dir.best_checkpoint().exists() {
            let line = format!(
                "no epoch reached precision >= {}; best.safetensors was not written",
                self.cfg.settings.min_precision
            );
            tracing::warn!("{line}");
            self.log.line(&line);
        }
        let report = TrainReport {
            skipped: false,
            epochs: self.rows,
            stop_reason: self.state.stop_reason,
            device: device::describe(&self.device),
        };
        let next = next_commands(&self.cfg.data, &self.run_dir);
        self.log.line(&report.summary());
        self.log.line(&next);
        tracing::info!("{next}");
        report
    }
}
