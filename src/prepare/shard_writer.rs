//! Writes slice records into size-bounded Parquet shards with small row groups, so the trainer can
//! stream one row group at a time.

use super::slice::SliceRecord;
use crate::error::Result;
use crate::layout::DataDir;
use crate::schema;
use crate::table::TableWriter;
use arrow_array::builder::BinaryBuilder;
use arrow_array::{ArrayRef, BinaryArray, Int32Array, Int64Array, StringArray};
use std::sync::Arc;

/// zstd level of the shards: level 1 compresses pixel data within a few per cent of level 3 at
/// about twice the speed, and compression is prepare's largest cost (see BENCHMARKS.md).
pub const SHARD_ZSTD_LEVEL: i32 = 1;

/// Where a record was written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardPosition {
    /// Shard file name.
    pub shard: String,
    /// Row within the shard.
    pub row: i64,
}

/// Buffers records into row groups of `row_group_rows` and rolls to a new shard every
/// `shard_rows` rows. Each shard is written under a temporary name and renamed when full.
pub struct ShardWriter {
    data: DataDir,
    shard_rows: usize,
    row_group_rows: usize,
    current: Option<(String, TableWriter)>,
    pending: Vec<SliceRecord>,
    shards: usize,
    bytes: u64,
}

impl ShardWriter {
    /// A writer into `data`'s `shards/` folder, which must exist.
    pub fn new(data: DataDir, shard_rows: usize, row_group_rows: usize) -> Self {
        Self {
            data,
            shard_rows: shard_rows.max(1),
            row_group_rows: row_group_rows.clamp(1, shard_rows.max(1)),
            current: None,
            pending: Vec::new(),
            shards: 0,
            bytes: 0,
        }
    }

    /// Adds one record and says where it will live.
    pub fn push(&mut self, record: SliceRecord) -> Result<ShardPosition> {
        let (name, written) = if let Some((n, w)) = &self.current {
            (n.clone(), w.rows())
        } else {
            let name = DataDir::shard_name(self.shards);
            let path = self.data.shard_path(&name);
            let w = TableWriter::create_with_level(
                &path,
                schema::spec("slices"),
                self.row_group_rows,
                SHARD_ZSTD_LEVEL,
            )?;
            self.current = Some((name.clone(), w));
            (name, 0)
        };
        let row = (written + self.pending.len()) as i64;
        self.pending.push(record);
        let full_shard = written + self.pending.len() >= self.shard_rows;
        if self.pending.len() >= self.row_group_rows || full_shard {
            self.flush_pending()?;
        }
        if let Some((_, w)) = &self.current {
            if w.rows() >= self.shard_rows {
                self.close_shard()?;
            }
        }
        Ok(ShardPosition { shard: name, row })
    }

    fn flush_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(&mut self.pending);
        if let Some((_, w)) = &mut self.current {
            w.write_columns(columns(&records))?;
            w.flush_row_group()?;
        }
        Ok(())
    }

    fn close_shard(&mut self) -> Result<()> {
        self.flush_pending()?;
        if let Some((_, w)) = self.current.take() {
            self.bytes += w.finish()?;
            self.shards += 1;
        }
        Ok(())
    }

    /// Where the `index`-th record pushed (0-based) lives: shards hold exactly `shard_rows` rows,
    /// so positions can be known before the record is written.
    pub fn position_of(index: usize, shard_rows: usize) -> ShardPosition {
        let shard_rows = shard_rows.max(1);
        ShardPosition {
            shard: DataDir::shard_name(index / shard_rows),
            row: (index % shard_rows) as i64,
        }
    }

    /// Finishes the last shard. Returns (shards written, bytes on disk).
    pub fn finish(mut self) -> Result<(usize, u64)> {
        self.close_shard()?;
        Ok((self.shards, self.bytes))
    }
}

/// The `slices` columns for a group of records, in contract order.
fn columns(records: &[SliceRecord]) -> Vec<ArrayRef> {
    let strings = |f: fn(&SliceRecord) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(records.iter().map(f)))
    };
    let ints = |f: fn(&SliceRecord) -> i32| -> ArrayRef {
        Arc::new(Int32Array::from_iter_values(records.iter().map(f)))
    };
    // One contiguous value buffer for the image column: no per-row byte vectors.
    let total: usize = records.iter().map(|r| r.image.len() * 4).sum();
    let mut images = BinaryBuilder::with_capacity(records.len(), total);
    let mut row = Vec::new();
    for r in records {
        row.clear();
        row.extend(r.image.iter().flat_map(|v| v.to_le_bytes()));
        images.append_value(&row);
    }
    vec![
        strings(|r| &r.slice_id),
        strings(|r| &r.patient_id),
        strings(|r| &r.nodule_id),
        strings(|r| &r.slice_name),
        Arc::new(Int32Array::from(
            records.iter().map(|r| r.slice_index).collect::<Vec<_>>(),
        )),
        ints(|r| r.height as i32),
        ints(|r| r.width as i32),
        ints(|r| i32::from(r.source_bits)),
        Arc::new(images.finish()),
        Arc::new(BinaryArray::from_iter_values(
            records.iter().map(|r| &r.mask),
        )),
        Arc::new(BinaryArray::from_iter_values(
            records.iter().map(|r| &r.rater_bits),
        )),
        ints(|r| i32::from(r.raters_present)),
        Arc::new(Int64Array::from_iter_values(
            records.iter().map(|r| r.mask_pixels as i64),
        )),
    ]
}
