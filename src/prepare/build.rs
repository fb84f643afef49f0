//! The body of `prepare`: walk the tree, decode slices in parallel batches on a thread pool
//! while a writer thread encodes the previous batch into shards, then write the manifest and the
//! rejects table.

use crate::data::manifest::{write_manifest, ManifestRow};
use crate::data::prepare_record::{PrepareConfig, PrepareCounts, PrepareSettings};
use crate::data::shards::{ShardWriter, SliceRecord};
use crate::error::{Error, Result};
use crate::layout::DataDir;
use crate::pixels::intensity::IntensityLut;
use crate::prepare::reject::{write_rejects, Reject, RejectReason};
use crate::prepare::slice::{self, SliceOutcome, SliceScratch};
use crate::prepare::walk::{self, SliceJob, TreeWalk};
use rayon::prelude::*;
use rayon::ThreadPool;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// Slices decoded in parallel per batch. Three batches are alive at once (decoding, queued,
/// being written), and their memory is faulted in fresh before it is recycled: 64 slices (~6 MB
/// per batch at 128x128) keep that small, and cut prepare's time by ~5% against 256.
const DECODE_BATCH: usize = 64;

/// Walks `input` on `pool` (see [`walk::walk`]).
pub fn walk_tree(pool: &ThreadPool, input: &std::path::Path) -> TreeWalk {
    let phase = Instant::now();
    let tree = pool.install(|| walk::walk(input));
    tracing::debug!(
        "walk: {} slice jobs in {:.3}s",
        tree.jobs.len(),
        phase.elapsed().as_secs_f64()
    );
    tree
}

/// Decodes the slices of `tree` on `pool` and writes everything but `prepare.json`; returns the
/// counts.
pub fn build(
    cfg: &PrepareConfig,
    data: &DataDir,
    pool: &ThreadPool,
    tree: TreeWalk,
) -> Result<PrepareCounts> {
    let phase = Instant::now();
    let (jobs, mut tally) = Tally::after_walk(tree);
    let s = &cfg.settings;
    let lut = IntensityLut::new(&s.intensity());
    // One scratch per worker thread for the whole run (`map_init` would start a fresh one for
    // every piece rayon splits a batch into).
    let scratches: Vec<Mutex<SliceScratch>> = (0..pool.current_num_threads())
        .map(|_| Mutex::new(SliceScratch::new(s.max_pixels)))
        .collect();
    let decode = |job: &SliceJob| {
        let worker = rayon::current_thread_index().unwrap_or(0);
        let mut scratch = scratches[worker % scratches.len()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        slice::process(job, &lut, &mut scratch)
    };
    let bar = crate::progress::bar(jobs.len() as u64, "prepare", cfg.quiet);
    let shards = write_through(cfg, data, s.row_group_rows, &mut tally, |sink| {
        for batch in jobs.chunks(DECODE_BATCH) {
            let outcomes: Vec<SliceOutcome> =
                pool.install(|| batch.par_iter().map(&decode).collect());
            bar.inc(batch.len() as u64);
            if !sink.send(outcomes) {
                break; // the writer failed; its error is returned
            }
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    tracing::debug!("decode and shards: {:.3}s", phase.elapsed().as_secs_f64());
    tally.finish(data, shards)
}

/// The walking and decoding threads (`threads`, 0 = every core).
pub fn decode_pool(threads: usize) -> Result<ThreadPool> {
    crate::malloc_tuning::retain_freed_memory();
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("prepare-decode-{i}"))
        .start_handler(|_| crate::malloc_tuning::huge_pages_for_this_thread())
        .build()
        .map_err(|e| Error::Usage(format!("cannot start {threads} threads: {e}")))
}

/// What `prepare` has counted, rejected and kept so far.
pub(crate) struct Tally {
    /// The counts so far.
    pub counts: PrepareCounts,
    rejects: Vec<Reject>,
    manifest: Vec<ManifestRow>,
}

impl Tally {
    /// Starts from `counts` and the `rejects` found before decoding (logged now).
    pub fn new(counts: PrepareCounts, rejects: Vec<Reject>) -> Self {
        rejects.iter().for_each(Reject::log);
        Self {
            counts,
            rejects,
            manifest: Vec::new(),
        }
    }

    /// Rejects recorded so far.
    pub fn rejects_len(&self) -> usize {
        self.rejects.len()
    }

    /// Writes the manifest and the rejects table; returns the final counts, with the shards'
    /// `(count, bytes)` and `extra_bytes` of other tables added.
    pub fn finish(
        self,
        data: &DataDir,
        (shards, shard_bytes): (usize, u64),
    ) -> Result<PrepareCounts> {
        let mut counts = self.counts;
        counts.shards = shards;
        counts.rejects = self.rejects.len();
        counts.bytes = counts.bytes
            + shard_bytes
            + write_manifest(&data.manifest(), &self.manifest)?
            + write_rejects(&data.rejects(), &self.rejects)?;
        Ok(counts)
    }

    /// The walk's counts and rejects (logged now), and the slice jobs it found.
    fn after_walk(tree: TreeWalk) -> (Vec<SliceJob>, Self) {
        let duplicates = tree
            .rejects
            .iter()
            .filter(|r| r.reason == RejectReason::DuplicateSliceId)
            .count();
        let counts = PrepareCounts {
            patients: tree.patients,
            nodules: tree.nodules,
            slices_seen: tree.jobs.len() + duplicates,
            files_ignored: tree.ignored,
            ..PrepareCounts::default()
        };
        (tree.jobs, Self::new(counts, tree.rejects))
    }

    /// Counts one decoded slice; returns its record when it goes into a shard (then it also has
    /// a manifest row, at the next shard position).
    fn keep(&mut self, outcome: SliceOutcome, s: &PrepareSettings) -> Option<SliceRecord> {
        let counts = &mut self.counts;
        counts.colour_files += outcome.colour_files;
        self.rejects.extend(outcome.rejects);
        let Some(record) = outcome.record else {
            counts.slices_rejected += 1;
            return None;
        };
        if record.height < s.min_size || record.width < s.min_size {
            counts.slices_too_small += 1;
            return None;
        }
        if record.mask_pixels == 0 {
            counts.slices_empty += 1;
            if !s.keep_empty {
                return None;
            }
        }
        counts.slices_16bit += usize::from(record.source_bits == 16);
        let position = ShardWriter::position_of(counts.slices_kept, s.shard_rows);
        counts.slices_kept += 1;
        self.manifest.push(ManifestRow::new(&record, position));
        Some(record)
    }
}

/// Slices per decode batch for slices of `pixels` pixels: [`DECODE_BATCH`] 128x128 slices' worth,
/// but at least two per worker thread.
pub(crate) fn batch_for(pixels: usize, threads: usize) -> usize {
    (DECODE_BATCH * 128 * 128 / pixels.max(1)).clamp((2 * threads).min(DECODE_BATCH), DECODE_BATCH)
}

/// Row groups (the unit the trainer streams) for decode batches of `batch` slices: they shrink
/// with the batch for large slices, so that one stays a few MiB.
pub(crate) fn row_group_rows_for(row_group_rows: usize, batch: usize) -> usize {
    (row_group_rows * batch / DECODE_BATCH).max(1)
}

/// Where decoded slices go while [`write_through`] runs: counted and kept by the tally, then sent
/// to the shard writer thread.
pub(crate) struct ShardSink<'a> {
    tally: &'a mut Tally,
    settings: &'a PrepareSettings,
    tx: SyncSender<Vec<SliceRecord>>,
}

impl ShardSink<'_> {
    /// Counts `outcomes` and passes the kept records to the writer; false once the writer has
    /// failed (its error is what [`write_through`] returns).
    pub fn send(&mut self, outcomes: Vec<SliceOutcome>) -> bool {
        let kept: Vec<SliceRecord> = outcomes
            .into_iter()
            .filter_map(|o| self.tally.keep(o, self.settings))
            .collect();
        self.tx.send(kept).is_ok()
    }

    /// Records rejects found on the way (logged now).
    pub fn reject(&mut self, rejects: Vec<Reject>) {
        rejects.iter().for_each(Reject::log);
        self.tally.rejects.extend(rejects);
    }

    /// The counts so far, for the producer's own tallies.
    pub fn counts(&mut self) -> &mut PrepareCounts {
        &mut self.tally.counts
    }
}

/// Runs `produce`, which decodes slices (on the caller's pool) and hands them to the sink, while
/// a writer thread encodes and compresses the previous batch into shards of row groups of
/// `row_group_rows`; record positions are known up front because shards hold exactly
/// `shard_rows` rows. Returns (shards, bytes) from the writer, or `produce`'s error.
pub(crate) fn write_through(
    cfg: &PrepareConfig,
    data: &DataDir,
    row_group_rows: usize,
    tally: &mut Tally,
    produce: impl FnOnce(&mut ShardSink<'_>) -> Result<()>,
) -> Result<(usize, u64)> {
    let s = &cfg.settings;
    std::thread::scope(|scope| -> Result<(usize, u64)> {
        let (tx, rx) = sync_channel::<Vec<SliceRecord>>(1);
        let writer = std::thread::Builder::new()
            .name("prepare-shards".into())
            .spawn_scoped(scope, move || write_shards(data, s, row_group_rows, rx))
            .map_err(|e| Error::io(data.shards_dir(), e))?;
        let mut sink = ShardSink {
            tally,
            settings: s,
            tx,
        };
        let produced = produce(&mut sink);
        drop(sink);
        let written = writer
            .join()
            .map_err(|_| Error::input(data.shards_dir(), "the shard writer thread panicked"))?;
        produced?;
        written
    })
}

/// The writer thread: pushes every received record into the shards, then closes them.
fn write_shards(
    data: &DataDir,
    s: &PrepareSettings,
    row_group_rows: usize,
    rx: Receiver<Vec<SliceRecord>>,
) -> Result<(usize, u64)> {
    crate::malloc_tuning::huge_pages_for_this_thread();
    let mut shards = ShardWriter::new(
        data.clone(),
        s.shard_rows,
        row_group_rows,
        s.image_compression,
    );
    for batch in rx {
        for record in batch {
            shards.push(record)?;
        }
    }
    shards.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_shrink_for_large_slices_but_keep_every_thread_busy() {
        assert_eq!(batch_for(128 * 128, 2), 64);
        assert_eq!(batch_for(512 * 512, 2), 4);
        assert_eq!(batch_for(512 * 512, 16), 32);
        assert_eq!(batch_for(64 * 64, 2), 64);
        assert_eq!(batch_for(4096 * 4096, 1), 2);
    }
}
