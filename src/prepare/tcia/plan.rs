//! From the files of a TCIA download to one plan per CT series: its z-sorted slices, each reader's
//! outlines as masks, and the nodules (clusters of outlines). Headers and XML are read here, in
//! parallel; no pixel is decoded.

use crate::data::fusion::RATERS;
use crate::pixels::dicom::{read_header, DicomError, DicomHeader};
use crate::pixels::file_bytes::read_regular_file;
use crate::prepare::reject::{Reject, RejectReason, TreePlace};
use crate::prepare::tcia::cluster::{cluster, OutlinePoints};
use crate::prepare::tcia::files::FoundFile;
use crate::prepare::tcia::lidc_xml::{self, Characteristics, LidcRead, ReadMessage};
use crate::prepare::tcia::outline::{outline_mask, Contour, OutlineMask};
use crate::prepare::tcia::series::{Series, SliceFile};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::fmt::Write;

/// XML files longer than this are not read (the largest LIDC reading is ~2 MB).
const MAX_XML_BYTES: u64 = 256 << 20;

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
    /// LIDC CT readings read.
    pub readings: usize,
    /// Chest X-ray readings (`IdriReadMessage`), skipped.
    pub chest_xray_readings: usize,
    /// Nodules under 3 mm (a single point) and non-nodules: marked, but no mask.
    pub unoutlined_marks: usize,
}

/// What [`plan`] returns.
#[derive(Debug, Default)]
pub struct Plans {
    /// One plan per CT series with a reading, sorted by patient and series UID.
    pub series: Vec<SeriesPlan>,
    /// Unusable files and readings.
    pub rejects: Vec<Reject>,
    /// What was found.
    pub counts: PlanCounts,
    /// Every used file with its size and every reject with its reason, one per line: hashed into
    /// the input's identity.
    pub listing: String,
    /// DICOM and XML files found.
    pub files: usize,
}

/// A series with its rejects so far and the reading chosen for it (shown path, reading).
type Assembled = (Series, Vec<Reject>, Option<(String, LidcRead)>);

/// Reads the headers of `files` and the readings of `xml_files` on the current rayon pool and
/// assembles the series plans; a progress bar counts the headers unless `quiet`.
pub fn plan(files: &[FoundFile], xml_files: &[FoundFile], max_pixels: u64, quiet: bool) -> Plans {
    let mut out = Plans::default();
    let bar = crate::progress::bar(files.len() as u64, "headers", quiet);
    let headers: Vec<(usize, Result<DicomHeader, DicomError>)> = files
        .par_iter()
        .enumerate()
        .map(|(i, f)| {
            let header = read_header(&f.path, max_pixels);
            bar.inc(1);
            (i, header)
        })
        .collect();
    bar.finish_and_clear();
    let mut by_series: BTreeMap<String, Vec<SliceFile>> = BTreeMap::new();
    let mut tops: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (i, header) in headers {
        let f = &files[i];
        match header {
            Err(DicomError::NoFileMeta) if !f.is_dcm() => out.counts.stray += 1,
            Err(e) => out.rejects.push(Reject::unlogged(
                f.shown.clone(),
                f.place(),
                RejectReason::from(&e),
                e.to_string(),
            )),
            Ok(h) if !h.modality.eq_ignore_ascii_case("CT") => out.counts.other_modality += 1,
            Ok(h) => {
                out.counts.ct_slices += 1;
                let _ = writeln!(out.listing, "dicom\t{}\t{}", f.shown, f.len);
                tops.entry(h.series_uid.clone()).or_insert(f.top.clone());
                by_series
                    .entry(h.series_uid.clone())
                    .or_default()
                    .push(SliceFile {
                        path: f.path.clone(),
                        shown: f.shown.clone(),
                        header: h,
                    });
            }
        }
    }
    let readings = read_readings(xml_files, &mut out);
    let mut readings_by_series: BTreeMap<String, Vec<(String, LidcRead)>> = BTreeMap::new();
    for (shown, read) in readings {
        readings_by_series
            .entry(read.series_uid.clone())
            .or_default()
            .push((shown, read));
    }
    for (uid, list) in &readings_by_series {
        if !by_series.contains_key(uid) {
            for (shown, _) in list {
                out.rejects.push(Reject::unlogged(
                    shown.clone(),
                    TreePlace::default(),
                    RejectReason::XmlWithoutSeries,
                    format!("a reading of series {uid}, which is not in the input"),
                ));
            }
        }
    }
    let assembled: Vec<Assembled> = by_series
        .into_iter()
        .map(|(uid, files)| {
            let top = tops.get(&uid).cloned().flatten().unwrap_or_default();
            let (series, left_out) = Series::assemble(uid.clone(), &top, files);
            let place = TreePlace {
                patient_id: Some(series.patient_id.clone()),
                ..TreePlace::default()
            };
            let mut rejects: Vec<Reject> = left_out
                .into_iter()
                .map(|l| Reject::unlogged(l.file.shown.clone(), place.clone(), l.reason, l.detail))
                .collect();
            let mut list = readings_by_series.remove(&uid).unwrap_or_default();
            let chosen = if list.is_empty() {
                rejects.push(Reject::unlogged(
                    series_folder(&series),
                    place,
                    RejectReason::SeriesWithoutXml,
                    format!(
                        "CT series {uid} ({} slices) has no reading (XML); it gives no masks",
                        series.slices.len()
                    ),
                ));
                None
            } else {
                let first = list.remove(0);
                for (shown, _) in list {
                    rejects.push(Reject::unlogged(
                        shown,
                        place.clone(),
                        RejectReason::DuplicateXml,
                        format!("a second reading of series {uid}; {} is used", first.0),
                    ));
                }
                Some(first)
            };
            (series, rejects, chosen)
        })
        .collect();
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
    out.series.sort_by(|a, b| {
        (&a.series.patient_id, &a.series.uid).cmp(&(&b.series.patient_id, &b.series.uid))
    });
    for r in &out.rejects {
        let _ = writeln!(out.listing, "reject\t{}\t{}", r.path, r.reason.code());
    }
    out.files = files.len() + xml_files.len();
    out
}

/// Reads and parses the XML files in parallel, counting and rejecting as it goes; returns the CT
/// readings with their shown paths, in path order.
fn read_readings(xml_files: &[FoundFile], out: &mut Plans) -> Vec<(String, LidcRead)> {
    let parsed: Vec<Result<ReadMessage, (RejectReason, String)>> = xml_files
        .par_iter()
        .map(|f| {
            let bytes = read_regular_file(&f.path, MAX_XML_BYTES)
                .map_err(|e| (RejectReason::IoError, e.to_string()))?;
            let text = String::from_utf8_lossy(&bytes);
            lidc_xml::parse(&text).map_err(|e| {
                let reason = match e {
                    lidc_xml::XmlError::Malformed(_) => RejectReason::XmlMalformed,
                    lidc_xml::XmlError::NotLidc(_) => RejectReason::XmlNotLidc,
                };
                (reason, e.to_string())
            })
        })
        .collect();
    let mut readings = Vec::new();
    for (f, result) in xml_files.iter().zip(parsed) {
        match result {
            Ok(ReadMessage::Ct(read)) => {
                out.counts.readings += 1;
                let _ = writeln!(out.listing, "xml\t{}\t{}", f.shown, f.len);
                readings.push((f.shown.clone(), read));
            }
            Ok(ReadMessage::ChestXray) => out.counts.chest_xray_readings += 1,
            Err((reason, detail)) => {
                out.rejects
                    .push(Reject::unlogged(f.shown.clone(), f.place(), reason, detail))
            }
        }
    }
    readings
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
            for roi in &nodule.rois {
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
        let uids: Vec<String> = members
            .iter()
            .map(|&i| plans[i].series.uid.replace('.', ""))
            .collect();
        let longest = uids.iter().map(String::len).max().unwrap_or(0);
        let mut len = 6.min(longest);
        let tail = |u: &String, n: usize| u[u.len().saturating_sub(n)..].to_string();
        while len < longest {
            let tails: std::collections::HashSet<String> =
                uids.iter().map(|u| tail(u, len)).collect();
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
