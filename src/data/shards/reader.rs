//! Reads selected rows of one shard row group into [`SliceSample`]s, projecting only the columns
//! training needs and checking each row against the index that pointed at it.

use crate::data::fusion::RaterFusion;
use crate::data::index::IndexEntry;
use crate::data::SliceSample;
use crate::error::{Error, IoContext, Result};
use crate::layout::DataDir;
use crate::schema::Table;
use crate::table::column;
use arrow_array::{Array, BinaryArray, Int32Array, RecordBatch, StringArray};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
    RowSelector,
};
use parquet::arrow::ProjectionMask;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// A shard's footer, checked against the `slices` contract, with its row-group boundaries.
struct ShardMeta {
    path: PathBuf,
    meta: ArrowReaderMetadata,
    /// `starts[g]` is the first row of group g; the last element is the row count.
    starts: Vec<i64>,
}

/// Opens shards on demand and caches their footers (a few kilobytes each).
pub(crate) struct ShardReader {
    data: DataDir,
    fusion: RaterFusion,
    shards: HashMap<String, ShardMeta>,
}

/// Where an index entry lives: the row group and the row within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Location {
    pub group: usize,
    pub row_in_group: usize,
}

impl ShardReader {
    pub(crate) fn new(data: DataDir, fusion: RaterFusion) -> Self {
        Self {
            data,
            fusion,
            shards: HashMap::new(),
        }
    }

    /// The path of shard `name`.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.data.shard_path(name)
    }

    fn meta(&mut self, shard: &str) -> Result<&ShardMeta> {
        if !self.shards.contains_key(shard) {
            let loaded = load_meta(&self.path(shard))?;
            self.shards.insert(shard.to_string(), loaded);
        }
        self.shards
            .get(shard)
            .ok_or_else(|| Error::input(self.data.shard_path(shard), "shard footer not cached"))
    }

    /// The row group and in-group row of `row` in `shard`.
    pub(crate) fn locate(&mut self, shard: &str, row: i64) -> Result<Location> {
        let m = self.meta(shard)?;
        let total = m.starts.last().copied().unwrap_or(0);
        if row < 0 || row >= total {
            return Err(Error::input(
                &m.path,
                format!("row {row} is outside the shard's {total} rows; the split index is stale (rerun `split`)"),
            ));
        }
        // The group whose start is the last one <= row.
        let group = m.starts.partition_point(|&s| s <= row) - 1;
        Ok(Location {
            group,
            row_in_group: (row - m.starts[group]) as usize,
        })
    }

    /// Reads rows `rows` (in-group row numbers, each with its index entry) of group `group` of
    /// `shard`, returning samples in the order asked for. Only the selected rows are decoded.
    pub(crate) fn read(
        &mut self,
        shard: &str,
        group: usize,
        rows: &[(usize, &IndexEntry)],
    ) -> Result<Vec<SliceSample>> {
        let fusion = self.fusion;
        let m = self.meta(shard)?;
        let path = m.path.clone();
        let group_start = m.starts[group];
        let group_rows = (m.starts[group + 1] - group_start) as usize;
        let mut wanted: Vec<usize> = rows.iter().map(|(r, _)| *r).collect();
        wanted.sort_unstable();
        wanted.dedup();

        let names: Vec<&str> = if fusion.is_union() {
            vec!["slice_id", "patient_id", "height", "width", "image", "mask"]
        } else {
            vec![
                "slice_id",
                "patient_id",
                "height",
                "width",
                "image",
                "rater_bits",
                "raters_present",
            ]
        };
        let projection = ProjectionMask::columns(m.meta.parquet_schema(), names);
        let file = File::open(&path).at(&path)?;
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, m.meta.clone())
            .with_row_groups(vec![group])
            .with_projection(projection)
            .with_row_selection(selection(&wanted, group_rows))
            .with_batch_size(wanted.len().max(1))
            .build()
            .map_err(|e| Error::parquet(&path, e))?;

        let mut decoded: Vec<Option<RowData>> = Vec::with_capacity(wanted.len());
        for batch in reader {
            let batch = batch.map_err(|e| Error::arrow(&path, e))?;
            decode_batch(&batch, &path, fusion, &mut decoded)?;
        }
        if decoded.len() != wanted.len() {
            return Err(Error::input(
                &path,
                format!(
                    "row group {group}: asked for {} rows, read {}",
                    wanted.len(),
                    decoded.len()
                ),
            ));
        }

        let mut uses = vec![0usize; wanted.len()];
        let positions: Vec<usize> = rows
            .iter()
            .map(|(r, _)| wanted.binary_search(r).unwrap_or(0))
            .collect();
        for &p in &positions {
            uses[p] += 1;
        }
        let mut out = Vec::with_capacity(rows.len());
        for ((row, entry), &p) in rows.iter().zip(&positions) {
            uses[p] -= 1;
            let data = if uses[p] == 0 {
                decoded[p].take()
            } else {
                decoded[p].clone()
            };
            let data = data.ok_or_else(|| Error::input(&path, "row decoded twice"))?;
            out.push(data.check(entry, group_start + *row as i64, &path)?);
        }
        Ok(out)
    }
}

fn load_meta(path: &Path) -> Result<ShardMeta> {
    let file = File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::input(
                path,
                "shard not found; the split index is stale (rerun `split`)",
            )
        } else {
            Error::io(path, e)
        }
    })?;
    let meta =
        ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(|e| Error::Schema {
            path: path.to_path_buf(),
            table: "slices".into(),
            detail: format!("not a readable Parquet file ({e})"),
        })?;
    Table::Slices.spec().check(path, meta.schema())?;
    let mut starts = vec![0i64];
    for g in meta.metadata().row_groups() {
        let last = starts.last().copied().unwrap_or(0);
        starts.push(last + g.num_rows());
    }
    Ok(ShardMeta {
        path: path.to_path_buf(),
        meta,
        starts,
    })
}

/// A selection of the sorted, distinct rows `wanted` out of `total` rows.
fn selection(wanted: &[usize], total: usize) -> RowSelection {
    let mut selectors = Vec::new();
    let mut next = 0;
    for &r in wanted {
        if r > next {
            selectors.push(RowSelector::skip(r - next));
        }
        match selectors.last_mut() {
            Some(last) if !last.skip && r == next => last.row_count += 1,
            _ => selectors.push(RowSelector::select(1)),
        }
        next = r + 1;
    }
    if total > next {
        selectors.push(RowSelector::skip(total - next));
    }
    RowSelection::from(selectors)
}

/// One decoded row before it is checked against its index entry.
#[derive(Clone)]
struct RowData {
    slice_id: String,
    patient_id: String,
    height: usize,
    width: usize,
    image: Vec<f32>,
    mask: Vec<u8>,
}

impl RowData {
    fn check(self, entry: &IndexEntry, row: i64, path: &Path) -> Result<SliceSample> {
        if self.slice_id != entry.slice_id || self.patient_id != entry.patient_id {
            return Err(Error::input(
                path,
                format!(
                    "row {row} holds slice `{}` of patient `{}` but the index expects `{}` of `{}`; \
                     the split index is stale (rerun `split`)",
                    self.slice_id, self.patient_id, entry.slice_id, entry.patient_id
                ),
            ));
        }
        Ok(SliceSample {
            slice_id: self.slice_id,
            patient_id: self.patient_id,
            height: self.height,
            width: self.width,
            image: self.image,
            mask: self.mask,
        })
    }
}

fn decode_batch(
    batch: &RecordBatch,
    path: &Path,
    fusion: RaterFusion,
    out: &mut Vec<Option<RowData>>,
) -> Result<()> {
    let slice_id = column::<StringArray>(batch, "slice_id", path)?;
    let patient_id = column::<StringArray>(batch, "patient_id", path)?;
    let height = column::<Int32Array>(batch, "height", path)?;
    let width = column::<Int32Array>(batch, "width", path)?;
    let image = column::<BinaryArray>(batch, "image", path)?;
    let (mask, rater_bits, present) = if fusion.is_union() {
        (
            Some(column::<BinaryArray>(batch, "mask", path)?),
            None,
            None,
        )
    } else {
        (
            None,
            Some(column::<BinaryArray>(batch, "rater_bits", path)?),
            Some(column::<Int32Array>(batch, "raters_present", path)?),
        )
    };
    for i in 0..batch.num_rows() {
        let sid = slice_id.value(i);
        let bad = |what: String| Error::input(path, format!("slice `{sid}`: {what}"));
        let (h, w) = (height.value(i), width.value(i));
        if h <= 0 || w <= 0 || height.is_null(i) || width.is_null(i) {
            return Err(bad(format!("invalid size {h}x{w}")));
        }
        let (h, w) = (h as usize, w as usize);
        let pixels = h * w;
        let bytes = image.value(i);
        if bytes.len() != pixels * 4 {
            return Err(bad(format!(
                "image has {} bytes, expected {} for {h}x{w} f32",
                bytes.len(),
                pixels * 4
            )));
        }
        let img: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mut fused = Vec::with_capacity(pixels);
        let (plane, name) = match (mask, rater_bits, present) {
            (Some(m), _, _) => {
                fused.extend(m.value(i).iter().map(|&v| u8::from(v != 0)));
                (m.value(i), "mask")
            }
            (None, Some(bits), Some(present)) => {
                let rp = (present.value(i) & 0xff) as u8;
                fusion.fuse(bits.value(i), rp, &mut fused);
                (bits.value(i), "rater_bits")
            }
            _ => return Err(bad("mask columns missing".into())),
        };
        if plane.len() != pixels {
            return Err(bad(format!(
                "{name} has {} bytes, expected {pixels} for {h}x{w}",
                plane.len()
            )));
        }
        out.push(Some(RowData {
            slice_id: sid.to_string(),
            patient_id: patient_id.value(i).to_string(),
            height: h,
            width: w,
            image: img,
            mask: fused,
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_skips_gaps_and_merges_runs() {
        let s: Vec<RowSelector> = selection(&[0, 1, 2, 5, 7], 10).into();
        assert_eq!(
            s,
            vec![
                RowSelector::select(3),
                RowSelector::skip(2),
                RowSelector::select(1),
                RowSelector::skip(1),
                RowSelector::select(1),
                RowSelector::skip(2),
            ]
        );
        let s: Vec<RowSelector> = selection(&[3], 4).into();
        assert_eq!(s, vec![RowSelector::skip(3), RowSelector::select(1)]);
    }
}
