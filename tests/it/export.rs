//! lungseg checkpoints load into the notebook's PyTorch U-Net and give the same probabilities.
//! Runs only where PyTorch is installed (`scripts/ensure-torch.sh`; not in CI).

use crate::common::*;
use lungseg::data::SliceSample;
use lungseg::device::DeviceSpec;
use lungseg::infer::model::LoadedModel;
use lungseg::layout::RunDir;
use lungseg::run::checkpoint::CheckpointChoice;
use std::process::Command;

fn torch_available() -> bool {
    Command::new("python3")
        .args(["-c", "import torch, safetensors, numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn checkpoints_load_into_pytorch_with_equal_outputs() {
    if !torch_available() {
        eprintln!("skipping: PyTorch is not installed (scripts/ensure-torch.sh)");
        return;
    }
    let sb = Sandbox::new();
    let data = dataset(&sb, 6, 5, &[]);
    let run = sb.path("run");
    train_tiny(
        &data,
        &run,
        &["--max-epochs", "2", "--max-steps-per-epoch", "3"],
    )
    .ok();
    let model =
        LoadedModel::load(&RunDir::new(&run), CheckpointChoice::Last, DeviceSpec::Cpu).unwrap();
    let samples: Vec<SliceSample> = (0..2)
        .map(|k| SliceSample {
            slice_id: format!("s{k}"),
            patient_id: "p".into(),
            height: 24,
            width: 32,
            image: (0..24 * 32)
                .map(|i| ((i * 37 + k * 11) % 97) as f32 / 97.0)
                .collect(),
            mask: vec![0; 24 * 32],
        })
        .collect();
    let predictions = model.predict(samples).unwrap();
    let batch = &predictions.batch;
    let probs: Vec<f32> = predictions.slices().flat_map(|s| s.probs).collect();
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    std::fs::write(sb.path("input.f32"), bytes(&batch.images)).unwrap();
    std::fs::write(sb.path("expected.f32"), bytes(&probs)).unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/load_in_pytorch.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(run.join("last.safetensors"))
        .arg("--input")
        .arg(sb.path("input.f32"))
        .arg("--expected")
        .arg(sb.path("expected.f32"))
        .args(["--shape", &format!("2,1,{},{}", batch.height, batch.width)])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("loaded"), "{text}");
    eprintln!("{text}");
}
