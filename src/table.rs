//! Reading and writing Parquet tables against their contracts, always atomically.

use crate::error::{Error, IoContext, Result};
use crate::layout::temporary_name;
use crate::schema::TableSpec;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How a table is written.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions<'a> {
    /// Rows per row group.
    pub row_group_rows: usize,
    /// zstd level of the compressed columns.
    pub zstd_level: i32,
    /// Columns stored without compression.
    pub uncompressed_columns: &'a [&'a str],
    /// Binary columns are handed over as `BinaryView` arrays, whose rows can each keep their own
    /// buffer (no copy into one contiguous array). The file then records no Arrow schema, so
    /// every reader infers the contract's plain `Binary` from the Parquet types.
    pub binary_as_views: bool,
}

/// Writer properties shared by every table: zstd, statistics on. Binary (pixel) columns skip
/// dictionary encoding and statistics: every value is unique and min/max of pixel blobs helps no
/// reader.
pub fn writer_properties(spec: &TableSpec, options: &WriteOptions) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(options.zstd_level).unwrap_or_default(),
        ))
        .set_max_row_group_row_count(Some(options.row_group_rows.max(1)))
        .set_created_by(format!("lungseg {}", env!("CARGO_PKG_VERSION")));
    for c in spec.columns.iter().filter(|c| c.data_type == "Binary") {
        let path = ColumnPath::from(c.name.as_str());
        b = b
            .set_column_dictionary_enabled(path.clone(), false)
            .set_column_statistics_enabled(path, EnabledStatistics::None);
    }
    for name in options.uncompressed_columns {
        b = b.set_column_compression(ColumnPath::from(*name), Compression::UNCOMPRESSED);
    }
    b.build()
}

/// A Parquet table being written under a temporary name; [`TableWriter::finish`] renames it
/// into place. Dropping an unfinished writer (after a failed write: a full disk) removes the
/// temporary file, so nothing half-written is left behind.
pub struct TableWriter {
    path: PathBuf,
    tmp: PathBuf,
    /// The Arrow schema of the batches handed to `inner`.
    batch_schema: SchemaRef,
    /// `None` once finished.
    inner: Option<ArrowWriter<File>>,
    rows: usize,
}

impl Drop for TableWriter {
    fn drop(&mut self) {
        if self.inner.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl TableWriter {
    /// Starts writing `path` with the contract `spec` (zstd level 3).
    pub fn create(path: &Path, spec: TableSpec, row_group_rows: usize) -> Result<Self> {
        let options = WriteOptions {
            row_group_rows,
            zstd_level: 3,
            uncompressed_columns: &[],
            binary_as_views: false,
        };
        Self::create_with(path, spec, &options)
    }

    /// Starts writing `path` with the contract `spec` and explicit options.
    pub fn create_with(path: &Path, spec: TableSpec, options: &WriteOptions) -> Result<Self> {
        let tmp = temporary_name(path);
        let file = File::create(&tmp).at(&tmp)?;
        let batch_schema = if options.binary_as_views {
            binary_as_views(&spec.arrow_schema())
        } else {
            spec.arrow_schema()
        };
        let inner = ArrowWriter::try_new_with_options(
            file,
            batch_schema.clone(),
            ArrowWriterOptions::new()
                .with_properties(writer_properties(&spec, options))
                .with_skip_arrow_metadata(options.binary_as_views),
        )
        .map_err(|e| Error::parquet(&tmp, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            batch_schema,
            inner: Some(inner),
            rows: 0,
        })
    }

    /// Appends columns, in contract order (binary ones as views with `binary_as_views`).
    pub fn write_columns(&mut self, columns: Vec<ArrayRef>) -> Result<()> {
        let batch = RecordBatch::try_new(self.batch_schema.clone(), columns)
            .map_err(|e| Error::arrow(&self.path, e))?;
        self.rows += batch.num_rows();
        self.writer()?
            .write(&batch)
            .map_err(|e| Error::parquet(&self.tmp, e))
    }

    /// Forces the buffered rows out as a row group.
    pub fn flush_row_group(&mut self) -> Result<()> {
        let tmp = self.tmp.clone();
        self.writer()?.flush().map_err(|e| Error::parquet(&tmp, e))
    }

    fn writer(&mut self) -> Result<&mut ArrowWriter<File>> {
        let tmp = &self.tmp;
        self.inner
            .as_mut()
            .ok_or_else(|| Error::io(tmp, std::io::Error::other("table already finished")))
    }

    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Closes the file and renames it into place. Returns the file size.
    pub fn finish(mut self) -> Result<u64> {
        let inner = self
            .inner
            .take()
            .ok_or_else(|| Error::io(&self.tmp, std::io::Error::other("table already finished")))?;
        if let Err(e) = inner.close() {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(Error::parquet(&self.tmp, e));
        }
        crate::atomic::commit(&self.tmp, &self.path)?;
        Ok(std::fs::metadata(&self.path).at(&self.path)?.len())
    }
}

/// `schema` with its `Binary` fields as `BinaryView`.
fn binary_as_views(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Binary => f.as_ref().clone().with_data_type(DataType::BinaryView),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// Writes a whole small table at once, atomically.
pub fn write_table(path: &Path, spec: TableSpec, columns: Vec<ArrayRef>) -> Result<u64> {
    let mut w = TableWriter::create(path, spec, 1 << 20)?;
    w.write_columns(columns)?;
    w.finish()
}

/// Reads a whole (small) table, checking it against its contract first.
pub fn read_table(path: &Path, spec: &TableSpec) -> Result<Vec<RecordBatch>> {
    let file = File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::input(path, "not found")
        } else {
            Error::io(path, e)
        }
    })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::Schema {
        path: path.to_path_buf(),
        table: spec.table.clone(),
        detail: format!("not a readable Parquet file ({e})"),
    })?;
    spec.check(path, builder.schema())?;
    let reader = builder
        .with_batch_size(8192)
        .build()
        .map_err(|e| Error::parquet(path, e))?;
    reader
        .map(|b| b.map_err(|e| Error::arrow(path, e)))
        .collect()
}

/// Typed access to a named column, with an error that names the file.
pub fn column<'a, T: Array + 'static>(
    batch: &'a RecordBatch,
    name: &str,
    path: &Path,
) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| Error::Schema {
            path: path.to_path_buf(),
            table: String::new(),
            detail: format!("column `{name}` missing or of an unexpected type"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Table;
    use arrow_array::{Int32Array, Int64Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn round_trip_checks_contract_and_is_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("split.parquet");
        let spec = Table::Split.spec();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["p1", "p2"])),
            Arc::new(StringArray::from(vec!["train", "val"])),
            Arc::new(Int32Array::from(vec![Some(0), None])),
            Arc::new(Int64Array::from(vec![3, 4])),
            Arc::new(Int64Array::from(vec![10, 0])),
        ];
        write_table(&path, spec.clone(), cols).unwrap();
        assert!(!temporary_name(&path).exists());
        let batches = read_table(&path, &spec).unwrap();
        let ids = column::<StringArray>(&batches[0], "patient_id", &path).unwrap();
        assert_eq!(ids.value(1), "p2");
        let err = read_table(&path, &Table::Rejects.spec()).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        std::fs::write(&path, b"garbage").unwrap();
        let err = read_table(&path, &spec).unwrap_err();
        assert!(
            err.to_string().contains("not a readable Parquet file"),
            "{err}"
        );
    }
}
