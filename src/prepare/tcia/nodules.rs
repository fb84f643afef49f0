//! The rows of `nodules.parquet` from the series plans: each nodule's readers, extent, size and
//! ratings.

use crate::data::nodule_table::NoduleRow;
use crate::prepare::tcia::crop::{nodule_extent, nodule_name};
use crate::prepare::tcia::plan::{Outline, SeriesPlan};

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
            let Some(e) = nodule_extent(plan, n) else {
                continue;
            };
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

#[cfg(test)]
mod tests {
    use super::*;

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
