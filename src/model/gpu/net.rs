//! [`NetKernels`] on CUDA: the U-Net's training pass with cuDNN convolutions and the kernels of
//! `kernels.cu`, on candle's stream for the device, with buffers kept from step to step.

use super::conv::Convs;
use super::launch::{index, launch, Kernels};
use crate::model::cpu::bn_relu::BnShape;
use crate::model::cpu::conv::ConvShape;
use crate::model::cpu::pool::PoolShape;
use crate::model::cpu::upsample::UpCatShape;
use crate::model::ops::network::NetKernels;
use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::{
    CudaSlice, CudaStream, CudaView, DeviceRepr, ValidAsZeroBits,
};
use candle_core::cuda::{CudaDevice, CudaStorage};
use candle_core::op::BackpropOp;
use candle_core::{Layout, Result, Shape, Storage, Tensor};
use candle_nn::BatchNorm;
use std::collections::HashMap;
use std::ops::{Deref, Range};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// A batch-norm's batch statistics on the device: `5·C` floats, mean, biased variance,
/// `1/sqrt(var + eps)`, and the forward's scale and shift (`kernels.cu`, `ST_*`).
pub type DeviceStats = Arc<CudaSlice<f32>>;

/// Idle device buffers by length, and the key of the workload they were sized for.
struct Idle<T> {
    by_len: HashMap<usize, Vec<CudaSlice<T>>>,
    key: Vec<usize>,
}

/// A pool of device buffers reused from step to step (fresh allocations also come from the
/// driver's pool, which keeps freed memory: see `device::open`).
struct Pool<T>(Mutex<Idle<T>>);

impl<T: DeviceRepr> Pool<T> {
    fn new() -> Self {
        Self(Mutex::new(Idle {
            by_len: HashMap::new(),
            key: Vec::new(),
        }))
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Idle<T>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A buffer of `len` (at least 1) elements, contents unspecified. When the device is out of
    /// memory, the idle buffers are freed and the allocation tried once more.
    fn take(&self, stream: &Arc<CudaStream>, len: usize) -> Result<CudaSlice<T>> {
        let len = len.max(1);
        if let Some(buf) = self.idle().by_len.get_mut(&len).and_then(Vec::pop) {
            return Ok(buf);
        }
        // SAFETY: callers write every element before reading it (the `NetKernels`
        // contract); the tests poison fresh buffers to prove it.
        match unsafe { stream.alloc::<T>(len) } {
            Ok(buf) => Ok(buf),
            Err(_) => {
                self.idle().by_len.clear();
                unsafe { stream.alloc::<T>(len) }.map_err(candle_core::Error::wrap)
            }
        }
    }

    fn give(&self, buf: CudaSlice<T>) {
        self.idle().by_len.entry(buf.len()).or_default().push(buf);
    }

    /// Frees every idle buffer unless the pool was last sized for `key`, so that only one
    /// workload's buffers (training batches, or validation's) are kept at a time.
    fn reserve_for(&self, key: &[usize]) {
        let mut idle = self.idle();
        if idle.key != key {
            idle.by_len.clear();
            idle.key = key.to_vec();
        }
    }
}

/// Filters start on a 16-byte boundary for cuDNN's vectorised kernels: 4 floats.
const FILTER_ALIGN: usize = 4;

struct Inner {
    dev: CudaDevice,
    kernels: Kernels,
    convs: Mutex<Convs>,
    floats: Pool<f32>,
    sums: Pool<f64>,
}

/// One device's kernels, cuDNN plans and buffers; clones share them. Its mutexes make it safe
/// to share, but its launches go to the calling thread's stream (candle's per-thread default
/// stream), so a device is driven from one host thread at a time, as the trainer does.
#[derive(Clone)]
pub struct CudaNet(Arc<Inner>);

/// A contiguous f32 input: the storage's own buffer, or a copy when the layout starts inside
/// it or covers only part of it.
pub(crate) enum Input<'a> {
    Borrowed(&'a CudaSlice<f32>),
    Owned(CudaSlice<f32>),
}

impl Deref for Input<'_> {
    type Target = CudaSlice<f32>;

    fn deref(&self) -> &CudaSlice<f32> {
        match self {
            Input::Borrowed(s) => s,
            Input::Owned(s) => s,
        }
    }
}

/// Threads per channel for a per-channel sum over `count` values: a multiple of 32 (a warp
/// never spans two channels), about 2,048 threads a channel in all and at least 32 values a
/// thread.
fn parts(channels: usize, count: usize) -> usize {
    let warps = (2048usize.div_ceil(channels.max(1)))
        .min(count / 2048)
        .max(1);
    32 * warps
}

/// A `(B, C, H·W)` activation's sizes as the kernels' 32-bit arguments, and the thread layout of
/// its per-channel sums.
struct ChannelDims {
    batch: u32,
    channels: u32,
    plane: u32,
    /// Elements.
    n: u32,
    /// Threads per channel of the sums ([`parts`]).
    parts: u32,
    /// Threads of the sums in all.
    threads: usize,
}

impl ChannelDims {
    fn of(s: &BnShape) -> Result<Self> {
        let parts = parts(s.channels, s.batch * s.plane);
        Ok(Self {
            batch: index(s.batch, "batch")?,
            channels: index(s.channels, "channels")?,
            plane: index(s.plane, "plane")?,
            n: index(s.batch * s.channels * s.plane, "activation")?,
            parts: index(parts, "parts")?,
            threads: s.channels * parts,
        })
    }
}

impl CudaNet {
    /// The shared state of `dev`, created on first use.
    pub fn for_device(dev: &CudaDevice) -> Result<Self> {
        static NETS: OnceLock<Mutex<HashMap<candle_core::cuda::DeviceId, CudaNet>>> =
            OnceLock::new();
        let mut nets = NETS
            .get_or_init(|| Mutex::new(HashMap::new()))
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(net) = nets.get(&dev.id()) {
            return Ok(net.clone());
        }
        let stream = dev.cuda_stream();
        let net = CudaNet(Arc::new(Inner {
            dev: dev.clone(),
            kernels: Kernels::new(dev),
            convs: Mutex::new(Convs::new(stream)?),
            floats: Pool::new(),
            sums: Pool::new(),
        }));
        nets.insert(dev.id(), net.clone());
        Ok(net)
    }

    /// The shared state of a storage's device.
    pub(crate) fn for_storage(s: &CudaStorage) -> Result<Self> {
        Self::for_device(s.device())
    }

    fn stream(&self) -> &Arc<CudaStream> {
        self.0.kernels.stream()
    }

    pub(crate) fn kernels(&self) -> &Kernels {
        &self.0.kernels
    }

    fn convs(&self) -> std::sync::MutexGuard<'_, Convs> {
        self.0.convs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps only the buffers of the workload `key` (say, the input's shape) in the pools.
    pub(crate) fn reserve_for(&self, key: &[usize]) {
        self.0.floats.reserve_for(key);
        self.0.sums.reserve_for(key);
    }

    /// Runs `f` on the filter `p[w]`, or on an aligned copy of it when it does not start on a
    /// 16-byte boundary (a weight of an odd-width layer in the packed parameters).
    fn with_filter<R>(
        &self,
        p: &CudaSlice<f32>,
        w: Range<usize>,
        f: impl FnOnce(&CudaView<'_, f32>) -> Result<R>,
    ) -> Result<R> {
        if w.start.is_multiple_of(FILTER_ALIGN) {
            return f(&p.slice(w));
        }
        let mut copy = self.0.floats.take(self.stream(), w.len())?;
        self.stream()
            .memcpy_dtod(&p.slice(w), &mut copy)
            .map_err(candle_core::Error::wrap)?;
        let out = f(&copy.slice(..));
        self.0.floats.give(copy);
        out
    }

    /// The f32 elements `l` covers in `s`.
    pub(crate) fn input<'a>(&self, s: &'a CudaStorage, l: &Layout) -> Result<Input<'a>> {
        let slice = s.as_cuda_slice::<f32>()?;
        let (start, end) = l
            .contiguous_offsets()
            .ok_or(candle_core::Error::RequiresContiguous { op: "lungseg-unet" })?;
        if start == 0 && end == slice.len() {
            return Ok(Input::Borrowed(slice));
        }
        let mut copy = self.0.floats.take(self.stream(), end - start)?;
        self.stream()
            .memcpy_dtod(&slice.slice(start..end), &mut copy)
            .map_err(candle_core::Error::wrap)?;
        Ok(Input::Owned(copy))
    }

    /// [`CudaNet::input`] of a tensor's storage.
    pub(crate) fn with_tensor<R>(
        &self,
        t: &Tensor,
        f: impl FnOnce(&CudaSlice<f32>) -> Result<R>,
    ) -> Result<R> {
        let t = t.contiguous()?;
        let (storage, layout) = t.storage_and_layout();
        let Storage::Cuda(s) = &*storage else {
            candle_core::bail!("lungseg-unet: not a CUDA tensor")
        };
        let input = self.input(s, layout)?;
        f(&input)
    }

    /// A candle storage owning `buf`.
    pub(crate) fn storage(&self, buf: CudaSlice<f32>) -> CudaStorage {
        CudaStorage::wrap_cuda_slice(buf, self.0.dev.clone())
    }

    /// A tensor of `shape` owning `buf`, recorded for no backward.
    pub(crate) fn tensor(&self, buf: CudaSlice<f32>, shape: &Shape) -> Result<Tensor> {
        if buf.len() != shape.elem_count() {
            candle_core::bail!("lungseg-unet: {} values for {shape:?}", buf.len())
        }
        let storage = Storage::Cuda(self.storage(buf));
        Ok(Tensor::from_storage(
            storage,
            shape.clone(),
            BackpropOp::none(),
            false,
        ))
    }

    /// Zeroed double accumulators for `channels` pairs of sums.
    fn sums(&self, channels: usize) -> Result<CudaSlice<f64>> {
        let mut sums = self.0.sums.take(self.stream(), 2 * channels)?;
        zero(self.stream(), &mut sums)?;
        Ok(sums)
    }

    /// `sums[2c], sums[2c+1]` += the (shifted) first and second moments of channel c of `x`.
    fn channel_moments(
        &self,
        x: &CudaSlice<f32>,
        sums: &mut CudaSlice<f64>,
        s: &BnShape,
        shifted: bool,
    ) -> Result<()> {
        let (d, shifted) = (ChannelDims::of(s)?, i32::from(shifted));
        launch!(self.kernels(), "lungseg_channel_moments", d.threads;
            x, sums, &d.batch, &d.channels, &d.plane, &d.parts, &shifted);
        Ok(())
    }

    /// `z = max(0, y·scale + shift)` with `stats`' scale and shift (`kernels.cu`'s layout).
    fn bn_relu_apply(
        &self,
        d: &ChannelDims,
        y: &CudaSlice<f32>,
        stats: &CudaSlice<f32>,
        z: &mut CudaSlice<f32>,
    ) -> Result<()> {
        launch!(self.kernels(), "lungseg_bn_relu_apply", d.n as usize;
            y, stats, z, &d.channels, &d.plane, &d.n);
        Ok(())
    }

    /// Fills `buf` with `v` (the tests' NaN poisoning).
    pub(crate) fn fill(&self, buf: &mut CudaSlice<f32>, v: f32) -> Result<()> {
        let n = index(buf.len(), "buffer")?;
        launch!(self.kernels(), "lungseg_fill", buf.len(); buf, &v, &n);
        Ok(())
    }
}

fn zero<T: DeviceRepr + ValidAsZeroBits>(
    stream: &Arc<CudaStream>,
    buf: &mut CudaSlice<T>,
) -> Result<()> {
    stream.memset_zeros(buf).map_err(candle_core::Error::wrap)
}

/// A convolution's output viewed per channel for its bias.
fn out_channels(s: &ConvShape) -> BnShape {
    BnShape {
        batch: s.batch,
        channels: s.c_out,
        plane: s.h_out() * s.w_out(),
    }
}

/// A pooling's input height and width and its output count as kernel arguments, and the
/// output count for the launch.
fn pool_dims(s: &PoolShape) -> Result<(u32, u32, u32, usize)> {
    let n_out = s.planes * s.h_out() * s.w_out();
    Ok((
        index(s.h, "height")?,
        index(s.w, "width")?,
        index(n_out, "pooled")?,
        n_out,
    ))
}

fn split(r: Range<usize>, first: usize) -> (Range<usize>, Range<usize>) {
    (r.start..r.start + first, r.start + first..r.end)
}

impl NetKernels for CudaNet {
    type Slice = CudaSlice<f32>;
    type Buf = CudaSlice<f32>;
    type Stats = DeviceStats;

    fn take(&self, len: usize) -> Result<CudaSlice<f32>> {
        let mut buf = self.0.floats.take(self.stream(), len)?;
        if cfg!(test) {
            self.fill(&mut buf, f32::NAN)?;
        }
        Ok(buf)
    }

    fn give(&self, buf: CudaSlice<f32>) {
        self.0.floats.give(buf)
    }

    fn conv_forward(
        &self,
        s: &ConvShape,
        x: &CudaSlice<f32>,
        p: &CudaSlice<f32>,
        wb: Range<usize>,
        y: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let (w, b) = split(wb, s.w_len());
        self.with_filter(p, w, |filter| self.convs().forward(s, x, filter, y))?;
        let (d, bias) = (ChannelDims::of(&out_channels(s))?, p.slice(b));
        launch!(self.kernels(), "lungseg_add_channel_bias", s.y_len();
            y, &bias, &d.channels, &d.plane, &d.n);
        Ok(())
    }

    fn conv_backward_input(
        &self,
        s: &ConvShape,
        dy: &CudaSlice<f32>,
        p: &CudaSlice<f32>,
        wb: Range<usize>,
        dx: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let (w, _b) = split(wb, s.w_len());
        self.with_filter(p, w, |filter| self.convs().backward_data(s, dy, filter, dx))
    }

    fn conv_backward_weight(
        &self,
        s: &ConvShape,
        x: &CudaSlice<f32>,
        dy: &CudaSlice<f32>,
        dp: &mut CudaSlice<f32>,
        wb: Range<usize>,
    ) -> Result<()> {
        let (w, b) = split(wb, s.w_len());
        if w.start.is_multiple_of(FILTER_ALIGN) {
            self.convs()
                .backward_filter(s, x, dy, &mut dp.slice_mut(w))?;
        } else {
            // An odd-width layer's weight: cuDNN writes an aligned buffer, copied into place.
            let mut dw = self.0.floats.take(self.stream(), w.len())?;
            self.convs().backward_filter(s, x, dy, &mut dw)?;
            self.stream()
                .memcpy_dtod(&dw, &mut dp.slice_mut(w))
                .map_err(candle_core::Error::wrap)?;
            self.0.floats.give(dw);
        }
        let oc = out_channels(s);
        let mut sums = self.sums(oc.channels)?;
        self.channel_moments(dy, &mut sums, &oc, false)?;
        let d = ChannelDims::of(&oc)?;
        let mut db = dp.slice_mut(b);
        launch!(self.kernels(), "lungseg_channel_totals", oc.channels;
            &sums, &mut db, &d.channels);
        self.0.sums.give(sums);
        Ok(())
    }

    fn bn_relu_forward(
        &self,
        s: &BnShape,
        y: &CudaSlice<f32>,
        p: &CudaSlice<f32>,
        affine: Range<usize>,
        eps: f64,
        z: &mut CudaSlice<f32>,
    ) -> Result<DeviceStats> {
        let mut sums = self.sums(s.channels)?;
        self.channel_moments(y, &mut sums, s, true)?;
        let mut stats = self.0.floats.take(self.stream(), 5 * s.channels)?;
        let (d, gamma_beta) = (ChannelDims::of(s)?, p.slice(affine));
        launch!(self.kernels(), "lungseg_bn_forward_stats", s.channels;
            &sums, y, &gamma_beta, &mut stats, &d.batch, &d.channels, &d.plane, &eps);
        self.0.sums.give(sums);
        self.bn_relu_apply(&d, y, &stats, z)?;
        Ok(Arc::new(stats))
    }

    fn bn_relu_backward(
        &self,
        s: &BnShape,
        y: &CudaSlice<f32>,
        dz: &CudaSlice<f32>,
        p: &CudaSlice<f32>,
        affine: Range<usize>,
        stats: &DeviceStats,
        dy: &mut CudaSlice<f32>,
        dp: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let d = ChannelDims::of(s)?;
        let stats: &CudaSlice<f32> = stats;
        let mut sums = self.sums(s.channels)?;
        launch!(self.kernels(), "lungseg_bn_backward_moments", d.threads;
            y, dz, stats, &mut sums, &d.batch, &d.channels, &d.plane, &d.parts);
        let mut coef = self.0.floats.take(self.stream(), 3 * s.channels)?;
        let (gamma_beta, mut d_gamma_beta) = (p.slice(affine.clone()), dp.slice_mut(affine));
        launch!(self.kernels(), "lungseg_bn_backward_coefficients", s.channels;
            &sums, stats, &gamma_beta, &mut coef, &mut d_gamma_beta, &d.batch, &d.channels,
            &d.plane);
        self.0.sums.give(sums);
        launch!(self.kernels(), "lungseg_bn_backward_apply", d.n as usize;
            y, dz, stats, &coef, dy, &d.channels, &d.plane, &d.n);
        self.0.floats.give(coef);
        Ok(())
    }

    fn bn_relu_eval(
        &self,
        s: &BnShape,
        y: &CudaSlice<f32>,
        p: &CudaSlice<f32>,
        affine: Range<usize>,
        running: &CudaSlice<f32>,
        stats: Range<usize>,
        eps: f64,
        z: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let d = ChannelDims::of(s)?;
        let mut folded = self.0.floats.take(self.stream(), 5 * s.channels)?;
        let (gamma_beta, running) = (p.slice(affine), running.slice(stats));
        launch!(self.kernels(), "lungseg_bn_eval_stats", s.channels;
            &gamma_beta, &running, &mut folded, &d.channels, &eps);
        self.bn_relu_apply(&d, y, &folded, z)?;
        self.0.floats.give(folded);
        Ok(())
    }

    fn max_pool_forward(
        &self,
        s: &PoolShape,
        x: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let (h, w, n, n_out) = pool_dims(s)?;
        launch!(self.kernels(), "lungseg_max_pool_forward", n_out; x, y, &h, &w, &n);
        Ok(())
    }

    fn max_pool_backward_add(
        &self,
        s: &PoolShape,
        x: &CudaSlice<f32>,
        dy: &CudaSlice<f32>,
        dx: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let (h, w, n, n_out) = pool_dims(s)?;
        launch!(self.kernels(), "lungseg_max_pool_backward_add", n_out; x, dy, dx, &h, &w, &n);
        Ok(())
    }

    fn up_cat_forward(
        &self,
        s: &UpCatShape,
        low: &CudaSlice<f32>,
        skip: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let (c_low, c_skip) = (index(s.c_low, "channels")?, index(s.c_skip, "channels")?);
        let (h, w, n) = (
            index(s.h, "height")?,
            index(s.w, "width")?,
            index(s.out_len(), "output")?,
        );
        launch!(self.kernels(), "lungseg_upsample_cat_forward", s.out_len();
            low, skip, out, &c_low, &c_skip, &h, &w, &n);
        Ok(())
    }

    fn up_cat_backward(
        &self,
        s: &UpCatShape,
        g: &CudaSlice<f32>,
        d_low: &mut CudaSlice<f32>,
        d_skip: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let (c_low, c_skip) = (index(s.c_low, "channels")?, index(s.c_skip, "channels")?);
        let (h, w) = (index(s.h, "height")?, index(s.w, "width")?);
        let low_len = s.batch * s.c_low * s.h * s.w;
        let skip_len = s.batch * s.c_skip * 4 * s.h * s.w;
        let (n_low, n_skip) = (index(low_len, "gradient")?, index(skip_len, "gradient")?);
        launch!(self.kernels(), "lungseg_upsample_cat_backward", low_len + skip_len;
            g, d_low, d_skip, &c_low, &c_skip, &h, &w, &n_low, &n_skip);
        Ok(())
    }
}

/// `bn`'s running mean and variance blended with a training forward's batch statistics
/// (`n` values a channel; the variance unbiased by `n / (n - 1)`), in place on the device.
pub fn update_running_stats(bn: &BatchNorm, stats: &DeviceStats, n: usize) -> Result<()> {
    let unbias = n as f64 / (n as f64 - 1.0);
    let channels = bn.running_mean().elem_count();
    let (mean, var) = (0..channels, channels..2 * channels);
    blend(bn.running_mean(), stats, mean, bn.momentum(), 1.0)?;
    blend(bn.running_var(), stats, var, bn.momentum(), unbias)
}

/// `running = (1 - momentum)·running + momentum·factor·stats[range]`, in place.
fn blend(
    running: &Tensor,
    stats: &DeviceStats,
    range: Range<usize>,
    momentum: f64,
    factor: f64,
) -> Result<()> {
    struct Blend<'a> {
        stats: &'a CudaSlice<f32>,
        range: Range<usize>,
        momentum: f64,
        factor: f64,
    }
    impl candle_core::InplaceOp1 for Blend<'_> {
        fn name(&self) -> &'static str {
            "lungseg-bn-running-update"
        }

        fn cpu_fwd(&self, _: &mut candle_core::CpuStorage, _: &Layout) -> Result<()> {
            candle_core::bail!("lungseg-bn-running-update: the statistics are on CUDA")
        }

        fn cuda_fwd(&self, s: &mut CudaStorage, l: &Layout) -> Result<()> {
            let net = CudaNet::for_storage(s)?;
            let (start, end) =
                l.contiguous_offsets()
                    .ok_or(candle_core::Error::RequiresContiguous {
                        op: "lungseg-bn-running-update",
                    })?;
            if end - start != self.range.len() {
                candle_core::bail!("lungseg-bn-running-update: running statistic size")
            }
            let channels = index(self.range.len(), "channels")?;
            let (momentum, factor) = (self.momentum, self.factor);
            let mut running = s.as_cuda_slice_mut::<f32>()?.slice_mut(start..end);
            let batch = self.stats.slice(self.range.clone());
            launch!(net.kernels(), "lungseg_bn_running_update", self.range.len();
                &mut running, &batch, &channels, &momentum, &factor);
            Ok(())
        }
    }
    running.inplace_op1(&Blend {
        stats,
        range,
        momentum,
        factor,
    })
}
