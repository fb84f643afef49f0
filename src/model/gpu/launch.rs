//! lungseg's CUDA kernels (`kernels.cu`, compiled to PTX by build.rs): loaded once per device,
//! launched over an index space with grid-stride loops.

use candle_core::cuda::cudarc::driver::{CudaFunction, CudaStream, LaunchConfig};
use candle_core::cuda::CudaDevice;
use candle_core::Result;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/lungseg_kernels.ptx"));
const MODULE: &str = "lungseg-kernels";
/// Threads per block: a multiple of 32, as the per-channel sums need (`kernels.cu`).
const THREADS: u32 = 256;
/// Enough blocks to fill any current GPU; grid-stride loops cover the rest.
const MAX_BLOCKS: u32 = 16 * 1024;

/// The kernels of one device, loaded on first use.
pub(crate) struct Kernels {
    dev: CudaDevice,
    stream: Arc<CudaStream>,
    funcs: Mutex<HashMap<&'static str, CudaFunction>>,
}

impl Kernels {
    pub(crate) fn new(dev: &CudaDevice) -> Self {
        Self {
            dev: dev.clone(),
            stream: dev.cuda_stream(),
            funcs: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The kernel `name` of `kernels.cu`.
    pub(crate) fn func(&self, name: &'static str) -> Result<CudaFunction> {
        let mut funcs = self.funcs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = funcs.get(name) {
            return Ok(f.clone());
        }
        let f = self
            .dev
            .get_or_load_custom_func(name, MODULE, PTX)?
            .into_cuda_function();
        funcs.insert(name, f.clone());
        Ok(f)
    }
}

/// A launch covering `n` indices: 256-thread blocks, at most [`MAX_BLOCKS`] of them.
pub(crate) fn config(n: usize) -> Result<LaunchConfig> {
    let blocks = n.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS as usize) as u32;
    Ok(LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// `n` as the kernels' 32-bit index, refusing 2^31 elements or more.
pub(crate) fn index(n: usize, what: &str) -> Result<u32> {
    match u32::try_from(n) {
        Ok(v) if v < 1 << 31 => Ok(v),
        _ => candle_core::bail!("lungseg CUDA kernels: {what} of {n} elements is too large"),
    }
}

/// Launches `kernels.cu`'s `$name` over `$n` indices with the given arguments: device buffers
/// by reference (`&x`, `&mut y`), scalars as references to locals (the launch reads them).
macro_rules! launch {
    ($kernels:expr, $name:literal, $n:expr; $($arg:expr),* $(,)?) => {{
        use candle_core::cuda::cudarc::driver::PushKernelArg as _;
        let func = $kernels.func($name)?;
        let cfg = $crate::model::gpu::launch::config($n)?;
        let mut builder = $kernels.stream().launch_builder(&func);
        $( builder.arg($arg); )*
        // SAFETY: each call site passes the arguments of the kernel's C signature in kernels.cu,
        // in order and with its widths (u32 indices, f64 sums and constants), and every buffer
        // holds the elements the kernel indexes for the call's shape.
        unsafe { builder.launch(cfg) }
            .map_err(|e| candle_core::Error::Msg(format!("lungseg CUDA kernel {}: {e:?}", $name)))?;
    }};
}
pub(crate) use launch;
