//! One CT series as a z-sorted stack of slices: its geometry, the duplicate positions it drops,
//! and which slice a reader's contour lies on.

use crate::pixels::dicom::DicomHeader;
use crate::prepare::reject::RejectReason;
use crate::rng::fnv1a64;
use std::collections::HashMap;
use std::path::PathBuf;

/// One slice file of a series.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceFile {
    /// The path to open.
    pub path: PathBuf,
    /// The path shown in tables: relative to the input root.
    pub shown: String,
    /// Its header.
    pub header: DicomHeader,
}

/// A series' slices sorted by z, one per position.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// `SeriesInstanceUID`.
    pub uid: String,
    /// `PatientID` of its first slice (the top folder's name when the tag is empty).
    pub patient_id: String,
    /// The slices, z ascending.
    pub slices: Vec<SliceFile>,
    /// Median z step (mm); 0 for a single slice.
    pub slice_spacing: f64,
    /// `SliceThickness` of the first slice that has one, else the spacing: the clustering's
    /// tolerance, as pylidc's `scan.slice_thickness`.
    pub slice_thickness: f64,
    /// In-plane pixel spacing (mm), the row spacing of the first slice.
    pub pixel_spacing: f64,
    /// Rows and columns of every slice.
    pub rows: usize,
    pub columns: usize,
    /// FNV-1a hash of each slice's SOP instance UID → its index (hashes, not copies of the UIDs,
    /// keep a download's plans small; a 64-bit collision between two slices of one series is
    /// not a practical concern).
    sop_index: HashMap<u64, usize>,
}

/// A slice left out of its series, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct LeftOut {
    /// The file.
    pub file: SliceFile,
    /// [`RejectReason::DuplicateZ`] or [`RejectReason::DicomSizeMismatch`].
    pub reason: RejectReason,
    /// A message for the rejects table.
    pub detail: String,
}

impl Series {
    /// Builds the series from its files (all with the same series UID). Slices whose size differs
    /// from the most common one, and all but the lowest `InstanceNumber` at a repeated z, are left
    /// out and returned.
    pub fn assemble(
        uid: String,
        fallback_patient: &str,
        mut files: Vec<SliceFile>,
    ) -> (Self, Vec<LeftOut>) {
        let mut left_out = Vec::new();
        let mut sizes: HashMap<(usize, usize), usize> = HashMap::new();
        for f in &files {
            *sizes.entry((f.header.rows, f.header.columns)).or_default() += 1;
        }
        let (rows, columns) = sizes
            .iter()
            .max_by_key(|(size, n)| (**n, std::cmp::Reverse(**size)))
            .map(|(size, _)| *size)
            .unwrap_or((0, 0));
        files.retain(|f| {
            let same = (f.header.rows, f.header.columns) == (rows, columns);
            if !same {
                left_out.push(LeftOut {
                    file: f.clone(),
                    reason: RejectReason::DicomSizeMismatch,
                    detail: format!(
                        "{}x{} pixels where the series' other slices have {rows}x{columns}",
                        f.header.rows, f.header.columns
                    ),
                });
            }
            same
        });
        let instance = |f: &SliceFile| f.header.instance_number.unwrap_or(i32::MAX);
        files.sort_by(|a, b| {
            a.header
                .z
                .total_cmp(&b.header.z)
                .then(instance(a).cmp(&instance(b)))
                .then(a.shown.cmp(&b.shown))
        });
        let mut slices: Vec<SliceFile> = Vec::with_capacity(files.len());
        for f in files {
            match slices.last() {
                Some(kept) if kept.header.z == f.header.z => left_out.push(LeftOut {
                    detail: format!(
                        "z = {} repeats slice {} (InstanceNumber {} against this file's {}); the lower InstanceNumber is kept",
                        f.header.z,
                        kept.shown,
                        instance_text(kept.header.instance_number),
                        instance_text(f.header.instance_number)
                    ),
                    file: f,
                    reason: RejectReason::DuplicateZ,
                }),
                _ => slices.push(f),
            }
        }
        let mut steps: Vec<f64> = slices
            .windows(2)
            .map(|w| w[1].header.z - w[0].header.z)
            .collect();
        steps.sort_by(f64::total_cmp);
        let slice_spacing = median(&steps);
        let first = slices.first().map(|s| &s.header);
        let patient_id = first
            .map(|h| h.patient_id.clone())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| fallback_patient.to_string())
            .replace('/', "_");
        let slice_thickness = slices
            .iter()
            .find_map(|s| s.header.slice_thickness)
            .filter(|t| *t > 0.0)
            .unwrap_or(slice_spacing);
        let pixel_spacing = first.map_or(1.0, |h| h.pixel_spacing.0);
        let sop_index = slices
            .iter()
            .enumerate()
            .map(|(k, s)| (fnv1a64(s.header.sop_uid.as_bytes()), k))
            .collect();
        let series = Self {
            uid,
            patient_id,
            slices,
            slice_spacing,
            slice_thickness,
            pixel_spacing,
            rows,
            columns,
            sop_index,
        };
        (series, left_out)
    }

    /// The slice a contour lies on: the one with its SOP instance UID, else the nearest z within
    /// half a slice spacing (a quarter millimetre when the series has one slice).
    pub fn slice_of(&self, sop_uid: &str, z: f64) -> Option<usize> {
        if let Some(&k) = self.sop_index.get(&fnv1a64(sop_uid.as_bytes())) {
            return Some(k);
        }
        let nearest = self.slices.iter().enumerate().min_by(|a, b| {
            (a.1.header.z - z)
                .abs()
                .total_cmp(&(b.1.header.z - z).abs())
        })?;
        let tolerance = if self.slice_spacing > 0.0 {
            self.slice_spacing / 2.0
        } else {
            0.25
        };
        ((nearest.1.header.z - z).abs() <= tolerance).then_some(nearest.0)
    }
}

/// An InstanceNumber for messages.
fn instance_text(n: Option<i32>) -> String {
    n.map_or_else(|| "none".to_string(), |n| n.to_string())
}

/// The median of sorted values (the mean of the middle two for an even count); 0 when empty.
fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, z: f64, instance: i32, size: usize) -> SliceFile {
        SliceFile {
            path: PathBuf::from(name),
            shown: name.to_string(),
            header: DicomHeader {
                modality: "CT".into(),
                patient_id: "LIDC-IDRI-0001".into(),
                study_uid: "1.2".into(),
                series_uid: "1.2.3".into(),
                sop_uid: format!("1.2.3.{instance}"),
                instance_number: Some(instance),
                z,
                pixel_spacing: (0.7, 0.7),
                slice_thickness: Some(2.5),
                rows: size,
                columns: size,
            },
        }
    }

    #[test]
    fn slices_sort_by_z_and_a_repeated_z_keeps_the_lower_instance_number() {
        let files = vec![
            file("c", -10.0, 3, 512),
            file("a", -12.5, 9, 512),
            file("dup", -10.0, 2, 512),
            file("b", -7.5, 1, 512),
            file("small", -5.0, 4, 256),
        ];
        let (s, left) = Series::assemble("1.2.3".into(), "folder", files);
        let names: Vec<_> = s.slices.iter().map(|f| f.path.to_str().unwrap()).collect();
        assert_eq!(names, ["a", "dup", "b"]);
        let codes: Vec<_> = left
            .iter()
            .map(|l| (l.file.path.to_str().unwrap(), l.reason))
            .collect();
        assert_eq!(
            codes,
            [
                ("small", RejectReason::DicomSizeMismatch),
                ("c", RejectReason::DuplicateZ)
            ]
        );
        assert_eq!(s.slice_spacing, 2.5);
        assert_eq!(s.slice_thickness, 2.5);
        assert_eq!((s.rows, s.columns), (512, 512));
        assert_eq!(s.patient_id, "LIDC-IDRI-0001");
    }

    #[test]
    fn contours_find_their_slice_by_uid_then_by_nearest_z_within_half_a_step() {
        let files = vec![
            file("a", 0.0, 1, 8),
            file("b", 2.5, 2, 8),
            file("c", 5.0, 3, 8),
        ];
        let (s, _) = Series::assemble("1.2.3".into(), "folder", files);
        assert_eq!(s.slice_of("1.2.3.3", 99.0), Some(2));
        assert_eq!(s.slice_of("unknown", 2.4), Some(1));
        assert_eq!(s.slice_of("unknown", 3.75), Some(1));
        assert_eq!(s.slice_of("unknown", 6.3), None);
    }
}
