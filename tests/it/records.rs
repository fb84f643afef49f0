//! The JSON records (`prepare.json`, `split.json`, `config.json`, `eval/summary.json`) match their
//! contracts in `schemas/records/` field for field, as the Parquet tables match theirs.

use crate::common::*;
use serde_json::Value;
use std::path::Path;

/// Checks `value` against the contract's `fields`: the same names, each of its JSON type, null
/// only where the contract allows it; nested objects recursively. Returns the mismatches.
fn mismatches(where_: &str, value: &Value, fields: &[Value]) -> Vec<String> {
    let Some(object) = value.as_object() else {
        return vec![format!("{where_}: not an object")];
    };
    let mut out = Vec::new();
    let names: Vec<&str> = fields.iter().filter_map(|f| f["name"].as_str()).collect();
    for key in object.keys() {
        if !names.contains(&key.as_str()) {
            out.push(format!("{where_}.{key}: written but not in the contract"));
        }
    }
    for f in fields {
        let name = f["name"].as_str().unwrap_or_default();
        let at = format!("{where_}.{name}");
        let Some(v) = object.get(name) else {
            out.push(format!("{at}: in the contract but not written"));
            continue;
        };
        let nullable = f["nullable"].as_bool().unwrap_or(false);
        let ok = match (f["type"].as_str().unwrap_or_default(), v) {
            (_, Value::Null) => nullable,
            ("string", Value::String(_)) | ("boolean", Value::Bool(_)) => true,
            ("integer", Value::Number(n)) => n.is_i64() || n.is_u64(),
            ("number", Value::Number(_)) | ("array", Value::Array(_)) => true,
            ("object", Value::Object(_)) => {
                let inner = f["fields"].as_array().cloned().unwrap_or_default();
                out.extend(mismatches(&at, v, &inner));
                true
            }
            _ => false,
        };
        if !ok {
            out.push(format!("{at}: {v} is not a {}", f["type"]));
        }
    }
    out
}

fn check(record: &Path, contract: &str) -> Vec<String> {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("schemas/records/{contract}.json")),
        )
        .unwrap(),
    )
    .unwrap();
    let value: Value = serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap();
    let fields = schema["fields"].as_array().cloned().unwrap_or_default();
    mismatches(contract, &value, &fields)
}

#[test]
fn every_json_record_matches_its_contract() {
    let sb = Sandbox::new();
    let data = dataset(&sb, 4, 2, &[]);
    let run = sb.path("run");
    train_tiny(
        &data,
        &run,
        &["--max-epochs", "1", "--max-steps-per-epoch", "1"],
    )
    .ok();
    let args = [
        "-q",
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--device",
        "cpu",
    ];
    lungseg([&args[..], &["--checkpoint", "last", "--overlays", "1"]].concat()).ok();
    let mut wrong = Vec::new();
    for (file, contract) in [
        (data.join("prepare.json"), "prepare"),
        (data.join("split.json"), "split"),
        (run.join("config.json"), "run"),
        (run.join("eval/summary.json"), "eval_summary"),
    ] {
        wrong.extend(check(&file, contract));
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // The check can fail: a field the contract does not know is reported.
    let extra = sb.path("extra.json");
    let mut v: Value =
        serde_json::from_slice(&std::fs::read(data.join("split.json")).unwrap()).unwrap();
    v["surprise"] = Value::Bool(true);
    std::fs::write(&extra, v.to_string()).unwrap();
    assert_eq!(
        check(&extra, "split"),
        vec!["split.surprise: written but not in the contract"]
    );
}
