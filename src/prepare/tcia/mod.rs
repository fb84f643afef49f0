//! `prepare --source tcia`: the original LIDC-IDRI download (DICOM CT series and the readers'
//! XML) straight to the same shards as the slice tree, plus `nodules.parquet`. Headers and XML
//! are read first, to group, sort and cluster; then only the slices that nodules touch are
//! decoded, in parallel batches, as the PNG path does.

pub mod cluster;
pub mod crop;
pub mod files;
pub mod lidc_xml;
pub mod nodules;
pub mod outline;
pub mod plan;
pub mod series;

use crate::data::nodule_table::write_nodules;
use crate::data::prepare_record::{PrepareConfig, PrepareCounts};
use crate::error::{Error, Result};
use crate::layout::DataDir;
use crate::prepare::build::{batch_for, decode_and_write, Tally};
use crate::wording::count;
use plan::Plans;
use rayon::ThreadPool;
use std::path::Path;
use std::time::Instant;

/// Lists and reads the download below `input` (and the readings below `xml_root`) on `pool`,
/// with files capped at `max_pixels` and a progress bar unless `quiet`. Fails with a usage error
/// when no CT series with a reading is found.
pub fn scan(
    pool: &ThreadPool,
    input: &Path,
    xml_root: Option<&Path>,
    (max_pixels, quiet): (u64, bool),
) -> Result<Plans> {
    let phase = Instant::now();
    let (found, mut rejects) = files::list_files(input, "");
    let (mut xml, other): (Vec<_>, Vec<_>) = found.into_iter().partition(|f| f.is_xml());
    if let Some(root) = xml_root {
        let meta = std::fs::metadata(root)
            .map_err(|e| Error::input(root, format!("--xml-root not readable: {e}")))?;
        if !meta.is_dir() {
            return Err(Error::input(root, "--xml-root is not a directory"));
        }
        let (extra, extra_rejects) = files::list_files(root, "<xml-root>");
        xml.extend(extra.into_iter().filter(|f| f.is_xml()));
        rejects.extend(extra_rejects);
    }
    let mut plans = pool.install(|| plan::plan(&other, &xml, max_pixels, quiet));
    plans.rejects.splice(0..0, rejects);
    if let Some(root) = xml_root {
        plans
            .listing
            .push_str(&format!("xml-root\t{}\n", root.display()));
    }
    tracing::debug!(
        "tcia scan: {} series planned in {:.3}s",
        plans.series.len(),
        phase.elapsed().as_secs_f64()
    );
    if plans.series.is_empty() {
        let c = &plans.counts;
        return Err(Error::input(
            input,
            format!(
                "no CT series with a reading found ({}, {}, {}); expected LIDC-IDRI-NNNN/<study>/<series>/*.dcm with the series' XML below this folder{}",
                count(c.ct_slices, "DICOM CT slice"),
                count(c.readings, "CT reading"),
                count(plans.rejects.len(), "rejected file"),
                if c.ct_slices > 0 && c.readings == 0 {
                    "; if the XML files sit elsewhere, pass --xml-root"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(plans)
}

/// Decodes the planned slices on `pool` and writes the shards, the manifest, the rejects and
/// `nodules.parquet` (everything but `prepare.json`); returns the counts.
pub fn build(
    cfg: &PrepareConfig,
    data: &DataDir,
    pool: &ThreadPool,
    plans: Plans,
) -> Result<PrepareCounts> {
    let s = &cfg.settings;
    let patients: std::collections::BTreeSet<&str> = plans
        .series
        .iter()
        .map(|p| p.series.patient_id.as_str())
        .collect();
    let jobs = crop::jobs(
        &plans.series,
        s.full_slices,
        s.full_slices && s.keep_empty,
        s.crop_size,
    );
    let c = &plans.counts;
    let counts = PrepareCounts {
        patients: patients.len(),
        nodules: plans.series.iter().map(|p| p.nodules.len()).sum(),
        slices_seen: jobs.len(),
        files_ignored: c.stray + c.other_modality + c.chest_xray_readings,
        ..PrepareCounts::default()
    };
    tracing::info!(
        "tcia: {} in {} ({}), {}; {} and {} skipped; {} without an outline",
        count(plans.series.len(), "CT series"),
        count(patients.len(), "patient"),
        count(c.ct_slices, "slice"),
        count(counts.nodules, "nodule"),
        count(c.chest_xray_readings, "chest X-ray reading"),
        count(c.other_modality, "non-CT DICOM file"),
        count(c.unoutlined_marks, "mark")
    );
    let rules = s.intensity();
    let mut tally = Tally::new(counts, plans.rejects);
    let largest = jobs.iter().map(|j| j.height * j.width).max().unwrap_or(1);
    let batch = batch_for(largest, pool.current_num_threads());
    let shards = decode_and_write(cfg, data, (pool, batch), &jobs, &mut tally, |job| {
        crop::process(job, &plans.series, &rules, s.max_pixels)
    })?;
    tally.counts.bytes += write_nodules(&data.nodules(), &nodules::rows(&plans.series))?;
    tally.finish(data, shards)
}
