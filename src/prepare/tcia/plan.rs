//! From one patient folder of a TCIA download to one plan per CT series: its z-sorted slices,
//! each reader's outlines as masks, and the nodules (clusters of outlines). Headers are read
//! here, in parallel; no pixel is decoded.

use crate::data::fusion::RATERS;
use crate::pixels::dicom::{read_header, DicomError, DicomHeader};
use crate::prepare::reject::{Reject, RejectReason, TreePlace};
use crate::prepare::tcia::cluster::{cluster, OutlinePoints};
use crate::prepare::tcia::files::FoundFile;
use crate::prepare::tcia::lidc_xml::{Characteristics, LidcRead};
use crate::prepare::tcia::outline::{outline_mask, Contour, OutlineMask};
use crate::prepare::tcia::readings::ReadingIndex;
use crate::prepare::tcia::series::{Series, SliceFile};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashSet};

/// One reader's outline of one nodule, as a mask on the series' slices.
#[derive(Debug, Clone, PartialEq)]
pub struct Outline {
    /// The reading session's index: rater bit `reader`.
    pub reader: usize,
    /// The XML's `noduleID`.
    pub nodule_id: String,
    /// The reader's ratings.
    pub characteristics: Characteristics,
    /// The filled outline.
    pub mask: OutlineMask,
    /// Contour points as (row, column, slice) for the clustering and the diameter.
    pub points: Vec<[i32; 3]>,
    /// The contours' point lists, per contour, for the greatest axial diameter.
    pub contours: Vec<Vec<(i32, i32)>>,
}

/// One series, ready for its slices to be decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesPlan {
    /// The slices and geometry.
    pub series: Series,
    /// A short name unique within the patient: the series UID's last digits.
    pub tag: String,
    /// The reading used (shown path).
    pub xml: String,
    /// Every reader's outlines.
    pub outlines: Vec<Outline>,
    /// Nodules as outline indices, in pylidc's order.
    pub nodules: Vec<Vec<usize>>,
    /// True when a nodule still had more than four outlines at the smallest tolerance.
    pub unresolved: bool,
    /// Bit r set for each reading session r (of the first four) of the reading: the raters of
    /// a whole slice.
    pub readers: u8,
}

/// Counts of what the scan of the download found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanCounts {
    /// DICOM CT slices whose headers were read.
    pub ct_slices: usize,
    /// DICOM files of other modalities (CR, DX, SEG, ...), skipped.
    pub other_modality: usize,
    /// Files that are neither DICOM nor XML (READMEs, licences), skipped.
    pub stray: usize,
    /// Nodules under 3 mm (a single point) and non-nodules: marked, but no mask.
    pub unoutlined_marks: usize,
}

impl PlanCounts {
    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &PlanCounts) {
        self.ct_slices += other.ct_slices;
        self.other_modality += other.other_modality;
        self.stray += other.stray;
        self.unoutlined_marks += other.unoutlined_marks;
    }
}

/// What [`plan_patient`] returns.
#[derive(Debug, Default)]
pub struct PatientPlan {
    /// One plan per CT series with a reading, sorted by series UID.
    pub series: Vec<SeriesPlan>,
    /// Unusable files and readings.
    pub rejects: Vec<Reject>,
    /// What was found.
    pub counts: PlanCounts,
}

/// A series with its rejects so far and the reading chosen for it (shown path, reading).
type Assembled = (Series, Vec<Reject>, Option<(String, LidcRead)>);

/// Reads the headers of one patient folder's `files` on the current rayon pool and plans its CT
/// series with their readings from `readings`. `seen` holds the series UIDs planned before: a
/// series met again (a copy of a folder) is rejected, not written twice. Memory is one patient's:
/// a whole download is planned and written patient by patient.
pub fn plan_patient(
    files: Vec<FoundFile>,
    readings: &mut ReadingIndex,
    seen: &mut HashSet<String>,
    max_pixels: u64,
) -> PatientPlan {
    let mut out = PatientPlan::default();
    let headers: Vec<Result<DicomHeader, DicomError>> = files
        .par_iter()
        .map(|f| read_header(&f.path, max_pixels))
        .collect();
    let mut by_series: BTreeMap<String, (Option<String>, Vec<SliceFile>)> = BTreeMap::new();
    for (f, header) in files.into_iter().zip(headers) {
        match header {
            Err(DicomError::NoFileMeta) if !f.is_dcm() => out.counts.stray += 1,
            Err(e) => out.rejects.push(Reject::unlogged(
                f.shown.clone(),
                f.place(),
                RejectReason::from(&e),
                e.to_string(),
            )),
            Ok(h) if !h.modality.eq_ignore_ascii_case("CT") => out.counts.other_modality += 1,
            Ok(mut h) => {
                out.counts.ct_slices += 1;
                // The series key and the per-series strings are kept once, not per slice.
                let series_uid = std::mem::take(&mut h.series_uid);
                h.study_uid = String::new();
                h.modality = String::new();
                let entry = by_series
                    .entry(series_uid)
                    .or_insert((f.top.clone(), Vec::new()));
                entry.1.push(SliceFile {
                    path: f.path,
                    shown: f.shown,
                    header: h,
                });
            }
        }
    }
    let mut assembled: Vec<Assembled> = Vec::new();
    for (uid, (top, files)) in by_series {
        let (series, left_out) = Series::assemble(uid.clone(), &top.unwrap_or_default(), files);
        let place = TreePlace {
            patient_id: Some(series.patient_id.clone()),
            ..TreePlace::default()
        };
        if !seen.insert(uid.clone()) {
            out.rejects.push(Reject::unlogged(
                series_folder(&series),
                place,
                RejectReason::DuplicateSeries,
                format!("CT series {uid} was met before in another folder; this copy is left out"),
            ));
            continue;
        }
        let mut rejects: Vec<Reject> = left_out
            .into_iter()
            .map(|l| Reject::unlogged(l.file.shown.clone(), place.clone(), l.reason, l.detail))
            .collect();
        let (chosen, duplicates) = readings.take(&uid, &place);
        rejects.extend(duplicates);
        if chosen.is_none() {
            rejects.push(Reject::unlogged(
                series_folder(&series),
                place,
                RejectReason::SeriesWithoutXml,
                format!(
                    "CT series {uid} ({} slices) has no reading (XML); it gives no masks",
                    series.slices.len()
                ),
            ));
        }
        assembled.push((series, rejects, chosen));
    }
    let planned: Vec<(Option<SeriesPlan>, Vec<Reject>, usize)> = assembled
        .into_par_iter()
        .map(|(series, mut rejects, chosen)| match chosen {
            None => (None, rejects, 0),
            Some((xml, read)) => {
                let (plan, unoutlined) = series_plan(series, xml, &read, &mut rejects);
                (Some(plan), rejects, unoutlined)
            }
        })
        .collect();
    for (plan, rejects, unoutlined) in planned {
        out.counts.unoutlined_marks += unoutlined;
        out.rejects.extend(rejects);
        out.series.extend(plan);
    }
    name_series(&mut out.series);
    out
}

/// The folder of a series' first slice, as shown in tables.
fn series_folder(series: &Series) -> String {
    series
        .slices
        .first()
        .and_then(|s| s.shown.rsplit_once('/').map(|(dir, _)| dir.to_string()))
        .unwrap_or_else(|| series.uid.clone())
}

/// The outlines and nodules of one series from its reading `read` (shown as `xml`); returns the
/// plan and the count of marks without an outline (nodules under 3 mm and non-nodules).
pub fn series_plan(
    series: Series,
    xml: String,
    read: &LidcRead,
    rejects: &mut Vec<Reject>,
) -> (SeriesPlan, usize) {
    let place = TreePlace {
        patient_id: Some(series.patient_id.clone()),
        ..TreePlace::default()
    };
    let mut outlines = Vec::new();
    let mut unoutlined = 0;
    for (reader, session) in read.sessions.iter().enumerate() {
        unoutlined += session.non_nodules;
        let outlined = session.nodules.iter().filter(|n| n.is_outlined()).count();
        unoutlined += session.nodules.len() - outlined;
        if reader >= RATERS && outlined > 0 {
            rejects.push(Reject::unlogged(
                xml.clone(),
                place.clone(),
                RejectReason::TooManyReaders,
                format!(
                    "reading session {} of {}: the rater bits hold {RATERS} readers; its {outlined} outlines are left out",
                    reader + 1,
                    read.sessions.len()
                ),
            ));
            continue;
        }
        for nodule in session.nodules.iter().filter(|n| n.is_outlined()) {
            let mut contours = Vec::new();
            if nodule.unreadable > 0 {
                rejects.push(Reject::unlogged(
                    xml.clone(),
                    place.clone(),
                    RejectReason::ContourInvalid,
                    format!(
                        "reader {reader}, nodule {:?}: {} contours without a readable z or edge points without integer coordinates; they are left out",
                        nodule.nodule_id, nodule.unreadable
                    ),
                ));
            }
            for roi in &nodule.rois {
                let outside = roi.points.iter().find(|&&(x, y)| {
                    x < 0 || y < 0 || x as usize >= series.columns || y as usize >= series.rows
                });
                if roi.points.is_empty() || outside.is_some() {
                    let why = match outside {
                        Some((x, y)) => format!(
                            "has the point (x {x}, y {y}) outside the {}x{} slice",
                            series.columns, series.rows
                        ),
                        None => "has no edge points".into(),
                    };
                    rejects.push(Reject::unlogged(
                        xml.clone(),
                        place.clone(),
                        RejectReason::ContourInvalid,
                        format!(
                            "reader {reader}, nodule {:?}: a contour at z = {} {why}; the contour is left out",
                            nodule.nodule_id, roi.z
                        ),
                    ));
                    continue;
                }
                let Some(k) = series.slice_of(&roi.sop_uid, roi.z) else {
                    rejects.push(Reject::unlogged(
                        xml.clone(),
                        place.clone(),
                        RejectReason::ContourWithoutSlice,
                        format!(
                            "reader {reader}, nodule {:?}: a contour at z = {} on SOP UID {:?} matches no slice of series {}; the contour is left out",
                            nodule.nodule_id, roi.z, roi.sop_uid, series.uid
                        ),
                    ));
                    continue;
                };
                contours.push(Contour {
                    k,
                    inclusion: roi.inclusion,
                    points: roi.points.iter().map(|&(x, y)| (y, x)).collect(),
                });
            }
            if contours.is_empty() {
                continue;
            }
            let points = contours
                .iter()
                .flat_map(|c| c.points.iter().map(move |&(r, col)| [r, col, c.k as i32]))
                .collect();
            outlines.push(Outline {
                reader,
                nodule_id: nodule.nodule_id.clone(),
                characteristics: nodule.characteristics.unwrap_or_default(),
                mask: outline_mask(&contours),
                points,
                contours: contours.into_iter().map(|c| c.points).collect(),
            });
        }
    }
    let for_clustering: Vec<OutlinePoints> = outlines
        .iter()
        .map(|o| OutlinePoints {
            points: o.points.clone(),
            centroid_k: centroid_k(o),
        })
        .collect();
    let clusters = cluster(&for_clustering, series.slice_thickness);
    let plan = SeriesPlan {
        readers: (0..read.sessions.len().min(RATERS)).fold(0u8, |b, r| b | 1 << r),
        tag: String::new(),
        xml,
        nodules: clusters.groups,
        unresolved: clusters.unresolved,
        outlines,
        series,
    };
    (plan, unoutlined)
}

/// pylidc's `centroid[2]`: the mean slice index of the outline's contour points
/// (`self.contours_matrix.mean(axis=0)` in pylidc 0.2.3's `Annotation.centroid`).
fn centroid_k(o: &Outline) -> f64 {
    let n = o.points.len().max(1) as f64;
    o.points.iter().map(|p| f64::from(p[2])).sum::<f64>() / n
}

/// Names each series by the shortest tail of its UID (at least 6 characters) that no other
/// series of the same patient shares.
fn name_series(plans: &mut [SeriesPlan]) {
    let mut by_patient: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, p) in plans.iter().enumerate() {
        by_patient
            .entry(p.series.patient_id.clone())
            .or_default()
            .push(i);
    }
    for members in by_patient.values() {
        // Characters, not bytes (a UID is ASCII by the standard, but a file may say otherwise),
        // with the dots kept, so that distinct UIDs give distinct tails; `/` would split ids.
        let uids: Vec<Vec<char>> = members
            .iter()
            .map(|&i| {
                plans[i]
                    .series
                    .uid
                    .chars()
                    .map(|c| if c == '/' { '_' } else { c })
                    .collect()
            })
            .collect();
        let longest = uids.iter().map(Vec::len).max().unwrap_or(0);
        let tail =
            |u: &[char], n: usize| -> String { u[u.len().saturating_sub(n)..].iter().collect() };
        let mut len = 6.min(longest);
        while len < longest {
            let tails: HashSet<String> = uids.iter().map(|u| tail(u, len)).collect();
            if tails.len() == uids.len() {
                break;
            }
            len += 1;
        }
        for (&i, uid) in members.iter().zip(&uids) {
            plans[i].tag = format!("s{}", tail(uid, len));
        }
    }
}
