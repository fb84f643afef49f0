//! The manifest: every kept slice's metadata and shard position, without pixels.

use crate::data::index::IndexEntry;
use crate::data::shards::writer::ShardPosition;
use crate::data::shards::{ScanPlace, SliceRecord};
use crate::error::Result;
use crate::schema::Table;
use crate::table::{column, read_table, write_table};
use arrow_array::{ArrayRef, Float64Array, Int32Array, Int64Array, StringArray};
use std::path::Path;
use std::sync::Arc;

/// One row of `manifest.parquet`.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestRow {
    /// `patient/nodule/file-stem`.
    pub slice_id: String,
    /// Patient folder name.
    pub patient_id: String,
    /// Nodule folder name.
    pub nodule_id: String,
    /// Image file name.
    pub slice_name: String,
    /// Number in the file stem.
    pub slice_index: Option<i32>,
    /// Native height.
    pub height: i32,
    /// Native width.
    pub width: i32,
    /// 8 or 16.
    pub source_bits: i32,
    /// Raters with a usable mask.
    pub raters_present: i32,
    /// Union-mask pixels.
    pub mask_pixels: i64,
    /// Where the pixels are.
    pub position: ShardPosition,
    /// Where the slice lies in its CT series (TCIA source only).
    pub scan: Option<ScanPlace>,
}

impl ManifestRow {
    /// The manifest row for a record written at `position`.
    pub fn new(r: &SliceRecord, position: ShardPosition) -> Self {
        Self {
            slice_id: r.slice_id.clone(),
            patient_id: r.patient_id.clone(),
            nodule_id: r.nodule_id.clone(),
            slice_name: r.slice_name.clone(),
            slice_index: r.slice_index,
            height: r.height as i32,
            width: r.width as i32,
            source_bits: i32::from(r.source_bits),
            raters_present: i32::from(r.raters_present),
            mask_pixels: r.mask_pixels as i64,
            position,
            scan: r.scan.clone(),
        }
    }
}

/// Writes `manifest.parquet` atomically.
pub fn write_manifest(path: &Path, rows: &[ManifestRow]) -> Result<u64> {
    let strings = |f: fn(&ManifestRow) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let scan_floats = |f: fn(&ScanPlace) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from(
            rows.iter()
                .map(|r| r.scan.as_ref().map(f))
                .collect::<Vec<_>>(),
        ))
    };
    let ints = |f: fn(&ManifestRow) -> i32| -> ArrayRef {
        Arc::new(Int32Array::from_iter_values(rows.iter().map(f)))
    };
    let columns: Vec<ArrayRef> = vec![
        strings(|r| &r.slice_id),
        strings(|r| &r.patient_id),
        strings(|r| &r.nodule_id),
        strings(|r| &r.slice_name),
        Arc::new(Int32Array::from(
            rows.iter().map(|r| r.slice_index).collect::<Vec<_>>(),
        )),
        ints(|r| r.height),
        ints(|r| r.width),
        ints(|r| r.source_bits),
        ints(|r| r.raters_present),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.mask_pixels),
        )),
        strings(|r| &r.position.shard),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.position.row),
        )),
        Arc::new(StringArray::from(
            rows.iter()
                .map(|r| r.scan.as_ref().map(|s| s.series_uid.as_str()))
                .collect::<Vec<_>>(),
        )),
        scan_floats(|s| s.z),
        scan_floats(|s| s.pixel_spacing),
        scan_floats(|s| s.slice_spacing),
    ];
    write_table(path, Table::Manifest.spec(), columns)
}

/// One manifest row as the split reads it: the index entry it becomes, plus its mask pixels.
#[derive(Debug, Clone)]
pub struct IndexRow {
    /// Where the slice is and whose it is.
    pub entry: IndexEntry,
    /// Union-mask pixels of the slice.
    pub mask_pixels: i64,
}

impl std::ops::Deref for IndexRow {
    type Target = IndexEntry;

    fn deref(&self) -> &IndexEntry {
        &self.entry
    }
}

/// Reads `manifest.parquet` as index rows, in manifest order, checking its contract.
pub fn read_index_rows(path: &Path) -> Result<Vec<IndexRow>> {
    let mut rows = Vec::new();
    for batch in read_table(path, &Table::Manifest.spec())? {
        let ids = column::<StringArray>(&batch, "slice_id", path)?;
        let shards = column::<StringArray>(&batch, "shard", path)?;
        let rws = column::<Int64Array>(&batch, "row", path)?;
        let patients = column::<StringArray>(&batch, "patient_id", path)?;
        let pixels = column::<Int64Array>(&batch, "mask_pixels", path)?;
        for i in 0..batch.num_rows() {
            rows.push(IndexRow {
                entry: IndexEntry {
                    slice_id: ids.value(i).to_string(),
                    shard: shards.value(i).to_string(),
                    row: rws.value(i),
                    patient_id: patients.value(i).to_string(),
                },
                mask_pixels: pixels.value(i),
            });
        }
    }
    Ok(rows)
}
