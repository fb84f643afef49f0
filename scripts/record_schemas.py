#!/usr/bin/env python3
"""Writes schemas/records/*.json: the contracts of the JSON records stages leave behind
(prepare.json, split.json, config.json, eval/summary.json), beside the Parquet tables' contracts.

Each field's name, JSON type and description come from the Rust struct that is serialised (its
`///` doc line and its type), so the contract says what the code writes; the integration test
`records::every_json_record_matches_its_contract` checks real records against these files.

Usage: python3 scripts/record_schemas.py        (run from the repository root; rewrites the files)
"""
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "src"

# The records: file stem, where the file lives, what it is, and its Rust struct.
RECORDS = [
    ("prepare", "DATA_DIR/prepare.json", "The resolved prepare config, the input's identity and the counts; written last, so its presence marks a complete data directory.", "PrepareRecord"),
    ("split", "DATA_DIR/split.json", "The resolved split config, the hash rule and the achieved sizes; written last, so its presence marks a complete split.", "SplitRecord"),
    ("run", "RUN_DIR/config.json", "What produced a training run: the resolved config and settings, the data fingerprint, the device and the split sizes.", "RunRecord"),
    ("eval_summary", "RUN_DIR/eval/summary.json", "The pooled, lesion- and nodule-level results of one evaluation, the settings and the fingerprints of the checkpoint and data it used; written last.", "EvalSummary"),
]

SCALARS = {
    "String": "string", "PathBuf": "string",
    "usize": "integer", "u64": "integer", "u32": "integer", "i32": "integer", "i64": "integer",
    "f64": "number", "f32": "number", "bool": "boolean",
}
# Types serialised as strings (enums with unit variants, or a custom string form).
STRINGS = {"WindowMode", "ImageCompression", "LossKind", "RaterFusion", "Monitor", "EvalSplit", "Source",
           "CheckpointChoice", "Precision"}
# Serialised as a string, or as {"cuda": N} for a CUDA device.
SPECIAL = {"DeviceSpec": ("string", "\"auto\", \"cpu\", \"metal\" or {\"cuda\": N}")}


def structs():
    """Every `pub struct Name { ... }` of the crate: name -> [(field, type, doc, serde attrs)]."""
    out = {}
    for path in SRC.rglob("*.rs"):
        text = path.read_text()
        for m in re.finditer(r"pub struct (\w+) \{(.*?)\n\}", text, re.S):
            fields, doc, attrs = [], [], []
            for line in m.group(2).splitlines():
                line = line.strip()
                if line.startswith("///"):
                    doc.append(line[3:].strip())
                elif line.startswith("#[serde"):
                    attrs.append(line)
                else:
                    f = re.match(r"pub (\w+): (.+),$", line)
                    if f:
                        fields.append((f.group(1), f.group(2), " ".join(doc), attrs))
                    doc, attrs = [], []
            out[m.group(1)] = fields
    return out


def field_schema(name, ty, doc, attrs, all_structs):
    rename = next((re.search(r'rename = "(\w+)"', a).group(1) for a in attrs if "rename =" in a), None)
    entry = {"name": rename or name}
    nullable = False
    opt = re.fullmatch(r"Option<(.+)>", ty)
    if opt:
        ty, nullable = opt.group(1), True
    vec = re.fullmatch(r"Vec<(.+)>", ty)
    if ty in SCALARS:
        entry["type"] = SCALARS[ty]
    elif ty in STRINGS:
        entry["type"] = "string"
    elif ty in SPECIAL:
        entry["type"], extra = SPECIAL[ty]
        doc = f"{doc} ({extra})"
    elif vec:
        entry["type"] = "array"
    elif ty in all_structs:
        entry["type"] = "object"
    else:
        sys.exit(f"record_schemas.py: no JSON type known for `{ty}` (field `{name}`)")
    entry["nullable"] = nullable
    entry["description"] = doc
    if entry["type"] == "object":
        entry["fields"] = struct_schema(ty, all_structs)
    return entry


def struct_schema(struct, all_structs):
    return [field_schema(n, t, d, a, all_structs) for n, t, d, a in all_structs[struct]]


def main():
    all_structs = structs()
    out = ROOT / "schemas" / "records"
    out.mkdir(parents=True, exist_ok=True)
    for stem, file, description, struct in RECORDS:
        schema = {
            "record": stem,
            "file": file,
            "description": description,
            "fields": struct_schema(struct, all_structs),
        }
        (out / f"{stem}.json").write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n")
        print(f"schemas/records/{stem}.json: {len(schema['fields'])} fields")


if __name__ == "__main__":
    main()
