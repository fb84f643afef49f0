//! The `prepare` stage: LIDC slice tree → Parquet shards of windowed slices and fused masks,
//! plus `manifest.parquet`, `rejects.parquet` and `prepare.json` (written last).

pub mod file_bytes;
pub mod nodule_dir;
pub mod reject;
pub mod slice;
pub mod walk;

use crate::atomic::remove_if_exists;
use crate::data::manifest::{write_manifest, ManifestRow};
use crate::data::prepare_record::{PrepareConfig, PrepareCounts, PrepareRecord};
use crate::data::shards::ShardWriter;
use crate::error::{Error, IoContext, Result};
use crate::json::write_json_atomic;
use crate::layout::DataDir;
use crate::pixels::intensity;
use rayon::prelude::*;
use reject::write_rejects;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// The outcome of `run`.
#[derive(Debug, Clone)]
pub struct PrepareReport {
    /// True when the data directory was already complete and nothing was done.
    pub skipped: bool,
    /// Counts of the run (or of the earlier run, when skipped).
    pub counts: PrepareCounts,
}

impl PrepareReport {
    /// The one-line summary printed at the end.
    pub fn summary(&self) -> String {
        let c = &self.counts;
        if self.skipped {
            return format!(
                "prepare: already complete ({} slices in {} shards); nothing to do (use --overwrite to rebuild)",
                c.slices_kept, c.shards
            );
        }
        format!(
            "prepare: {} patients, {} nodules, {} slices seen, {} kept, {} empty, {} rejected, {} rejects rows, {} files ignored, {} shards, {:.1} MB in {:.1}s ({:.0} slices/s)",
            c.patients,
            c.nodules,
            c.slices_seen,
            c.slices_kept,
            c.slices_empty,
            c.slices_rejected,
            c.rejects,
            c.files_ignored,
            c.shards,
            c.bytes as f64 / 1e6,
            c.seconds,
            c.slices_seen as f64 / c.seconds.max(1e-9)
        )
    }
}

/// Refuses inputs that cannot work, before any output is touched.
fn check_paths(cfg: &PrepareConfig) -> Result<()> {
    let meta = std::fs::metadata(&cfg.input)
        .map_err(|e| Error::input(&cfg.input, format!("input tree not readable: {e}")))?;
    if !meta.is_dir() {
        return Err(Error::input(&cfg.input, "input is not a directory"));
    }
    let input = std::fs::canonicalize(&cfg.input).at(&cfg.input)?;
    let out_parent = cfg
        .out
        .ancestors()
        .find(|a| a.exists())
        .and_then(|a| std::fs::canonicalize(a).ok());
    if let Some(parent) = out_parent {
        if parent.starts_with(&input) {
            return Err(Error::Usage(format!(
                "{}: the data directory must not lie inside the input tree {} (prepare never writes to its input)",
                cfg.out.display(),
                input.display()
            )));
        }
    }
    Ok(())
}

/// Removes outputs of an earlier, incomplete or overwritten `prepare`, and of stages that
/// depend on it.
fn clear_outputs(data: &DataDir) -> Result<()> {
    for p in data.prepare_outputs().iter().chain(&data.split_outputs()) {
        remove_if_exists(p)?;
        remove_if_exists(&crate::layout::temporary_name(p))?;
    }
    Ok(())
}

/// Runs the stage.
pub fn run(cfg: &PrepareConfig) -> Result<PrepareReport> {
    cfg.settings.validate()?;
    check_paths(cfg)?;
    let data = DataDir::new(&cfg.out);
    if let Some(previous) = crate::data::prepare_record::read(&data)? {
        if !cfg.overwrite {
            if previous.config.settings.output_identity() != cfg.settings.output_identity() {
                return Err(Error::Usage(format!(
                    "{}: already prepared with different settings; pass --overwrite to rebuild",
                    data.prepare_record().display()
                )));
            }
            return Ok(PrepareReport {
                skipped: true,
                counts: previous.counts,
            });
        }
        tracing::info!("--overwrite: rebuilding {}", data.root().display());
    } else if data.root().exists() {
        tracing::info!(
            "{}: no prepare.json, so any earlier run was incomplete; rebuilding",
            data.root().display()
        );
    }
    clear_outputs(&data)?;
    std::fs::create_dir_all(data.shards_dir()).at(data.shards_dir())?;
    let started = Instant::now();
    let counts = build(cfg, &data)?;
    let counts = PrepareCounts {
        seconds: started.elapsed().as_secs_f64(),
        ..counts
    };
    write_json_atomic(
        &data.prepare_record(),
        &PrepareRecord {
            version: env!("CARGO_PKG_VERSION").to_string(),
            config: cfg.clone(),
            counts: counts.clone(),
        },
    )?;
    Ok(PrepareReport {
        skipped: false,
        counts,
    })
}

/// Slices decoded in parallel per batch. Three batches are alive at once (decoding, queued,
/// being written), and their memory is faulted in fresh before it is recycled: 64 slices (~6 MB
/// per batch at 128x128) keep that small, and cut prepare's time by ~5% against 256.
const DECODE_BATCH: usize = 64;

fn build(cfg: &PrepareConfig, data: &DataDir) -> Result<PrepareCounts> {
    let s = &cfg.settings;
    crate::malloc_tuning::retain_freed_memory();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(s.threads)
        .thread_name(|i| format!("prepare-decode-{i}"))
        .start_handler(|_| crate::malloc_tuning::huge_pages_for_this_thread())
        .build()
        .map_err(|e| Error::Usage(format!("cannot start {} threads: {e}", s.threads)))?;
    let phase = Instant::now();
    let tree = pool.install(|| walk::walk(&cfg.input));
    tracing::debug!(
        "walk: {} slice jobs in {:.3}s",
        tree.jobs.len(),
        phase.elapsed().as_secs_f64()
    );
    let phase = Instant::now();
    let mut counts = PrepareCounts {
        patients: tree.patients,
        nodules: tree.nodules,
        slices_seen: tree.jobs.len()
            + tree
                .rejects
                .iter()
                .filter(|r| r.reason == reject::RejectReason::DuplicateSliceId)
                .count(),
        files_ignored: tree.ignored,
        ..PrepareCounts::default()
    };
    let mut rejects = tree.rejects;
    let lut = intensity::IntensityLut::new(&s.intensity());
    let bar = crate::progress::bar(tree.jobs.len() as u64, "prepare", cfg.quiet);
    let mut manifest: Vec<ManifestRow> = Vec::new();
    // Decoding runs on the pool while a writer thread encodes and compresses the previous
    // batch; record positions are known up front because shards hold exactly shard_rows rows.
    let (n_shards, shard_bytes) = std::thread::scope(|scope| -> Result<(usize, u64)> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<crate::data::shards::SliceRecord>>(1);
        let mut shards = ShardWriter::new(
            data.clone(),
            s.shard_rows,
            s.row_group_rows,
            s.image_compression,
        );
        let writer = std::thread::Builder::new()
            .name("prepare-shards".into())
            .spawn_scoped(scope, move || -> Result<(usize, u64)> {
                crate::malloc_tuning::huge_pages_for_this_thread();
                for batch in rx {
                    for record in batch {
                        shards.push(record)?;
                    }
                }
                shards.finish()
            })
            .map_err(|e| Error::io(data.shards_dir(), e))?;
        // One scratch per worker thread for the whole run (`map_init` would start a fresh one
        // for every piece rayon splits a batch into).
        let scratches: Vec<Mutex<slice::SliceScratch>> = (0..pool.current_num_threads())
            .map(|_| Mutex::default())
            .collect();
        for batch in tree.jobs.chunks(DECODE_BATCH) {
            let outcomes: Vec<slice::SliceOutcome> = pool.install(|| {
                batch
                    .par_iter()
                    .map(|j| {
                        let worker = rayon::current_thread_index().unwrap_or(0);
                        let mut scratch = scratches[worker % scratches.len()]
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner);
                        slice::process(j, &lut, &mut scratch)
                    })
                    .collect()
            });
            let mut kept = Vec::with_capacity(outcomes.len());
            for outcome in outcomes {
                counts.colour_files += outcome.colour_files;
                rejects.extend(outcome.rejects);
                let Some(record) = outcome.record else {
                    counts.slices_rejected += 1;
                    continue;
                };
                if record.height < s.min_size || record.width < s.min_size {
                    counts.slices_too_small += 1;
                    continue;
                }
                if record.mask_pixels == 0 {
                    counts.slices_empty += 1;
                    if !s.keep_empty {
                        continue;
                    }
                }
                counts.slices_16bit += usize::from(record.source_bits == 16);
                let position = ShardWriter::position_of(counts.slices_kept, s.shard_rows);
                counts.slices_kept += 1;
                manifest.push(ManifestRow::new(&record, position));
                kept.push(record);
            }
            bar.inc(batch.len() as u64);
            if tx.send(kept).is_err() {
                break; // the writer failed; its error is returned below
            }
        }
        drop(tx);
        bar.finish_and_clear();
        tracing::debug!("decoding done at {:.3}s", phase.elapsed().as_secs_f64());
        writer
            .join()
            .map_err(|_| Error::input(data.shards_dir(), "the shard writer thread panicked"))?
    })?;
    tracing::debug!("decode and shards: {:.3}s", phase.elapsed().as_secs_f64());
    counts.shards = n_shards;
    counts.rejects = rejects.len();
    counts.bytes = shard_bytes
        + write_manifest(&data.manifest(), &manifest)?
        + write_rejects(&data.rejects(), &rejects)?;
    Ok(counts)
}
