//! `nodules.parquet`: one row per nodule of a TCIA source, with its readers, extent, size and
//! each reader's ratings, so that "recall by malignancy or by size" is one polars join away.
//! Written by `prepare --source tcia`, read by `eval` for nodule recall by size.

use crate::error::Result;
use crate::schema::Table;
use crate::table::{column, read_table, write_table};
use arrow_array::builder::{Int32Builder, ListBuilder};
use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int32Array, StringArray};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// One outline's reader and nine ratings, in `Characteristics::NAMES` order.
pub type Rating = (i32, [Option<i32>; 9]);

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
    pub ratings: Vec<Rating>,
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

/// The size bands in order.
pub const SIZE_BANDS: [&str; 3] = ["<6mm", "6-10mm", ">10mm"];

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
    let per_outline = |f: &dyn Fn(&Rating) -> Option<i32>| -> ArrayRef {
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

/// (patient_id, nodule_id) → size band of every row of `nodules.parquet` at `path`.
pub fn read_size_bands(path: &Path) -> Result<BTreeMap<(String, String), String>> {
    let mut out = BTreeMap::new();
    for b in read_table(path, &Table::Nodules.spec())? {
        let patient = column::<StringArray>(&b, "patient_id", path)?;
        let nodule = column::<StringArray>(&b, "nodule_id", path)?;
        let band = column::<StringArray>(&b, "size_band", path)?;
        for r in 0..b.num_rows() {
            out.insert(
                (patient.value(r).to_string(), nodule.value(r).to_string()),
                band.value(r).to_string(),
            );
        }
    }
    Ok(out)
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
}
