//! Writes slice records into size-bounded Parquet shards with small row groups, so the trainer can
//! stream one row group at a time.

use crate::data::shards::SliceRecord;
use crate::error::Result;
use crate::layout::DataDir;
use crate::schema::Table;
use crate::table::{TableWriter, WriteOptions};
use arrow_array::builder::make_view;
use arrow_array::{ArrayRef, BinaryViewArray, Int32Array, Int64Array, StringArray};
use arrow_buffer::{Buffer, ScalarBuffer};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// zstd level of the shards' compressed columns: level 1 compresses pixel data within a few per
/// cent of level 3 at about twice the speed (see BENCHMARKS.md).
pub const SHARD_ZSTD_LEVEL: i32 = 1;

/// How the `image` column (f32 pixels) is stored. Every other column is always zstd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ImageCompression {
    /// Plain bytes. f32 pixels from 8-bit sources shrink only ~3.2x under zstd level 1, which
    /// runs at ~300 MB/s on them: compressing costs more CPU than reading, decoding and fusing
    /// the PNGs together, and decompressing costs the trainer again every epoch. Plain shards
    /// are ~3x larger (~64 KiB per 128x128 slice).
    #[default]
    None,
    /// zstd level 1, like the other columns: ~3x smaller shards, ~2.5x slower `prepare`.
    Zstd,
}

impl ImageCompression {
    /// Data directories written before this setting existed compressed the image column.
    pub fn before_the_setting() -> Self {
        Self::Zstd
    }
}

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
    image_compression: ImageCompression,
    current: Option<(String, TableWriter)>,
    pending: Vec<SliceRecord>,
    shards: usize,
    bytes: u64,
}

impl ShardWriter {
    /// A writer into `data`'s `shards/` folder, which must exist.
    pub fn new(
        data: DataDir,
        shard_rows: usize,
        row_group_rows: usize,
        image_compression: ImageCompression,
    ) -> Self {
        Self {
            data,
            shard_rows: shard_rows.max(1),
            row_group_rows: row_group_rows.clamp(1, shard_rows.max(1)),
            image_compression,
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
            let plain: &[&str] = match self.image_compression {
                ImageCompression::None => &["image"],
                ImageCompression::Zstd => &[],
            };
            let w = TableWriter::create_with(
                &path,
                Table::Slices.spec(),
                &WriteOptions {
                    row_group_rows: self.row_group_rows,
                    zstd_level: SHARD_ZSTD_LEVEL,
                    uncompressed_columns: plain,
                    binary_as_views: true,
                },
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
            w.write_columns(columns(records))?;
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

/// The `slices` columns for a group of records, in contract order. The pixel columns are
/// `BinaryView` arrays over the records' own buffers: no pixel is copied before Parquet encodes
/// it.
fn columns(records: Vec<SliceRecord>) -> Vec<ArrayRef> {
    let strings = |f: fn(&SliceRecord) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(records.iter().map(f)))
    };
    let ints = |f: fn(&SliceRecord) -> i32| -> ArrayRef {
        Arc::new(Int32Array::from_iter_values(records.iter().map(f)))
    };
    let mut columns = vec![
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
    ];
    let tail: Vec<ArrayRef> = vec![
        ints(|r| i32::from(r.raters_present)),
        Arc::new(Int64Array::from_iter_values(
            records.iter().map(|r| r.mask_pixels as i64),
        )),
    ];
    let mut images = BinaryViews::with_capacity(records.len());
    let mut masks = BinaryViews::with_capacity(records.len());
    let mut rater_bits = BinaryViews::with_capacity(records.len());
    for r in records {
        images.push(image_buffer(r.image));
        masks.push(Buffer::from_vec(r.mask));
        rater_bits.push(Buffer::from_vec(r.rater_bits));
    }
    columns.extend([images.finish(), masks.finish(), rater_bits.finish()]);
    columns.extend(tail);
    columns
}

/// The shards' little-endian f32 bytes of an image, without a copy on little-endian machines.
fn image_buffer(image: Vec<f32>) -> Buffer {
    if cfg!(target_endian = "little") {
        Buffer::from_vec(image)
    } else {
        Buffer::from_vec(
            image
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        )
    }
}

/// A `BinaryViewArray` whose values each keep their own buffer.
struct BinaryViews {
    views: Vec<u128>,
    buffers: Vec<Buffer>,
}

impl BinaryViews {
    fn with_capacity(rows: usize) -> Self {
        Self {
            views: Vec::with_capacity(rows),
            buffers: Vec::with_capacity(rows),
        }
    }

    /// Appends one value that is its own buffer. Values of up to 12 bytes are stored inline in
    /// their view, as the format requires.
    fn push(&mut self, value: Buffer) {
        if value.len() <= 12 {
            self.views.push(make_view(value.as_slice(), 0, 0));
            return;
        }
        let index = self.buffers.len() as u32;
        self.views.push(make_view(value.as_slice(), index, 0));
        self.buffers.push(value);
    }

    fn finish(self) -> ArrayRef {
        Arc::new(BinaryViewArray::new(
            ScalarBuffer::from(self.views),
            self.buffers,
            None,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{column, read_table};
    use arrow_array::BinaryArray;

    /// A record of `h`x`w` pixels whose bytes all differ from row to row.
    fn record(i: usize, h: usize, w: usize) -> SliceRecord {
        let mut r = crate::data::test_shards::record(i, 0);
        let n = h * w;
        (r.height, r.width) = (h, w);
        r.image = (0..n).map(|p| (i * 1000 + p) as f32 / 1e5).collect();
        r.rater_bits = (0..n).map(|p| ((i + p) % 16) as u8).collect();
        r.mask = r.rater_bits.iter().map(|&b| u8::from(b != 0)).collect();
        r.mask_pixels = r.mask.iter().map(|&m| u64::from(m)).sum();
        r
    }

    #[test]
    fn pixel_columns_read_back_exactly_for_tiny_and_large_slices() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        std::fs::create_dir_all(data.shards_dir()).unwrap();
        // 1x1 and 2x3 masks (1 and 6 bytes) and a 1x1 image (4 bytes) fit inside their views;
        // the rest live in their own buffers.
        let sizes = [(1, 1), (2, 3), (3, 4), (7, 5), (128, 128), (1, 1)];
        let records: Vec<SliceRecord> = sizes
            .iter()
            .enumerate()
            .map(|(i, &(h, w))| record(i, h, w))
            .collect();
        let mut writer = ShardWriter::new(data.clone(), 100, 4, ImageCompression::None);
        for r in records.clone() {
            writer.push(r).unwrap();
        }
        assert_eq!(writer.finish().unwrap().0, 1);
        let path = data.shard_path(&DataDir::shard_name(0));
        let batches = read_table(&path, &Table::Slices.spec()).unwrap();
        let mut row = 0;
        for batch in &batches {
            let image = column::<BinaryArray>(batch, "image", &path).unwrap();
            let mask = column::<BinaryArray>(batch, "mask", &path).unwrap();
            let bits = column::<BinaryArray>(batch, "rater_bits", &path).unwrap();
            for k in 0..batch.num_rows() {
                let want = &records[row];
                let le: Vec<u8> = want.image.iter().flat_map(|v| v.to_le_bytes()).collect();
                assert_eq!(image.value(k), &le[..], "row {row}");
                assert_eq!(mask.value(k), &want.mask[..], "row {row}");
                assert_eq!(bits.value(k), &want.rater_bits[..], "row {row}");
                row += 1;
            }
        }
        assert_eq!(row, records.len());
    }
}
