//! `dicom_masks.parquet`: for DICOM input, which mask PNG belongs to which slice of which series,
//! in series and z order, so that the masks read back as a mask series.

use crate::error::Result;
use crate::pixels::dicom::DicomHeader;
use crate::schema::Table;
use crate::table::write_table;
use arrow_array::{ArrayRef, Float64Array, Int32Array, Int64Array, StringArray};
use std::path::Path;
use std::sync::Arc;

/// The table's file name under `--out`.
pub const DICOM_MASKS: &str = "dicom_masks.parquet";

/// One DICOM slice's mask.
#[derive(Debug, Clone, PartialEq)]
pub struct DicomMask {
    /// The input file as listed.
    pub input: String,
    /// Its header.
    pub header: DicomHeader,
    /// The mask file, relative to `--out`.
    pub mask_file: String,
    /// Pixels above the threshold.
    pub mask_pixels: u64,
}

/// Writes `rows`, sorted by series UID and z, to `out/dicom_masks.parquet`; returns its path.
pub fn write_dicom_masks(out: &Path, mut rows: Vec<DicomMask>) -> Result<std::path::PathBuf> {
    rows.sort_by(|a, b| {
        a.header
            .series_uid
            .cmp(&b.header.series_uid)
            .then(a.header.z.total_cmp(&b.header.z))
    });
    let strings = |f: fn(&DicomMask) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let columns: Vec<ArrayRef> = vec![
        strings(|r| &r.input),
        strings(|r| &r.header.series_uid),
        strings(|r| &r.header.sop_uid),
        Arc::new(Int32Array::from(
            rows.iter()
                .map(|r| r.header.instance_number)
                .collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.header.z),
        )),
        strings(|r| &r.mask_file),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.mask_pixels as i64),
        )),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.header.rows as i32),
        )),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.header.columns as i32),
        )),
    ];
    let path = out.join(DICOM_MASKS);
    write_table(&path, Table::DicomMasks.spec(), columns)?;
    Ok(path)
}
