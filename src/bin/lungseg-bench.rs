//! Micro-benchmarks behind `make bench`: the U-Net train step, its kernels and the shard stream,
//! timed in the same build the CLI uses, and the mixing of training batches. Prints one JSON
//! object per run.

use candle_core::{DType, Device, ModuleT, Tensor};
use candle_nn::{VarBuilder, VarMap};
use clap::{Parser, Subcommand};
use lungseg::data::batcher::Batcher;
use lungseg::data::fusion::RaterFusion;
use lungseg::data::patch::PatchBatch;
use lungseg::data::patch::PatchSampler;
use lungseg::data::{ShardStream, SliceIndex, StreamOptions};
use lungseg::layout::DataDir;
use lungseg::model::gpu::Precision;
use lungseg::model::loss::LossKind;
use lungseg::model::optim::{Adam, AdamParams};
use lungseg::model::{ConvImpl, UNet, UNetConfig, Upsample2x};
use lungseg::rng::SplitMix64;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "lungseg micro-benchmarks (JSON on stdout)")]
struct Cli {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Forward + backward + Adam step of the U-Net on random patches.
    TrainStep {
        #[arg(long, default_value_t = 64)]
        base: usize,
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long, default_value_t = 128)]
        size: usize,
        #[arg(long, default_value_t = 3)]
        steps: usize,
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Forward only, in evaluation mode.
        #[arg(long)]
        forward_only: bool,
        /// Use candle's reference ops throughout (same as `--kernels candle-reference`).
        #[arg(long)]
        reference_conv: bool,
        /// Which layer implementation: fused (lungseg's kernels, one node for the net; on
        /// CUDA with the cudnn feature, cuDNN and lungseg's CUDA kernels), fused-layers (one
        /// node per layer) or candle-reference. Default: the model's default (fused;
        /// `LUNGSEG_KERNELS` overrides).
        #[arg(long)]
        kernels: Option<ConvImpl>,
        /// CUDA arithmetic of convolutions and matrix products: tf32 or f32 (strict).
        #[arg(long, value_enum, default_value_t = Precision::Tf32)]
        precision: Precision,
        /// Also time the step's phases (forward + loss, backward, optimizer), with the device
        /// synchronised between them: medians in `phase_ms`. The synchronisations remove the
        /// overlap of host and device work, so the step itself may time slower.
        #[arg(long)]
        phases: bool,
    },
    /// Each CPU kernel of one training step on the U-Net's own layer shapes, timed alone:
    /// CPU seconds (all threads) and wall seconds, the minimum over `--reps`.
    Layers {
        #[arg(long, default_value_t = 64)]
        base: usize,
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long, default_value_t = 128)]
        size: usize,
        #[arg(long, default_value_t = 3)]
        reps: usize,
    },
    /// Shards → device-ready patch batches, no model.
    Stream {
        #[arg(long)]
        data: std::path::PathBuf,
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long, default_value_t = 1)]
        epochs: u64,
        /// Where the batches land: cpu, cuda, cuda:N, metal.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// How mixed training batches are: distinct patients in the last `--tail` batches of each
    /// epoch and per batch, from the trainer's own stream, against uniform permutations.
    Order {
        #[arg(long)]
        data: std::path::PathBuf,
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long, default_value_t = 20)]
        tail: usize,
        #[arg(long, default_value_t = 5)]
        epochs: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = lungseg::data::stream::DEFAULT_SHUFFLE_BUFFER)]
        buffer: usize,
    },
}

#[path = "lungseg-bench/layers.rs"]
mod layers;
#[path = "lungseg-bench/order.rs"]
mod order;

fn open_device(name: &str) -> anyhow::Result<Device> {
    let spec: lungseg::device::DeviceSpec = name.parse().map_err(anyhow::Error::msg)?;
    Ok(lungseg::device::open(spec)?)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[allow(clippy::too_many_arguments)]
fn train_step(
    base: usize,
    batch: usize,
    size: usize,
    steps: usize,
    warmup: usize,
    device: &str,
    forward_only: bool,
    kernels: ConvImpl,
    precision: Precision,
    phases: bool,
) -> anyhow::Result<serde_json::Value> {
    let dev = open_device(device)?;
    if dev.is_cuda() {
        lungseg::model::gpu::set_precision(precision);
    }
    let used_at_start = lungseg::device::gpu_used_bytes(&dev);
    let vm = VarMap::new();
    let conv = kernels;
    let model = UNet::with_impls(
        &UNetConfig {
            base_channels: base,
        },
        Upsample2x::Bilinear,
        conv,
        VarBuilder::from_varmap(&vm, DType::F32, &dev),
    )?;
    lungseg::model::init::init_like_pytorch(&vm, 0)?;
    let vars = lungseg::model::trainable_vars(&vm);
    let mut opt = Adam::new(vars, AdamParams::default())?;
    let mut rng = SplitMix64::new(0);
    let n = batch * size * size;
    let x: Vec<f32> = (0..n).map(|_| rng.next_f64() as f32).collect();
    let y: Vec<f32> = (0..n)
        .map(|i| f32::from(u8::from((i % size) < size / 8)))
        .collect();
    let x = Tensor::from_vec(x, (batch, 1, size, size), &dev)?;
    let y = Tensor::from_vec(y, (batch, 1, size, size), &dev)?;
    let mut times = Vec::new();
    let mut cpu_times = Vec::new();
    // Seconds of each phase (with `phases`): forward + loss, backward, optimizer.
    let mut phase_times: [Vec<f64>; 3] = Default::default();
    for i in 0..warmup + steps {
        let (t, cpu) = (Instant::now(), layers::cpu_seconds());
        let mut marks = [0.0; 3];
        let mut mark = |k: usize| -> anyhow::Result<()> {
            if phases {
                dev.synchronize()?;
                marks[k] = t.elapsed().as_secs_f64();
            }
            Ok(())
        };
        if forward_only {
            let p = model.forward_t(&x, false)?;
            p.sum_all()?.to_scalar::<f32>()?;
        } else {
            let logits = model.forward_t(&x, true)?;
            let loss = LossKind::Dice.compute(&logits, &y)?;
            mark(0)?;
            let grads = loss.backward()?;
            mark(1)?;
            opt.step(&grads)?;
            mark(2)?;
            loss.to_scalar::<f32>()?;
        }
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64());
            cpu_times.push(layers::cpu_seconds() - cpu);
            for (k, v) in phase_times.iter_mut().enumerate() {
                v.push(marks[k] - if k == 0 { 0.0 } else { marks[k - 1] });
            }
        }
    }
    let phase_ms = (phases && !forward_only).then(|| {
        let [f, b, o] = phase_times.map(|v| median(v) * 1e3);
        serde_json::json!({"forward_loss": f, "backward": b, "optimizer": o})
    });
    let (s, min_s) = (
        median(times.clone()),
        times.iter().copied().fold(f64::MAX, f64::min),
    );
    Ok(serde_json::json!({
        "framework": "candle", "device": lungseg::device::describe(&dev),
        "threads": rayon::current_num_threads(), "batch": batch, "size": size, "base": base,
        "seconds_per_step": s, "patches_per_s": batch as f64 / s, "steps": steps,
        "min_seconds_per_step": min_s, "cpu_seconds_per_step": median(cpu_times),
        "mode": if forward_only { "forward-only" } else { "train-step" },
        "conv": serde_json::to_value(kernels)?,
        "precision": serde_json::to_value(precision)?,
        "build": lungseg::device::built_features(),
        "phase_ms": phase_ms,
        // The allocation pool keeps freed memory (`device::open`), so what it grew by is the
        // step's peak (plus cuDNN's and cuBLAS's workspaces).
        "peak_pool_bytes": used_at_start
            .zip(lungseg::device::gpu_used_bytes(&dev))
            .map(|(start, end)| end.saturating_sub(start)),
    }))
}

fn stream(
    data: &std::path::Path,
    batch: usize,
    epochs: u64,
    device: &str,
) -> anyhow::Result<serde_json::Value> {
    let dev = open_device(device)?;
    let dir = DataDir::new(data);
    let index = SliceIndex::read(&dir.train_index())?;
    let sampler = PatchSampler {
        patch: 128,
        fg_crop: 0.5,
        flips: true,
    };
    let t = Instant::now();
    let mut patches = 0usize;
    for epoch in 0..epochs {
        let options = StreamOptions::training(RaterFusion::Union, 1, epoch);
        let s = ShardStream::open(&dir, &index, &options)?;
        let mut rng = SplitMix64::new(epoch);
        for b in Batcher::new(s).batch_size(batch) {
            let b = PatchBatch::from_samples(&b?, &sampler, &mut rng);
            let (x, _y) = b.to_tensors(&dev)?;
            patches += x.dims()[0];
        }
    }
    let s = t.elapsed().as_secs_f64();
    Ok(serde_json::json!({
        "what": "stream", "patches": patches, "seconds": s, "patches_per_s": patches as f64 / s,
        "slices_in_index": index.len(), "epochs": epochs,
        "device": lungseg::device::describe(&dev),
    }))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.what {
        What::TrainStep {
            base,
            batch,
            size,
            steps,
            warmup,
            device,
            forward_only,
            reference_conv,
            kernels,
            precision,
            phases,
        } => train_step(
            base,
            batch,
            size,
            steps,
            warmup,
            &device,
            forward_only,
            match (reference_conv, kernels) {
                (true, _) => ConvImpl::CandleReference,
                (false, k) => k.unwrap_or_default(),
            },
            precision,
            phases,
        ),
        What::Layers {
            base,
            batch,
            size,
            reps,
        } => layers::run(base, batch, size, reps),
        What::Stream {
            data,
            batch,
            epochs,
            device,
        } => stream(&data, batch, epochs, &device),
        What::Order {
            data,
            batch,
            tail,
            epochs,
            seed,
            buffer,
        } => order::run(&data, batch, tail, epochs, seed, buffer),
    };
    match result {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
