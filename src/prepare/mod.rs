//! The `prepare` stage: LIDC slice tree (or, with `--source tcia`, the DICOM + XML download) →
//! Parquet shards of windowed slices and fused masks, plus `manifest.parquet`, `rejects.parquet`,
//! `nodules.parquet` (TCIA only) and `prepare.json` (written last).

pub mod build;
pub mod identity;
pub mod input_level;
pub mod nodule_dir;
pub mod reject;
pub mod slice;
pub mod tcia;
pub mod walk;

use crate::atomic::remove_if_exists;
use crate::data::prepare_record::{
    InputIdentity, PrepareConfig, PrepareCounts, PrepareRecord, Source,
};
use crate::error::{Error, IoContext, Result};
use crate::json::write_json_atomic;
use crate::layout::DataDir;
use crate::lock::DirLock;
use crate::wording::count;
use std::path::PathBuf;
use std::time::Instant;

/// The outcome of `run`.
#[derive(Debug, Clone)]
pub struct PrepareReport {
    /// True when the data directory was already complete and nothing was done.
    pub skipped: bool,
    /// Counts of the run (or of the earlier run, when skipped).
    pub counts: PrepareCounts,
    /// Whether slices without any rater's mark went into the shards (`--keep-empty`).
    pub keep_empty: bool,
}

impl PrepareReport {
    /// The one-line summary printed at the end.
    pub fn summary(&self) -> String {
        let c = &self.counts;
        if self.skipped {
            return format!(
                "prepare: already complete ({} in {}); nothing to do (use --overwrite to rebuild)",
                count(c.slices_kept, "slice"),
                count(c.shards, "shard")
            );
        }
        let too_small = if c.slices_too_small > 0 {
            format!(", {} smaller than --min-size", c.slices_too_small)
        } else {
            String::new()
        };
        format!(
            "prepare: {}, {}, {} seen: {} kept, {} with no rater's mark{}{too_small}, {} rejected; {} in rejects.parquet; {} ignored; {}, {:.1} MB in {:.1} s ({:.0} slices/s)",
            count(c.patients, "patient"),
            count(c.nodules, "nodule"),
            count(c.slices_seen, "slice"),
            c.slices_kept,
            c.slices_empty,
            if self.keep_empty { " (kept)" } else { " (left out)" },
            c.slices_rejected,
            count(c.rejects, "row"),
            count(c.files_ignored, "stray file"),
            count(c.shards, "shard"),
            c.bytes as f64 / 1e6,
            c.seconds,
            c.slices_seen as f64 / c.seconds.max(1e-9)
        )
    }
}

/// What the input holds, as read before any output is touched.
enum Found {
    /// The PNG slice tree's walk.
    Slices(walk::TreeWalk),
    /// The TCIA download, listed.
    Tcia(tcia::Download),
}

/// Refuses inputs that cannot work, before any output is touched; returns the input's canonical
/// path.
fn check_paths(cfg: &PrepareConfig) -> Result<PathBuf> {
    let meta = std::fs::metadata(&cfg.input)
        .map_err(|e| Error::input(&cfg.input, format!("input tree not readable: {e}")))?;
    if !meta.is_dir() {
        return Err(Error::input(&cfg.input, "input is not a directory"));
    }
    let input = std::fs::canonicalize(&cfg.input).at(&cfg.input)?;
    let existing = cfg.out.ancestors().find(|a| a.exists());
    if let Some(blocking) = existing.filter(|a| !a.is_dir()) {
        return Err(Error::input(
            blocking,
            format!(
                "exists and is not a directory, so --out {} cannot be a data directory",
                cfg.out.display()
            ),
        ));
    }
    let out_parent = existing.and_then(|a| std::fs::canonicalize(a).ok());
    if let Some(parent) = out_parent {
        if parent.starts_with(&input) {
            return Err(Error::Usage(format!(
                "{}: the data directory must not lie inside the input tree {} (prepare never writes to its input)",
                cfg.out.display(),
                input.display()
            )));
        }
    }
    Ok(input)
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
    let input = check_paths(cfg)?;
    let started = Instant::now();
    let pool = build::decode_pool(cfg.settings.threads)?;
    let found = match cfg.settings.source {
        Source::Slices => {
            let tree = build::walk_tree(&pool, &input);
            if tree.jobs.is_empty() {
                // One line that says why, not a warning per folder of a tree read at the wrong
                // level.
                return Err(input_level::no_slices(&input, &tree));
            }
            Found::Slices(tree)
        }
        Source::Tcia => Found::Tcia(tcia::scan(&pool, &input, cfg.xml_root.as_deref())?),
    };
    let identity = match &found {
        Found::Slices(tree) => identity::identity(&input, tree),
        Found::Tcia(download) => identity::of_listing(&input, &download.listing, download.files),
    };
    let data = DataDir::new(&cfg.out);
    let _lock = DirLock::acquire(data.root(), "prepare --out")?;
    if let Some(previous) = crate::data::prepare_record::read(&data)? {
        if !cfg.overwrite {
            identity::check_same_input(&data, &previous, &identity)?;
            let changed = crate::config::settings_diff(
                &previous.config.settings.output_identity(),
                &cfg.settings.output_identity(),
            );
            if !changed.is_empty() {
                return Err(Error::Usage(format!(
                    "{}: already prepared with different settings ({}); pass --overwrite to rebuild",
                    data.prepare_record().display(),
                    changed.join(", ")
                )));
            }
            return Ok(PrepareReport {
                skipped: true,
                counts: previous.counts,
                keep_empty: previous.config.settings.keep_empty,
            });
        }
        tracing::info!("--overwrite: rebuilding {}", data.root().display());
    } else if data
        .root()
        .read_dir()
        .at(data.root())?
        .flatten()
        .any(|e| e.file_name() != crate::lock::LOCK_FILE)
    {
        tracing::info!(
            "{}: no prepare.json, so any earlier run was incomplete; rebuilding",
            data.root().display()
        );
    }
    clear_outputs(&data)?;
    let written = write_outputs(cfg, &data, (&pool, found, started), identity);
    if written.is_err() {
        // A failed write (a full disk, say) leaves no shard, table or temporary behind: the
        // directory is as incomplete as before, and holds nothing a rerun would have to clear.
        if let Err(e) = clear_outputs(&data) {
            tracing::warn!("cleaning up after the failure: {e}");
        }
    }
    written
}

/// Builds the shards and tables from the walked `tree` on `pool`, then writes `prepare.json`
/// last, with the seconds since `started` (before the walk).
fn write_outputs(
    cfg: &PrepareConfig,
    data: &DataDir,
    (pool, found, started): (&rayon::ThreadPool, Found, Instant),
    input: InputIdentity,
) -> Result<PrepareReport> {
    std::fs::create_dir_all(data.shards_dir()).at(data.shards_dir())?;
    let counts = match found {
        Found::Slices(tree) => build::build(cfg, data, pool, tree)?,
        Found::Tcia(download) => tcia::build(cfg, data, pool, download)?,
    };
    let counts = PrepareCounts {
        seconds: started.elapsed().as_secs_f64(),
        ..counts
    };
    write_json_atomic(
        &data.prepare_record(),
        &PrepareRecord {
            version: env!("CARGO_PKG_VERSION").to_string(),
            config: cfg.clone(),
            input: Some(input),
            counts: counts.clone(),
        },
    )?;
    Ok(PrepareReport {
        skipped: false,
        counts,
        keep_empty: cfg.settings.keep_empty,
    })
}
