//! Chooses the compute device from `--device auto|cpu|cuda[:N]|metal`.

use crate::error::{Error, Result};
use candle_core::Device;
use std::str::FromStr;

/// A requested device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceSpec {
    /// CUDA if built in and present, then Metal, then CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
    /// The default Metal device.
    Metal,
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "metal" => Ok(Self::Metal),
            "cuda" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| {
                    format!("unknown device `{s}`: use auto, cpu, cuda, cuda:N or metal")
                }),
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => write!(f, "auto"),
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
            Self::Metal => write!(f, "metal"),
        }
    }
}

/// A human-readable name of an opened device.
pub fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda".into(),
        Device::Metal(_) => "metal".into(),
    }
}

/// Opens the requested device. An explicit GPU request that cannot be met is an error (exit 2);
/// `auto` falls back quietly.
pub fn open(spec: DeviceSpec) -> Result<Device> {
    let unavailable = |what: &str, feature: &str, e: candle_core::Error| {
        // candle appends a backtrace when RUST_BACKTRACE is set; keep the message to one line.
        let first = crate::error::first_line(&e.to_string());
        let fix = if built_features().contains(feature) {
            "check that the GPU is visible (nvidia-smi) and its index exists".to_string()
        } else {
            // CUDA builds get cuDNN (`make train`'s default where nvcc is installed).
            let (build, toolkit) = if feature == "cuda" {
                ("cudnn", "CUDA")
            } else {
                ("metal", "Metal")
            };
            format!(
                "this binary was built without `{feature}`: build it with `make train FEATURES={build}` on a machine with the {toolkit} toolkit"
            )
        };
        Error::Usage(format!("--device {what}: not available ({first}); {fix}"))
    };
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Cuda(n) => Device::new_cuda(n)
            .map(single_stream)
            .map_err(|e| unavailable(&spec.to_string(), "cuda", e)),
        DeviceSpec::Metal => Device::new_metal(0).map_err(|e| unavailable("metal", "metal", e)),
        DeviceSpec::Auto => {
            if candle_core::utils::cuda_is_available() {
                if let Ok(d) = Device::new_cuda(0) {
                    return Ok(single_stream(d));
                }
            }
            if candle_core::utils::metal_is_available() {
                if let Ok(d) = Device::new_metal(0) {
                    return Ok(d);
                }
            }
            Ok(Device::Cpu)
        }
    }
}

/// Sets up a CUDA device for training: turns off cudarc's per-buffer event tracking (CUDA
/// events recorded for each allocation), since lungseg drives each device from one host thread
/// on candle's stream (the thread's default stream), where launch order alone orders every read
/// and write; and keeps freed
/// memory in the device's allocation pool instead of returning it to the driver at every
/// synchronisation (the pool's release threshold, 0 by default), so that each step's buffers
/// come from the pool, as PyTorch's caching allocator does.
fn single_stream(device: Device) -> Device {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(cuda) = &device {
        use candle_core::cuda::cudarc::driver::sys;
        // SAFETY: lungseg uses a device from one host thread, hence one stream: no buffer is
        // shared across streams.
        unsafe { cuda.disable_event_tracking() }
        let dev = cuda.cuda_stream().context().cu_device();
        let mut pool = std::ptr::null_mut();
        let mut keep = u64::MAX;
        // SAFETY: `pool` receives the device's default pool, which lives as long as the
        // context; the attribute takes a pointer to a u64. A failure only leaves the default.
        unsafe {
            if sys::cuDeviceGetDefaultMemPool(&mut pool, dev) == sys::CUresult::CUDA_SUCCESS {
                let attr = sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD;
                let _ = sys::cuMemPoolSetAttribute(pool, attr, (&mut keep as *mut u64).cast());
            }
        }
    }
    device
}

/// Bytes of the GPU in use (by every process and context), or `None` on other devices.
pub fn gpu_used_bytes(device: &Device) -> Option<usize> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(cuda) = device {
        let (free, total) = cuda.cuda_stream().context().mem_get_info().ok()?;
        return Some(total - free);
    }
    let _ = device;
    None
}

/// The GPU features compiled into this binary.
pub fn built_features() -> String {
    let mut f = Vec::new();
    if cfg!(feature = "cuda") {
        f.push("cuda");
    }
    if cfg!(feature = "cudnn") {
        f.push("cudnn");
    }
    if cfg!(feature = "metal") {
        f.push("metal");
    }
    if f.is_empty() {
        "cpu only".into()
    } else {
        f.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("auto".parse(), Ok(DeviceSpec::Auto));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceSpec::Cuda(3)));
        assert!("gpu".parse::<DeviceSpec>().is_err());
        assert_eq!(DeviceSpec::Cuda(1).to_string(), "cuda:1");
    }

    #[test]
    fn auto_always_opens_something_and_cpu_build_refuses_cuda() {
        assert!(open(DeviceSpec::Auto).is_ok());
        if !cfg!(feature = "cuda") {
            let e = open(DeviceSpec::Cuda(0)).unwrap_err();
            assert_eq!(e.exit_code(), 2);
        }
    }

    /// On a CUDA build with a GPU: the U-Net's forward pass, the loss and every parameter's
    /// gradient agree with the CPU within float tolerance. Skips (passes) when no GPU is present,
    /// unless `LUNGSEG_REQUIRE_CUDA` is set (as `scripts/gpu-check.sh` does).
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_matches_cpu_forward_and_step() {
        use crate::model::loss::LossKind;
        use crate::model::{UNet, UNetConfig};
        use candle_core::{DType, ModuleT, Tensor};
        use candle_nn::{VarBuilder, VarMap};
        // Strict f32 on both sides (TF32 is compared in `model::gpu::tests`).
        let Some((gpu, _lock)) = crate::model::gpu::test_gpu(crate::model::gpu::Precision::F32)
        else {
            return;
        };
        // Returns (probabilities, loss, per-parameter gradient sums of squares by name).
        let run = |device: &Device| -> (Vec<f32>, f32, Vec<(String, f32)>) {
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, device);
            let model = UNet::new(&UNetConfig { base_channels: 4 }, vb).unwrap();
            crate::model::init::init_like_pytorch(&vm, 3).unwrap();
            let x: Vec<f32> = (0..2 * 32 * 32)
                .map(|i| ((i * 7919) % 101) as f32 / 101.0)
                .collect();
            let y: Vec<f32> = (0..2 * 32 * 32)
                .map(|i| f32::from(u8::from(i % 32 < 8)))
                .collect();
            let x = Tensor::from_vec(x, (2, 1, 32, 32), device).unwrap();
            let y = Tensor::from_vec(y, (2, 1, 32, 32), device).unwrap();
            let logits = model.forward_t(&x, true).unwrap();
            let loss = LossKind::Dice.compute(&logits, &y).unwrap();
            let grads = loss.backward().unwrap();
            let mut grad_norms: Vec<(String, f32)> = vm
                .data()
                .lock()
                .unwrap()
                .iter()
                .filter_map(|(name, var)| {
                    let g = grads.get(var.as_tensor())?;
                    Some((
                        name.clone(),
                        g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap(),
                    ))
                })
                .collect();
            grad_norms.sort_by(|a, b| a.0.cmp(&b.0));
            let probs = candle_nn::ops::sigmoid(&model.forward_t(&x, false).unwrap()).unwrap();
            (
                probs.flatten_all().unwrap().to_vec1().unwrap(),
                loss.to_scalar().unwrap(),
                grad_norms,
            )
        };
        let (p_cpu, l_cpu, g_cpu) = run(&Device::Cpu);
        let (p_gpu, l_gpu, g_gpu) = run(&gpu);
        assert!((l_cpu - l_gpu).abs() < 1e-4, "{l_cpu} vs {l_gpu}");
        assert!(!g_cpu.is_empty());
        assert_eq!(g_cpu.len(), g_gpu.len());
        for ((name, a), (_, b)) in g_cpu.iter().zip(&g_gpu) {
            assert!(
                (a - b).abs() <= 1e-3 * a.abs().max(1e-6),
                "grad² of {name}: {a} vs {b}"
            );
        }
        let worst = p_cpu
            .iter()
            .zip(&p_gpu)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "max |cpu - gpu| = {worst}");
    }
}
