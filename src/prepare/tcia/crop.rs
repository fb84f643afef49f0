//! The slices a TCIA series gives: by default a crop centred on each nodule on every slice of
//! its z-range (the layout of the Kaggle slice tree, so training is unchanged), or with
//! `--full-slices` every whole slice a nodule touches. Each becomes a shard record with the
//! readers' outlines as rater bits.

use crate::data::shards::{ScanPlace, SliceRecord};
use crate::pixels::dicom::read_hu;
use crate::pixels::intensity::IntensityRules;
use crate::prepare::reject::{Reject, RejectReason, TreePlace};
use crate::prepare::slice::SliceOutcome;
use crate::prepare::tcia::plan::SeriesPlan;
use crate::slice_id::SliceId;

/// Air: what a crop holds beyond the slice's edge.
pub const PAD_HU: f32 = -1024.0;

/// One slice record to build: a window of slice `k` of series `series`.
#[derive(Debug, Clone, PartialEq)]
pub struct CropJob {
    /// Index of the series plan.
    pub series: usize,
    /// Slice index in the z-sorted series.
    pub k: usize,
    /// The nodule the crop is centred on; `None` for a whole slice.
    pub nodule: Option<usize>,
    /// Top-left corner of the window (may lie outside the slice).
    pub row0: i32,
    pub col0: i32,
    /// Window size.
    pub height: usize,
    pub width: usize,
}

/// A nodule's slice range and in-plane centre (the mean of its outlines' voxels).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoduleExtent {
    /// First and last slice index with a contour of any of its outlines.
    pub k_first: usize,
    pub k_last: usize,
    /// Mean row and column of the union of its outlines' voxels (of their contour points when
    /// the union is empty).
    pub centre: (f64, f64),
    /// Voxels in the union of its outlines.
    pub voxels: usize,
}

/// The extent of nodule `n` of `plan`; `None` when its outlines have no slice (it cannot happen
/// for outlines built from contours, which always have one).
pub fn nodule_extent(plan: &SeriesPlan, n: usize) -> Option<NoduleExtent> {
    let members = &plan.nodules[n];
    let outlines = || members.iter().map(|&a| &plan.outlines[a]);
    let ks = outlines().flat_map(|o| o.mask.planes.keys().copied());
    let k_first = ks.clone().min()?;
    let k_last = ks.max()?;
    let mut union = std::collections::BTreeSet::new();
    for o in outlines() {
        for &k in o.mask.planes.keys() {
            union.extend(o.mask.pixels(k).into_iter().map(|(r, c)| (k, r, c)));
        }
    }
    let mean = |points: &mut dyn Iterator<Item = (i32, i32)>| {
        let (mut r, mut c, mut n) = (0.0, 0.0, 0usize);
        for (pr, pc) in points {
            r += f64::from(pr);
            c += f64::from(pc);
            n += 1;
        }
        (r / n.max(1) as f64, c / n.max(1) as f64)
    };
    let centre = if union.is_empty() {
        mean(&mut outlines().flat_map(|o| o.points.iter().map(|p| (p[0], p[1]))))
    } else {
        mean(&mut union.iter().map(|&(_, r, c)| (r, c)))
    };
    Some(NoduleExtent {
        k_first,
        k_last,
        centre,
        voxels: union.len(),
    })
}

/// Every record to build from `plans`, series by series: crops of `crop` x `crop` pixels per
/// nodule and slice, or whole slices when `full_slices`: the slices a nodule touches, or every
/// slice of the series with `every_slice` (`--full-slices --keep-empty`: negatives too).
pub fn jobs(
    plans: &[SeriesPlan],
    full_slices: bool,
    every_slice: bool,
    crop: usize,
) -> Vec<CropJob> {
    let mut jobs = Vec::new();
    for (s, plan) in plans.iter().enumerate() {
        let extents: Vec<(usize, NoduleExtent)> = (0..plan.nodules.len())
            .filter_map(|n| Some((n, nodule_extent(plan, n)?)))
            .collect();
        if full_slices {
            let mut ks: Vec<usize> = if every_slice {
                (0..plan.series.slices.len()).collect()
            } else {
                extents
                    .iter()
                    .flat_map(|(_, e)| e.k_first..=e.k_last)
                    .collect()
            };
            ks.sort_unstable();
            ks.dedup();
            jobs.extend(ks.into_iter().map(|k| CropJob {
                series: s,
                k,
                nodule: None,
                row0: 0,
                col0: 0,
                height: plan.series.rows,
                width: plan.series.columns,
            }));
            continue;
        }
        for &(n, ref e) in &extents {
            let half = (crop / 2) as i32;
            let row0 = e.centre.0.round() as i32 - half;
            let col0 = e.centre.1.round() as i32 - half;
            jobs.extend((e.k_first..=e.k_last).map(|k| CropJob {
                series: s,
                k,
                nodule: Some(n),
                row0,
                col0,
                height: crop,
                width: crop,
            }));
        }
    }
    jobs
}

/// The nodule part of slice ids: `<series tag>-n<NN>` for a nodule's crops, the series tag for
/// whole slices.
pub fn nodule_name(plan: &SeriesPlan, nodule: Option<usize>) -> String {
    match nodule {
        Some(n) => format!("{}-n{:02}", plan.tag, n + 1),
        None => plan.tag.clone(),
    }
}

/// Decodes the slice of `job` and builds its record, or the reject that explains why not.
pub fn process(
    job: &CropJob,
    plans: &[SeriesPlan],
    rules: &IntensityRules,
    max_pixels: u64,
) -> SliceOutcome {
    let plan = &plans[job.series];
    let series = &plan.series;
    let file = &series.slices[job.k];
    let nodule_id = nodule_name(plan, job.nodule);
    let reject = |reason, detail: String| SliceOutcome {
        record: None,
        rejects: vec![Reject::new(
            file.shown.clone(),
            TreePlace {
                patient_id: Some(series.patient_id.clone()),
                nodule_id: Some(nodule_id.clone()),
                slice_name: file
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned()),
            },
            reason,
            detail,
        )],
        colour_files: 0,
    };
    let hu = match read_hu(&file.path, max_pixels) {
        Ok((h, _)) if (h.rows, h.columns) != (series.rows, series.columns) => {
            return reject(
                RejectReason::DicomSizeMismatch,
                format!(
                    "the pixels read as {}x{}, the header said {}x{}",
                    h.rows, h.columns, series.rows, series.columns
                ),
            )
        }
        Ok((_, hu)) => hu,
        Err(e) => return reject(RejectReason::from(&e), e.to_string()),
    };
    let (h, w) = (job.height, job.width);
    let mut image = Vec::with_capacity(h * w);
    for r in 0..h as i32 {
        let sr = job.row0 + r;
        for c in 0..w as i32 {
            let sc = job.col0 + c;
            let inside =
                sr >= 0 && sc >= 0 && (sr as usize) < series.rows && (sc as usize) < series.columns;
            let v = if inside {
                hu[sr as usize * series.columns + sc as usize]
            } else {
                PAD_HU
            };
            image.push(rules.map_hu(v));
        }
    }
    let members: Vec<usize> = match job.nodule {
        Some(n) => plan.nodules[n].clone(),
        None => (0..plan.outlines.len()).collect(),
    };
    let mut rater_bits = vec![0u8; h * w];
    // A crop's raters are the readers who outlined its nodule (as the Kaggle slices have them);
    // a whole slice's are the series' reading sessions.
    let mut raters_present = if job.nodule.is_some() {
        0
    } else {
        plan.readers
    };
    for &a in &members {
        let o = &plan.outlines[a];
        let bit = 1u8 << o.reader;
        if job.nodule.is_some() {
            raters_present |= bit;
        }
        for (row, col) in o.mask.pixels(job.k) {
            let (r, c) = (row - job.row0, col - job.col0);
            if r >= 0 && c >= 0 && (r as usize) < h && (c as usize) < w {
                rater_bits[r as usize * w + c as usize] |= bit;
            }
        }
    }
    let mask: Vec<u8> = rater_bits.iter().map(|&b| u8::from(b != 0)).collect();
    let mask_pixels = mask.iter().map(|&m| u64::from(m)).sum();
    let stem = format!("{:04}", job.k);
    let slice_name = file
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    SliceOutcome {
        record: Some(SliceRecord {
            slice_id: SliceId {
                patient: &series.patient_id,
                nodule: &nodule_id,
                stem: &stem,
            }
            .to_string(),
            patient_id: series.patient_id.clone(),
            nodule_id: nodule_id.clone(),
            slice_name,
            slice_index: i32::try_from(job.k).ok(),
            height: h,
            width: w,
            source_bits: 16,
            image,
            mask,
            rater_bits,
            raters_present,
            mask_pixels,
            scan: Some(ScanPlace {
                series_uid: series.uid.clone(),
                z: file.header.z,
                pixel_spacing: series.pixel_spacing,
                slice_spacing: series.slice_spacing,
            }),
        }),
        rejects: Vec::new(),
        colour_files: 0,
    }
}
