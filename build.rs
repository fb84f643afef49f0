//! Builds `src/model/gpu/kernels.cu`, lungseg's CUDA kernels: always as plain C (a static
//! library that only the CPU tests call, to run the kernels' own source against the CPU
//! kernels), and with nvcc to PTX when the `cudnn` feature is on. The CPU build needs a C
//! compiler (as zstd's already does) but never nvcc.

use std::path::PathBuf;
use std::process::Command;

const KERNELS: &str = "src/model/gpu/kernels.cu";

fn main() {
    println!("cargo:rerun-if-changed={KERNELS}");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=NVCC");
    cc::Build::new()
        .flag("-x")
        .flag("c")
        .flag("-std=c99")
        .flag("-ffp-contract=off")
        .file(KERNELS)
        .opt_level(2)
        .compile("lungseg_kernels_emulated");
    if std::env::var_os("CARGO_FEATURE_CUDNN").is_some() {
        if let Err(e) = compile_ptx() {
            panic!("{e}");
        }
    }
}

/// `OUT_DIR/lungseg_kernels.ptx` for `compute_$CUDA_COMPUTE_CAP` (80 unless set: newer drivers
/// JIT it for Hopper). `-fmad=false` keeps every multiply-add as written, as the CPU kernels and
/// the C++ build compute it.
fn compile_ptx() -> Result<(), String> {
    let out = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| format!("OUT_DIR: {e}"))?)
        .join("lungseg_kernels.ptx");
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-fmad=false", "-std=c++14"])
        .arg(format!("--gpu-architecture=compute_{cap}"))
        .arg("-o")
        .arg(&out)
        .arg(KERNELS)
        .status()
        .map_err(|e| format!("{nvcc}: {e} (the cudnn feature needs the CUDA toolkit's nvcc)"))?;
    if !status.success() {
        return Err(format!("{nvcc} failed on {KERNELS}: {status}"));
    }
    Ok(())
}
