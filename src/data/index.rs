//! The slice index a training or validation pass reads: which shard row holds each slice, and
//! whose slice it is.

use crate::error::Result;
use crate::schema::Table;
use crate::table::{column, read_table, write_table};
use arrow_array::{ArrayRef, Int64Array, StringArray};
use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;

/// One row of `train.parquet` / `val.parquet`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// Slice id as in the manifest.
    pub slice_id: String,
    /// Shard file name under `shards/`.
    pub shard: String,
    /// Row within the shard.
    pub row: i64,
    /// Patient folder name.
    pub patient_id: String,
}

/// An ordered list of slices to stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SliceIndex {
    entries: Vec<IndexEntry>,
}

impl SliceIndex {
    /// Reads a `slice_index` table (`train.parquet` or `val.parquet`), keeping its row order.
    pub fn read(path: &Path) -> Result<Self> {
        let batches = read_table(path, &Table::SliceIndex.spec())?;
        let mut entries = Vec::new();
        for batch in &batches {
            let slice_id = column::<StringArray>(batch, "slice_id", path)?;
            let shard = column::<StringArray>(batch, "shard", path)?;
            let row = column::<Int64Array>(batch, "row", path)?;
            let patient_id = column::<StringArray>(batch, "patient_id", path)?;
            for i in 0..batch.num_rows() {
                entries.push(IndexEntry {
                    slice_id: slice_id.value(i).to_string(),
                    shard: shard.value(i).to_string(),
                    row: row.value(i),
                    patient_id: patient_id.value(i).to_string(),
                });
            }
        }
        Ok(Self { entries })
    }

    /// An index built by the caller (for example the slices of one cross-validation fold).
    pub fn from_entries(entries: Vec<IndexEntry>) -> Self {
        Self { entries }
    }

    /// Keeps only the slices of `patients`, in their order.
    pub fn only_patients(mut self, patients: &HashSet<String>) -> Self {
        self.entries.retain(|e| patients.contains(&e.patient_id));
        self
    }

    /// The entries, in index order.
    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// Gives the entries back.
    pub fn into_entries(self) -> Vec<IndexEntry> {
        self.entries
    }

    /// Number of slices.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no slices.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The distinct patients, sorted.
    pub fn patients(&self) -> BTreeSet<&str> {
        self.entries.iter().map(|e| e.patient_id.as_str()).collect()
    }
}

/// Writes entries as a `slice_index` table (`train.parquet` / `val.parquet`), atomically: the
/// writer beside the reader of the same contract.
pub fn write_index(path: &Path, entries: &[&IndexEntry]) -> Result<u64> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            entries.iter().map(|e| &e.slice_id),
        )),
        Arc::new(StringArray::from_iter_values(
            entries.iter().map(|e| &e.shard),
        )),
        Arc::new(Int64Array::from_iter_values(entries.iter().map(|e| e.row))),
        Arc::new(StringArray::from_iter_values(
            entries.iter().map(|e| &e.patient_id),
        )),
    ];
    write_table(path, Table::SliceIndex.spec(), columns)
}
