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
    /// Logical type: Utf8, Binary, Int32, Int64, Float32, Float64 or Boolean.
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

/// The embedded contracts, by table name.
const CONTRACTS: &[(&str, &str)] = &[
    ("slices", include_str!("../schemas/slices.json")),
    ("manifest", include_str!("../schemas/manifest.json")),
    ("rejects", include_str!("../schemas/rejects.json")),
    ("split", include_str!("../schemas/split.json")),
    ("slice_index", include_str!("../schemas/slice_index.json")),
    ("epochs", include_str!("../schemas/epochs.json")),
    ("per_slice", include_str!("../schemas/per_slice.json")),
    ("thresholds", include_str!("../schemas/thresholds.json")),
];

/// Names of every embedded table contract.
pub fn table_names() -> impl Iterator<Item = &'static str> {
    CONTRACTS.iter().map(|(name, _)| *name)
}

/// The contract of `table`. Panics only if the embedded JSON is malformed, which a unit test
/// rules out.
pub fn spec(table: &str) -> TableSpec {
    let text = CONTRACTS
        .iter()
        .find(|(name, _)| *name == table)
        .map(|(_, text)| *text)
        .unwrap_or_else(|| panic!("no embedded schema named {table}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("schemas/{table}.json: {e}"))
}

fn arrow_type(name: &str) -> Option<DataType> {
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
        for name in table_names() {
            let s = spec(name);
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
        let s = spec("split");
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
