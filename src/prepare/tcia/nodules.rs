//! `nodules.parquet`: one row per nodule of a TCIA source, with its readers, extent, size and
//! each reader's ratings, so that "recall by malignancy or by size" is one polars join away.

use crate::error::Result;
use crate::prepare::tcia::crop::{nodule_extent, nodule_name};
use crate::prepare::tcia::plan::{Outline, SeriesPlan};
use crate::schema::Table;
use crate::table::write_table;
use arrow_array::builder::{Int32Builder, ListBuilder};
use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int32Array, StringArray};
use std::path::Path;
use std::sync::Arc;

/// One row of `nodules.parquet`.
#[derive(Debug, Clone, PartialEq)]
pub struct NoduleRow {
    pub nodule_id: String,
    pub patient_id: String,
    pub series_uid: String,
    pub nodule_index: i32,
    pub outlines: i32,
    pub readers: i32,
    pub reader_bits: i32,
    pub duplicate_reader: bool,
    pub k_first: i32,
    pub k_last: i32,
    pub z_first_mm: f64,
    pub z_last_mm: f64,
    pub centroid_row: f64,
    pub centroid_col: f64,
    pub volume_mm3: f64,
    pub diameter_mm: f64,
    /// Per outline: (reader, its nine ratings).
    pub ratings: Vec<(i32, [Option<i32>; 9])>,
}

/// The size band of a diameter: eval reports nodule recall per band.
pub fn size_band(diameter_mm: f64) -> &'static str {
    if diameter_mm < 6.0 {
        "<6mm"
    } else if diameter_mm <= 10.0 {
        "6-10mm"
    } else {
        ">10mm"
    }
}

/// pylidc's `Annotation.diameter` in pixels: the greatest distance between two points of one
/// contour, over the outline's contours (single-point contours skipped).
pub fn greatest_axial_diameter(o: &Outline) -> f64 {
    let mut best = 0i64;
    for contour in o.contours.iter().filter(|c| c.len() > 1) {
        for (i, a) in contour.iter().enumerate() {
            for b in &contour[i + 1..] {
                let d = i64::from(a.0 - b.0).pow(2) + i64::from(a.1 - b.1).pow(2);
                best = best.max(d);
            }
        }
    }
    (best as f64).sqrt()
}

/// The rows of every nodule of `plans`, in plan order.
pub fn rows(plans: &[SeriesPlan]) -> Vec<NoduleRow> {
    let mut rows = Vec::new();
    for plan in plans {
        let s = &plan.series;
        for (n, members) in plan.nodules.iter().enumerate() {
            let e = nodule_extent(plan, n);
            let outlines: Vec<&Outline> = members.iter().map(|&a| &plan.outlines[a]).collect();
            let reader_bits = outlines.iter().fold(0i32, |b, o| b | 1 << o.reader);
            let readers = reader_bits.count_ones() as i32;
            let diameter_px = outlines
                .iter()
                .map(|o| greatest_axial_diameter(o))
                .sum::<f64>()
                / outlines.len().max(1) as f64;
            rows.push(NoduleRow {
                nodule_id: nodule_name(plan, Some(n)),
                patient_id: s.patient_id.clone(),
                series_uid: s.uid.clone(),
                nodule_index: n as i32 + 1,
                outlines: outlines.len() as i32,
                readers,
                reader_bits,
                duplicate_reader: readers < outlines.len() as i32,
                k_first: e.k_first as i32,
                k_last: e.k_last as i32,
                z_first_mm: s.slices[e.k_first].header.z,
                z_last_mm: s.slices[e.k_last].header.z,
                centroid_row: e.centre.0,
                centroid_col: e.centre.1,
                volume_mm3: e.voxels as f64 * s.pixel_spacing.powi(2) * s.slice_spacing,
                diameter_mm: diameter_px * s.pixel_spacing,
                ratings: outlines
                    .iter()
                    .map(|o| (o.reader as i32, o.characteristics.values()))
                    .collect(),
            });
        }
    }
    rows
}

/// Writes `nodules.parquet` atomically; returns its size.
pub fn write_nodules(path: &Path, rows: &[NoduleRow]) -> Result<u64> {
    let strings = |f: fn(&NoduleRow) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let ints = |f: fn(&NoduleRow) -> i32| -> ArrayRef {
        Arc::new(Int32Array::from_iter_values(rows.iter().map(f)))
    };
    let floats = |f: fn(&NoduleRow) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(rows.iter().map(f)))
    };
    let per_outline = |f: &dyn Fn(&(i32, [Option<i32>; 9])) -> Option<i32>| -> ArrayRef {
        let mut b = ListBuilder::new(Int32Builder::new());
        for r in rows {
            for rating in &r.ratings {
                b.values().append_option(f(rating));
            }
            b.append(true);
        }
        Arc::new(b.finish())
    };
    let mut columns: Vec<ArrayRef> = vec![
        strings(|r| &r.nodule_id),
        strings(|r| &r.patient_id),
        strings(|r| &r.series_uid),
        ints(|r| r.nodule_index),
        ints(|r| r.outlines),
        ints(|r| r.readers),
        ints(|r| r.reader_bits),
        Arc::new(BooleanArray::from(
            rows.iter().map(|r| r.duplicate_reader).collect::<Vec<_>>(),
        )),
        ints(|r| r.k_first),
        ints(|r| r.k_last),
        ints(|r| r.k_last - r.k_first + 1),
        floats(|r| r.z_first_mm),
        floats(|r| r.z_last_mm),
        floats(|r| r.centroid_row),
        floats(|r| r.centroid_col),
        floats(|r| r.volume_mm3),
        floats(|r| r.diameter_mm),
        strings(|r| size_band(r.diameter_mm)),
        per_outline(&|(reader, _)| Some(*reader)),
    ];
    for i in 0..9 {
        columns.push(per_outline(&move |(_, v)| v[i]));
    }
    columns.push(Arc::new(Float64Array::from(
        rows.iter()
            .map(|r| {
                let given: Vec<f64> = r
                    .ratings
                    .iter()
                    .filter_map(|(_, v)| v[8])
                    .map(f64::from)
                    .collect();
                (!given.is_empty()).then(|| given.iter().sum::<f64>() / given.len() as f64)
            })
            .collect::<Vec<_>>(),
    )));
    write_table(path, Table::Nodules.spec(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_bands_follow_the_issue_boundaries() {
        assert_eq!(size_band(3.0), "<6mm");
        assert_eq!(size_band(6.0), "6-10mm");
        assert_eq!(size_band(10.0), "6-10mm");
        assert_eq!(size_band(10.5), ">10mm");
    }

    #[test]
    fn diameter_is_the_farthest_pair_within_one_contour() {
        let o = Outline {
            reader: 0,
            nodule_id: "n".into(),
            characteristics: Default::default(),
            mask: crate::prepare::tcia::outline::outline_mask(&[]),
            points: Vec::new(),
            // Two contours: a 3-4-5 triangle and a pair 4 apart; the point far away on another
            // contour does not count across contours.
            contours: vec![
                vec![(0, 0), (3, 0), (0, 4)],
                vec![(100, 100), (100, 104)],
                vec![(9, 9)],
            ],
        };
        assert_eq!(greatest_axial_diameter(&o), 5.0);
    }
}
