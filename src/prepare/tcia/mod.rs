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
pub mod readings;
pub mod series;

use crate::data::nodule_table::write_nodules;
use crate::data::prepare_record::{PrepareConfig, PrepareCounts};
use crate::error::{Error, Result};
use crate::layout::DataDir;
use crate::prepare::build::{batch_for, row_group_rows_for, write_through, Tally};
use crate::prepare::reject::Reject;
use crate::wording::count;
use files::FoundFile;
use plan::PlanCounts;
use rayon::prelude::*;
use rayon::ThreadPool;
use readings::ReadingIndex;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// A listed download, before any DICOM header is read.
#[derive(Debug)]
pub struct Download {
    /// The input root (for messages).
    input: PathBuf,
    /// Files that may be DICOM, grouped by their top folder (the patient folder; files directly
    /// under the root form one group), in path order.
    patients: Vec<Vec<FoundFile>>,
    /// The CT readings by series.
    readings: ReadingIndex,
    /// Entries that could not be listed or read as readings.
    rejects: Vec<Reject>,
    /// Every file with its size, every listing reject with its reason and the `--xml-root`, one
    /// per line: hashed into the input's identity.
    pub listing: String,
    /// Files found.
    pub files: usize,
}

/// Lists the download below `input` (and the readings below `xml_root`) and parses the readings
/// on `pool`. Fails with a usage error when there is no CT reading or no other file at all.
pub fn scan(pool: &ThreadPool, input: &Path, xml_root: Option<&Path>) -> Result<Download> {
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
    let mut listing = String::new();
    for f in other.iter().chain(&xml) {
        let _ = writeln!(listing, "file\t{}\t{}", f.shown, f.len);
    }
    for r in &rejects {
        let _ = writeln!(listing, "reject\t{}\t{}", r.path, r.reason.code());
    }
    if let Some(root) = xml_root {
        let _ = writeln!(listing, "xml-root\t{}", root.display());
    }
    let (readings, xml_rejects) = pool.install(|| ReadingIndex::read(&xml));
    rejects.extend(xml_rejects);
    let files = other.len() + xml.len();
    if readings.is_empty() || other.is_empty() {
        return Err(no_series(
            input,
            other.len(),
            readings.readings,
            rejects.len(),
            !other.is_empty(),
        ));
    }
    let mut by_top: BTreeMap<Option<String>, Vec<FoundFile>> = BTreeMap::new();
    for f in other {
        by_top.entry(f.top.clone()).or_default().push(f);
    }
    Ok(Download {
        input: input.to_path_buf(),
        patients: by_top.into_values().collect(),
        readings,
        rejects,
        listing,
        files,
    })
}

/// The usage error of a download without a CT series that has a reading.
fn no_series(
    input: &Path,
    files: usize,
    readings: usize,
    rejects: usize,
    has_files: bool,
) -> Error {
    Error::input(
        input,
        format!(
            "no CT series with a reading found ({}, {}, {}); expected LIDC-IDRI-NNNN/<study>/<series>/*.dcm with the series' XML below this folder{}",
            count(files, "file"),
            count(readings, "CT reading"),
            count(rejects, "rejected file"),
            if has_files && readings == 0 {
                "; if the XML files sit elsewhere, pass --xml-root"
            } else {
                ""
            }
        ),
    )
}

/// Makes every (patient, series tag) unique over the whole download: two patient folders with
/// the same `PatientID` could otherwise give their series the same tag, and so the same slice
/// ids. `used` holds the pairs given out so far.
fn unique_tags(series: &mut [plan::SeriesPlan], used: &mut HashSet<(String, String)>) {
    for p in series {
        let base = p.tag.clone();
        let mut n = 1;
        while !used.insert((p.series.patient_id.clone(), p.tag.clone())) {
            n += 1;
            p.tag = format!("{base}-{n}");
        }
    }
}

/// What the patient-by-patient pass counted besides the tally.
#[derive(Debug, Default)]
struct Pass {
    counts: PlanCounts,
    patients: BTreeSet<String>,
    series: usize,
    nodule_rows: Vec<crate::data::nodule_table::NoduleRow>,
}

/// Plans, decodes and writes the download patient folder by patient folder on `pool`: headers,
/// outlines, nodules, then the slices they need, so that memory holds one patient at a time.
/// Writes the shards, the manifest, the rejects and `nodules.parquet` (everything but
/// `prepare.json`); returns the counts.
pub fn build(
    cfg: &PrepareConfig,
    data: &DataDir,
    pool: &ThreadPool,
    download: Download,
) -> Result<PrepareCounts> {
    let s = &cfg.settings;
    let Download {
        input,
        patients,
        mut readings,
        rejects,
        ..
    } = download;
    let (readings_found, chest_xray) = (readings.readings, readings.chest_xray);
    let mut tally = Tally::new(PrepareCounts::default(), rejects);
    // Whole slices are taken as 512x512, the LIDC's size, to size the batches and row groups.
    let pixels = if s.full_slices {
        512 * 512
    } else {
        s.crop_size * s.crop_size
    };
    let batch = batch_for(pixels, pool.current_num_threads());
    let rules = s.intensity();
    let total: usize = patients.iter().map(Vec::len).sum();
    let bar = crate::progress::bar(total as u64, "prepare", cfg.quiet);
    let mut pass = Pass::default();
    let mut seen = HashSet::new();
    let mut tags = HashSet::new();
    let shards = write_through(
        cfg,
        data,
        row_group_rows_for(s.row_group_rows, batch),
        &mut tally,
        |sink| {
            for files in patients {
                let listed = files.len() as u64;
                let patient = pool
                    .install(|| plan::plan_patient(files, &mut readings, &mut seen, s.max_pixels));
                bar.inc(listed);
                let mut patient = patient;
                unique_tags(&mut patient.series, &mut tags);
                sink.reject(patient.rejects);
                pass.counts.add(&patient.counts);
                pass.series += patient.series.len();
                pass.patients
                    .extend(patient.series.iter().map(|p| p.series.patient_id.clone()));
                pass.nodule_rows.extend(nodules::rows(&patient.series));
                let jobs = crop::jobs(
                    &patient.series,
                    s.full_slices,
                    s.full_slices && s.keep_empty,
                    s.crop_size,
                );
                let counts = sink.counts();
                counts.nodules += patient
                    .series
                    .iter()
                    .map(|p| p.nodules.len())
                    .sum::<usize>();
                counts.slices_seen += jobs.len();
                for chunk in jobs.chunks(batch) {
                    let outcomes = pool.install(|| {
                        chunk
                            .par_iter()
                            .map(|job| crop::process(job, &patient.series, &rules, s.max_pixels))
                            .collect()
                    });
                    if !sink.send(outcomes) {
                        return Ok(()); // the writer failed; its error is returned
                    }
                }
            }
            sink.reject(std::mem::take(&mut readings).unclaimed());
            Ok(())
        },
    )?;
    bar.finish_and_clear();
    let c = &pass.counts;
    if pass.series == 0 {
        return Err(no_series(
            &input,
            c.ct_slices,
            readings_found,
            tally.rejects_len(),
            true,
        ));
    }
    tracing::info!(
        "tcia: {} in {} ({}), {}; {} and {} skipped; {} without an outline",
        count(pass.series, "CT series"),
        count(pass.patients.len(), "patient"),
        count(c.ct_slices, "slice"),
        count(tally.counts.nodules, "nodule"),
        count(chest_xray, "chest X-ray reading"),
        count(c.other_modality, "non-CT DICOM file"),
        count(c.unoutlined_marks, "mark")
    );
    tally.counts.patients = pass.patients.len();
    tally.counts.files_ignored = c.stray + c.other_modality + chest_xray;
    tally.counts.bytes += write_nodules(&data.nodules(), &pass.nodule_rows)?;
    tally.finish(data, shards)
}
