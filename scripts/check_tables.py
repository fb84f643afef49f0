#!/usr/bin/env python3
"""Reads every lungseg table under the given directories with Python polars AND pyarrow, and
checks each against its contract in schemas/*.json (names, order, types, nullability).

Usage: scripts/check_tables.py DIR [DIR ...]
Prints one line per table; exits 1 on the first mismatch or unreadable file.
"""
import json
import pathlib
import sys

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMAS = pathlib.Path(__file__).resolve().parent.parent / "schemas"

# file name pattern -> contract
TABLES = [
    ("shards/slices-*.parquet", "slices"),
    ("manifest.parquet", "manifest"),
    ("rejects.parquet", "rejects"),
    ("split.parquet", "split"),
    ("train.parquet", "slice_index"),
    ("val.parquet", "slice_index"),
    ("epochs.parquet", "epochs"),
    ("eval/per_slice.parquet", "per_slice"),
    ("eval/thresholds.parquet", "thresholds"),
    ("nodules.parquet", "nodules"),
    ("dicom_masks.parquet", "dicom_masks"),
]

ARROW = {
    "Utf8": {pa.string(), pa.large_string()},
    "Binary": {pa.binary(), pa.large_binary()},
    "Int32": {pa.int32()},
    "Int64": {pa.int64()},
    "Float32": {pa.float32()},
    "Float64": {pa.float64()},
    "Boolean": {pa.bool_()},
}
POLARS = {
    "Utf8": pl.String,
    "Binary": pl.Binary,
    "Int32": pl.Int32,
    "Int64": pl.Int64,
    "Float32": pl.Float32,
    "Float64": pl.Float64,
    "Boolean": pl.Boolean,
}


def arrow_types(name: str) -> set:
    """The pyarrow types a contract type may be read as; `List<T>` lists of those."""
    if name.startswith("List<"):
        return {f(t) for t in arrow_types(name[5:-1]) for f in (pa.list_, pa.large_list)}
    return ARROW[name]


def polars_type(name: str):
    if name.startswith("List<"):
        return pl.List(polars_type(name[5:-1]))
    return POLARS[name]


def check(path: pathlib.Path, contract: str) -> int:
    spec = json.loads((SCHEMAS / f"{contract}.json").read_text())
    cols = spec["columns"]
    table = pq.read_table(path)
    names = [c["name"] for c in cols]
    if table.schema.names != names:
        raise SystemExit(f"{path}: pyarrow columns {table.schema.names} != contract {names}")
    for c, field in zip(cols, table.schema):
        if field.type not in arrow_types(c["type"]):
            raise SystemExit(f"{path}: column {c['name']} is {field.type}, contract says {c['type']}")
        if not c["nullable"] and table.column(c["name"]).null_count:
            raise SystemExit(f"{path}: column {c['name']} has nulls but is not nullable")
    df = pl.read_parquet(path)
    if df.columns != names:
        raise SystemExit(f"{path}: polars columns {df.columns} != contract {names}")
    for c in cols:
        if df.schema[c["name"]] != polars_type(c["type"]):
            raise SystemExit(f"{path}: polars reads {c['name']} as {df.schema[c['name']]}, contract says {c['type']}")
    if df.height != table.num_rows:
        raise SystemExit(f"{path}: polars and pyarrow disagree on rows")
    return df.height


def main(dirs):
    found = 0
    for d in map(pathlib.Path, dirs):
        for pattern, contract in TABLES:
            for path in sorted(d.glob(pattern)):
                rows = check(path, contract)
                found += 1
                print(f"ok {contract:12} {rows:7d} rows  {path}")
    if found == 0:
        raise SystemExit(f"no lungseg tables under {dirs}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["."])
