//! The table contracts: `schemas/*.json` are embedded here, turned into Arrow schemas for the
//! writers, and used to check every table that is read back.

use crate::error::{Error, Result};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;

/// One column of a table contract.
#[derive(Debug, Clone, Deserialize)]
pub struct ColumnSpec {
    /// Column name.
    pub name: String,
    /// Logical type: Utf8, Binary, Int32, Int64, Float32, Float64, Boolean, or `List<T>` of one
    /// of those (nullable items).
    #[serde(rename = "type")]
    pub data_type: String,
    /// Whether nulls are allowed.
    pub nullable: bool,
    /// What the column means.
    pub description: String,
}

/// A table contract, as written in `schemas/<table>.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct TableSpec {
    /// Table name (the JSON file's stem).
    pub table: String,
    /// What the table is and where it lives.
    pub description: String,
    /// Columns, in order.
    pub columns: Vec<ColumnSpec>,
}

/// Every table with a contract in `schemas/`. Naming a table by this enum, not by a string,
/// makes a misspelt contract a compile error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// `shards/slices-NNNNN.parquet`.
    Slices,
    /// `manifest.parquet`.
    Manifest,
    /// `rejects.parquet`.
    Rejects,
    /// `split.parquet`.
    Split,
    /// `train.parquet` and `val.parquet`.
    SliceIndex,
    /// `epochs.parquet`.
    Epochs,
    /// `eval/per_slice.parquet`.
    PerSlice,
    /// `eval/thresholds.parquet`.
    Thresholds,
    /// `nodules.parquet` (TCIA source).
    Nodules,
    /// `dicom_masks.parquet` (predict on DICOM input).
    DicomMasks,
}

impl Table {
    /// Every table, in pipeline order.
    pub const ALL: [Table; 10] = [
        Table::Slices,
        Table::Manifest,
        Table::Rejects,
        Table::Split,
        Table::SliceIndex,
        Table::Epochs,
        Table::PerSlice,
        Table::Thresholds,
        Table::Nodules,
        Table::DicomMasks,
    ];

    /// The contract's name: the stem of `schemas/<name>.json`.
    pub fn name(self) -> &'static str {
        match self {
            Table::Slices => "slices",
            Table::Manifest => "manifest",
            Table::Rejects => "rejects",
            Table::Split => "split",
            Table::SliceIndex => "slice_index",
            Table::Epochs => "epochs",
            Table::PerSlice => "per_slice",
            Table::Thresholds => "thresholds",
            Table::Nodules => "nodules",
            Table::DicomMasks => "dicom_masks",
        }
    }

    /// The embedded `schemas/<name>.json`.
    fn contract_json(self) -> &'static str {
        match self {
            Table::Slices => include_str!("../schemas/slices.json"),
            Table::Manifest => include_str!("../schemas/manifest.json"),
            Table::Rejects => include_str!("../schemas/rejects.json"),
            Table::Split => include_str!("../schemas/split.json"),
            Table::SliceIndex => include_str!("../schemas/slice_index.json"),
            Table::Epochs => include_str!("../schemas/epochs.json"),
            Table::PerSlice => include_str!("../schemas/per_slice.json"),
            Table::Thresholds => include_str!("../schemas/thresholds.json"),
            Table::Nodules => include_str!("../schemas/nodules.json"),
            Table::DicomMasks => include_str!("../schemas/dicom_masks.json"),
        }
    }

    /// The table's contract. Panics only if the embedded JSON is malformed, which a unit test
    /// rules out for every table.
    pub fn spec(self) -> TableSpec {
        serde_json::from_str(self.contract_json())
            .unwrap_or_else(|e| panic!("schemas/{}.json: {e}", self.name()))
    }
}

fn arrow_type(name: &str) -> Option<DataType> {
    if let Some(item) = name.strip_prefix("List<").and_then(|n| n.strip_suffix('>')) {
        return Some(DataType::List(Arc::new(Field::new_list_field(
            arrow_type(item)?,
            true,
        ))));
    }
    Some(match name {
        "Utf8" => DataType::Utf8,
        "Binary" => DataType::Binary,
        "Int32" => DataType::Int32,
        "Int64" => DataType::Int64,
        "Float32" => DataType::Float32,
        "Float64" => DataType::Float64,
        "Boolean" => DataType::Boolean,
        _ => return None,
    })
}

impl TableSpec {
    /// The Arrow schema the writers use.
    pub fn arrow_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| {
                let ty = arrow_type(&c.data_type).unwrap_or_else(|| {
                    panic!("schemas/{}.json: unknown type {}", self.table, c.data_type)
                });
                Field::new(&c.name, ty, c.nullable)
            })
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// Checks that a table read from `path` has exactly this contract's columns, types and
    /// nullability. String columns may come back as large or view strings from other writers.
    pub fn check(&self, path: &Path, actual: &Schema) -> Result<()> {
        let expected = self.arrow_schema();
        let mismatch = |detail: String| Error::Schema {
            path: path.to_path_buf(),
            table: self.table.clone(),
            detail,
        };
        if actual.fields().len() != expected.fields().len() {
            let names: Vec<&str> = actual.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(mismatch(format!(
                "expected {} columns, found {}: {names:?}",
                expected.fields().len(),
                actual.fields().len()
            )));
        }
        for (want, got) in expected.fields().iter().zip(actual.fields()) {
            if want.name() != got.name() {
                return Err(mismatch(format!(
                    "column `{}` expected, found `{}`",
                    want.name(),
                    got.name()
                )));
            }
            let same_type = match (want.data_type(), got.data_type()) {
                (DataType::Utf8, DataType::LargeUtf8 | DataType::Utf8View) => true,
                (DataType::Binary, DataType::LargeBinary | DataType::BinaryView) => true,
                (DataType::List(a), DataType::List(b) | DataType::LargeList(b)) => {
                    a.data_type() == b.data_type()
                }
                (a, b) => a == b,
            };
            if !same_type {
                return Err(mismatch(format!(
                    "column `{}` should be {}, found {}",
                    want.name(),
                    want.data_type(),
                    got.data_type()
                )));
            }
            if !want.is_nullable() && got.is_nullable() {
                return Err(mismatch(format!(
                    "column `{}` must not be nullable",
                    want.name()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_contract_parses_with_known_types() {
        for table in Table::ALL {
            let s = table.spec();
            let name = table.name();
            assert_eq!(s.table, name);
            assert!(!s.columns.is_empty());
            for c in &s.columns {
                assert!(arrow_type(&c.data_type).is_some(), "{name}.{}", c.name);
                assert!(
                    !c.description.is_empty(),
                    "{name}.{} lacks a description",
                    c.name
                );
            }
            assert_eq!(s.arrow_schema().fields().len(), s.columns.len());
        }
    }

    #[test]
    fn check_reports_the_first_difference() {
        let s = Table::Split.spec();
        let good = s.arrow_schema();
        s.check(Path::new("x"), &good).unwrap();
        let renamed = Schema::new(vec![Field::new("patient", DataType::Utf8, false)]);
        let err = s.check(Path::new("x.parquet"), &renamed).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("x.parquet: does not match schema `split`"));
        let mut fields: Vec<Field> = good.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields[3] = Field::new("slices", DataType::Int32, false);
        let err = s.check(Path::new("x"), &Schema::new(fields)).unwrap_err();
        assert!(
            err.to_string().contains("`slices` should be Int64"),
            "{err}"
        );
    }
}
