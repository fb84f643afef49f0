//! Direct stride-1 2-D convolution on NCHW f32 slices (forward, input gradient, weight gradient)
//! with register-tiled SIMD kernels and no im2col matrix.
//!
//! Each task copies its band of input rows, zero-padded, into a per-thread slab of width
//! `Wp = W + 2p`. In that slab the input of kernel tap `(i, j)` for output `(r, c)` sits at the
//! fixed offset `i·Wp + j` from `(r, c)`, so every tap is a plain unaligned vector load:
//!
//! - **forward and input gradient** ([`Correlation`]): a tile of `MR = 8` output channels by
//!   `NV` vectors of one output row, accumulated over `(channel, tap)`; weights broadcast from a
//!   packed copy. The input gradient is the same correlation of the padded output gradient with
//!   the kernel flipped and its channel axes swapped, padding `k - 1 - p`.
//! - **weight gradient** ([`conv2d_backward_weight`]): vectors over output channels of the
//!   transposed output gradient, times broadcasts of 9 `(channel, tap)` rows of the slab, summed
//!   over the band's positions, so no horizontal sums are needed.
//!
//! On this machine's Zen 4 cores both reach 105-114 GFLOP/s per core with AVX-512 in a
//! stand-alone test (about 95 % of the FMA peak), against 31 for the `gemm` crate on im2col
//! matrices of the same layers (BENCHMARKS.md).

use super::par::{row_tasks, RowTask, SharedOut};
use super::scratch::Scratch;
use super::simd::{self, Isa, Kernel, Simd};
use rayon::prelude::*;

/// Output channels per register tile of the correlation kernel.
const MR: usize = 8;
/// `(channel, tap)` rows per register tile of the weight-gradient kernel.
const NB: usize = 9;
/// Positions per cache block of the weight-gradient kernel.
const QC: usize = 256;
/// Zero floats after a slab, so that the widest tile may read past the last row.
const SLACK: usize = 3 * 16 + 64;

/// A stride-1, dilation-1, one-group convolution with a square kernel and symmetric zero
/// padding, on NCHW tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvShape {
    /// Images.
    pub batch: usize,
    /// Input channels.
    pub c_in: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel size.
    pub k: usize,
    /// Zero padding on each side.
    pub pad: usize,
}

impl ConvShape {
    /// Output height.
    pub fn h_out(&self) -> usize {
        self.h + 2 * self.pad + 1 - self.k
    }

    /// Output width.
    pub fn w_out(&self) -> usize {
        self.w + 2 * self.pad + 1 - self.k
    }

    /// Elements of the input.
    pub fn x_len(&self) -> usize {
        self.batch * self.c_in * self.h * self.w
    }

    /// Elements of the output.
    pub fn y_len(&self) -> usize {
        self.batch * self.c_out * self.h_out() * self.w_out()
    }

    /// Elements of the weight `(c_out, c_in, k, k)`.
    pub fn w_len(&self) -> usize {
        self.c_out * self.c_in * self.k * self.k
    }

    /// Why these kernels cannot run this shape, if they cannot: the padding must be below the
    /// kernel size (so that the input gradient is a correlation too) and the output non-empty.
    pub fn unsupported(&self) -> Option<String> {
        if self.k == 0 || self.pad >= self.k {
            return Some(format!("kernel {} with padding {}", self.k, self.pad));
        }
        if self.h + 2 * self.pad < self.k || self.w + 2 * self.pad < self.k {
            return Some(format!(
                "input {}x{} is smaller than the kernel",
                self.h, self.w
            ));
        }
        if self.c_in == 0 || self.c_out == 0 {
            return Some("no channels".to_string());
        }
        None
    }

    /// The input-gradient correlation's shape: the output gradient padded by `k - 1 - p`.
    fn transposed(&self) -> ConvShape {
        ConvShape {
            batch: self.batch,
            c_in: self.c_out,
            h: self.h_out(),
            w: self.w_out(),
            c_out: self.c_in,
            k: self.k,
            pad: self.k - 1 - self.pad,
        }
    }
}

/// What the forward kernel does to each output channel's sums before storing them.
#[derive(Debug, Clone, Copy)]
pub enum Epilogue<'a> {
    /// `y = conv + bias[co]`.
    Bias(&'a [f32]),
    /// `y = max(0, conv·scale[co] + shift[co])`: an eval-mode batch-norm and ReLU folded in.
    ScaleShiftRelu {
        /// Per output channel.
        scale: &'a [f32],
        /// Per output channel.
        shift: &'a [f32],
    },
}

/// `y = epilogue(conv(x, weight))`.
///
/// # Shapes
/// `x`: `(B, C_in, H, W)`, `weight`: `(C_out, C_in, k, k)`, per-channel epilogue vectors
/// `(C_out)` → `y`: `(B, C_out, H_out, W_out)`, every element written.
///
/// # Panics
/// If a slice length disagrees with `shape` or the shape is [`ConvShape::unsupported`].
pub fn conv2d_forward(
    isa: Isa,
    shape: &ConvShape,
    x: &[f32],
    weight: &[f32],
    epilogue: Epilogue<'_>,
    y: &mut [f32],
) {
    check(shape, x.len(), weight.len(), y.len());
    let (scale, shift, relu) = match epilogue {
        Epilogue::Bias(b) => (None, b, false),
        Epilogue::ScaleShiftRelu { scale, shift } => (Some(scale), shift, true),
    };
    assert!(shift.len() == shape.c_out && scale.is_none_or(|s| s.len() == shape.c_out));
    let kk = shape.k * shape.k;
    let packed = pack(shape.c_out, shape.c_in, kk, |m, c, t| {
        weight[(m * shape.c_in + c) * kk + t]
    });
    Correlation {
        isa,
        shape: *shape,
        src: x,
        packed: &packed,
        scale,
        shift,
        relu,
    }
    .run(y);
}

/// `dx = ∂L/∂x` of [`conv2d_forward`], from `gy = ∂L/∂y`.
///
/// # Shapes
/// `gy`: `(B, C_out, H_out, W_out)`, `weight`: `(C_out, C_in, k, k)` → `dx`: `(B, C_in, H, W)`.
pub fn conv2d_backward_input(
    isa: Isa,
    shape: &ConvShape,
    gy: &[f32],
    weight: &[f32],
    dx: &mut [f32],
) {
    check(shape, dx.len(), weight.len(), gy.len());
    let t = shape.transposed();
    let kk = shape.k * shape.k;
    // dx[ci] = Σ_co gy_pad[co] ⋆ flip(W[co, ci]): channel axes swapped, taps reversed.
    let packed = pack(shape.c_in, shape.c_out, kk, |ci, co, tap| {
        weight[(co * shape.c_in + ci) * kk + (kk - 1 - tap)]
    });
    let zeros = vec![0.0; shape.c_in];
    Correlation {
        isa,
        shape: t,
        src: gy,
        packed: &packed,
        scale: None,
        shift: &zeros,
        relu: false,
    }
    .run(dx);
}

fn check(shape: &ConvShape, x: usize, w: usize, y: usize) {
    if let Some(why) = shape.unsupported() {
        panic!("conv2d kernel: unsupported shape {shape:?}: {why}");
    }
    assert_eq!(x, shape.x_len(), "conv2d kernel: input length");
    assert_eq!(w, shape.w_len(), "conv2d kernel: weight length");
    assert_eq!(y, shape.y_len(), "conv2d kernel: output length");
}

/// Weights `a(m, c, tap)` in the order the correlation tile reads them: blocks of [`MR`] rows
/// `m`, then channel, then tap, then the block's rows; rows past `m_len` are zero.
fn pack(m_len: usize, c_len: usize, kk: usize, a: impl Fn(usize, usize, usize) -> f32) -> Vec<f32> {
    let blocks = m_len.div_ceil(MR);
    let mut out = vec![0.0; blocks * c_len * kk * MR];
    for (i, v) in out.iter_mut().enumerate() {
        let r = i % MR;
        let t = (i / MR) % kk;
        let c = (i / (MR * kk)) % c_len;
        let m = (i / (MR * kk * c_len)) * MR + r;
        if m < m_len {
            *v = a(m, c, t);
        }
    }
    out
}

/// A task's band of input rows, zero-padded, in a per-thread scratch buffer: `c_in` planes of
/// `(band + k - 1) × wp` (`wp = w + 2·pad`), padded row `pr` being source row `pr - pad` of the
/// task's image, then [`SLACK`] zeros (so the widest tile may read past the last row).
struct Slab {
    buf: Scratch,
    /// Padded row width.
    wp: usize,
    /// Floats per channel plane.
    plane: usize,
}

impl Slab {
    /// The slab of `task` for input `x` (the whole batch) of `s`.
    fn new(s: &ConvShape, x: &[f32], task: RowTask) -> Slab {
        let (h, w, pad) = (s.h, s.w, s.pad);
        let wp = w + 2 * pad;
        let rows = task.len() + s.k - 1;
        let plane = rows * wp;
        let image = &x[task.image * s.c_in * h * w..][..s.c_in * h * w];
        let mut buf = Scratch::take(s.c_in * plane + SLACK);
        let (planes, slack) = buf.split_at_mut(s.c_in * plane);
        for (c, dst) in planes.chunks_exact_mut(plane).enumerate() {
            for (rr, row) in dst.chunks_exact_mut(wp).enumerate() {
                let source = (task.start + rr).checked_sub(pad).filter(|&r| r < h);
                match source {
                    Some(r) => {
                        row[..pad].fill(0.0);
                        row[pad..pad + w].copy_from_slice(&image[(c * h + r) * w..][..w]);
                        row[pad + w..].fill(0.0);
                    }
                    None => row.fill(0.0),
                }
            }
        }
        slack.fill(0.0);
        Slab { buf, wp, plane }
    }

    fn as_ptr(&self) -> *const f32 {
        self.buf.as_ptr()
    }
}

/// The output gradient of one image: `c_out` planes of `h_out × w_out`.
fn image_of<'a>(s: &ConvShape, gy: &'a [f32], image: usize) -> &'a [f32] {
    let len = s.c_out * s.h_out() * s.w_out();
    &gy[image * len..][..len]
}

/// `out[b, m, r, c] = epi_m(Σ_{ch, i, j} a[m, ch, i, j] · src_pad[b, ch, r + i, c + j])` for
/// `shape` (here `c_in` counts the source channels and `c_out` the outputs `m`).
struct Correlation<'a> {
    isa: Isa,
    shape: ConvShape,
    src: &'a [f32],
    /// [`pack`]ed `a`.
    packed: &'a [f32],
    scale: Option<&'a [f32]>,
    shift: &'a [f32],
    relu: bool,
}

impl Correlation<'_> {
    fn run(&self, out: &mut [f32]) {
        let s = &self.shape;
        let out_ptr = SharedOut::new(out);
        row_tasks(s.batch, s.h_out()).par_iter().for_each(|task| {
            simd::run_on(
                self.isa,
                CorrelationTask {
                    c: self,
                    task: *task,
                    out: out_ptr,
                },
            )
        });
    }
}

/// One band of output rows of a [`Correlation`]; writes only that band of `out` (for every
/// output channel), which is what makes the tasks' writes disjoint.
struct CorrelationTask<'a, 'b> {
    c: &'b Correlation<'a>,
    task: RowTask,
    out: SharedOut,
}

impl Kernel for CorrelationTask<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd>(self) {
        if S::LANES == 16 && self.c.shape.w_out() > 16 {
            self.rows::<S, 2>()
        } else if S::LANES == 1 {
            self.rows::<S, 4>()
        } else {
            self.rows::<S, 1>()
        }
    }
}

impl CorrelationTask<'_, '_> {
    #[inline(always)]
    fn rows<S: Simd, const NV: usize>(&self) {
        let s = &self.c.shape;
        let (ho, wo, k) = (s.h_out(), s.w_out(), s.k);
        let slab = Slab::new(s, self.c.src, self.task);
        let (wp, plane) = (slab.wp, slab.plane);
        let offsets: Vec<usize> = (0..k * k).map(|t| (t / k) * wp + t % k).collect();
        let kk_c = s.c_in * k * k;
        let width = NV * S::LANES;
        for rr in 0..self.task.len() {
            let row = self.task.start + rr;
            for c0 in (0..wo).step_by(width) {
                let cols = width.min(wo - c0);
                for block in 0..s.c_out.div_ceil(MR) {
                    // SAFETY: the tile reads `c_in` planes at offsets below
                    // (k-1)·wp + k-1 + width from (rr, c0) of the slab, within its planes
                    // plus SLACK; `packed` holds `kk_c · MR` floats per block.
                    let acc = unsafe {
                        correlation_tile::<S, NV>(
                            self.c.packed.as_ptr().add(block * kk_c * MR),
                            s.c_in,
                            slab.as_ptr().add(rr * wp + c0),
                            plane,
                            &offsets,
                        )
                    };
                    let first = (self.task.image * s.c_out + block * MR) * ho * wo + row * wo + c0;
                    // SAFETY: rows `block·MR ..` of (image, row, c0 .. c0+cols) lie in this
                    // task's band of `out`.
                    unsafe {
                        self.store::<S, NV>(&acc, block * MR, first, ho * wo, cols);
                    }
                }
            }
        }
    }

    /// Applies the epilogue to a tile and stores its first `cols` columns for the channels
    /// `m0 .. m0 + MR` that exist.
    ///
    /// # Safety
    /// `first + r·stride + cols` must lie in this task's part of `out` for those rows.
    #[inline(always)]
    unsafe fn store<S: Simd, const NV: usize>(
        &self,
        acc: &[[S::V; NV]; MR],
        m0: usize,
        first: usize,
        stride: usize,
        cols: usize,
    ) {
        let rows = MR.min(self.c.shape.c_out - m0);
        for (r, acc_r) in acc.iter().enumerate().take(rows) {
            let m = m0 + r;
            let shift = S::splat(self.c.shift[m]);
            let scale = S::splat(self.c.scale.map_or(1.0, |s| s[m]));
            let dst = self.out.at(first + r * stride);
            for (v, &a) in acc_r.iter().enumerate() {
                let mut y = S::mul_add(a, scale, shift);
                if self.c.relu {
                    y = S::max(y, S::zero());
                }
                let at = v * S::LANES;
                if at + S::LANES <= cols {
                    S::store(dst.add(at), y);
                } else if at < cols {
                    S::store_first(dst.add(at), y, cols - at);
                }
            }
        }
    }
}

/// The register tile of [`Correlation`]: `MR` output channels × `NV` vectors of one row,
/// summed over `channels` planes (stride `plane`) and the taps at `offsets` from `x`; the
/// weights are `MR` broadcasts per `(channel, tap)` from `a`.
///
/// # Safety
/// `a` must hold `channels · offsets.len() · MR` floats and every `x + ch·plane + offset`
/// must start `NV · LANES` readable floats.
#[inline(always)]
unsafe fn correlation_tile<S: Simd, const NV: usize>(
    a: *const f32,
    channels: usize,
    x: *const f32,
    plane: usize,
    offsets: &[usize],
) -> [[S::V; NV]; MR] {
    let mut acc = [[S::zero(); NV]; MR];
    let mut a = a;
    for ch in 0..channels {
        let xc = x.add(ch * plane);
        for &o in offsets {
            let p = xc.add(o);
            let mut b = [S::zero(); NV];
            for (v, bv) in b.iter_mut().enumerate() {
                *bv = S::load(p.add(v * S::LANES));
            }
            for acc_r in acc.iter_mut() {
                let av = S::splat(*a);
                a = a.add(1);
                for (acc_rv, &bv) in acc_r.iter_mut().zip(&b) {
                    *acc_rv = S::mul_add(av, bv, *acc_rv);
                }
            }
        }
    }
    acc
}

/// `dw = ∂L/∂weight` and `db = ∂L/∂bias` of [`conv2d_forward`] with a bias epilogue, from the
/// input `x` and `gy = ∂L/∂y`.
///
/// # Shapes
/// `x`: `(B, C_in, H, W)`, `gy`: `(B, C_out, H_out, W_out)` → `dw`: `(C_out, C_in, k, k)`,
/// `db`: `(C_out)`, every element written.
pub fn conv2d_backward_weight(
    isa: Isa,
    shape: &ConvShape,
    x: &[f32],
    gy: &[f32],
    dw: &mut [f32],
    db: &mut [f32],
) {
    check(shape, x.len(), dw.len(), gy.len());
    assert_eq!(db.len(), shape.c_out, "conv2d kernel: bias length");
    let rows = shape.c_in * shape.k * shape.k;
    if shape.c_out < 32 || !shape.c_out.is_multiple_of(16) || shape.c_in == 1 {
        // Narrow layers: vectors along the image rows (no lanes wasted on missing channels).
        // Also one input channel (the first layer), whose few products cannot pay for the
        // output gradient's transpose that the channel vectors need.
        let sums = sum_over_tasks(shape, shape.c_out * (rows + 1), |task, acc| {
            simd::run_on(
                isa,
                PositionWeightGradTask {
                    shape,
                    x,
                    gy,
                    task,
                    acc,
                },
            )
        });
        dw.copy_from_slice(&sums[..shape.c_out * rows]);
        db.copy_from_slice(&sums[shape.c_out * rows..][..shape.c_out]);
        return;
    }
    let lanes = isa.lanes();
    let nv = if shape.c_out >= 2 * lanes { 2 } else { 1 };
    let cop = shape.c_out.div_ceil(nv * lanes) * nv * lanes;
    // Accumulators: `(c_in·k², cop)` sums, NB rows for a last partial group to spill into,
    // then the bias sums.
    let sums = sum_over_tasks(shape, (rows + NB) * cop + cop, |task, acc| {
        simd::run_on(
            isa,
            WeightGradTask {
                shape,
                x,
                gy,
                task,
                cop,
                nv,
                acc,
            },
        )
    });
    for (co, dw_co) in dw.chunks_exact_mut(rows).enumerate() {
        for (n, v) in dw_co.iter_mut().enumerate() {
            *v = sums[n * cop + co];
        }
        db[co] = sums[(rows + NB) * cop + co];
    }
}

/// Runs `band(task, acc)` over the bands of [`row_tasks`], each thread adding into its own
/// zeroed accumulator of `len` floats, and returns their sum.
fn sum_over_tasks(
    shape: &ConvShape,
    len: usize,
    band: impl Fn(RowTask, &mut [f32]) + Sync,
) -> Vec<f32> {
    row_tasks(shape.batch, shape.h_out())
        .par_iter()
        .fold(
            || vec![0.0f32; len],
            |mut acc, task| {
                band(*task, &mut acc);
                acc
            },
        )
        .reduce_with(|mut a, b| {
            a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
            a
        })
        .unwrap_or_else(|| vec![0.0; len])
}

/// One band of rows of [`conv2d_backward_weight`] for narrow layers, added into `acc`
/// (`dw` then `db` layout): vectors along each output row, `MC` output channels × [`NB`]
/// `(channel, tap)` rows of accumulators, summed across lanes once per band.
struct PositionWeightGradTask<'a> {
    shape: &'a ConvShape,
    x: &'a [f32],
    gy: &'a [f32],
    task: RowTask,
    acc: &'a mut [f32],
}

impl Kernel for PositionWeightGradTask<'_> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd>(self) {
        if S::LANES == 16 {
            self.band::<S, 2>()
        } else {
            self.band::<S, 1>()
        }
    }
}

impl PositionWeightGradTask<'_> {
    #[inline(always)]
    fn band<S: Simd, const MC: usize>(self) {
        let s = self.shape;
        let (ho, wo, k, kk) = (s.h_out(), s.w_out(), s.k, s.k * s.k);
        let band = self.task.len();
        let rows = s.c_in * kk;
        let slab = Slab::new(s, self.x, self.task);
        let (wp, plane) = (slab.wp, slab.plane);
        let gy_image = image_of(s, self.gy, self.task.image);
        let acc = self.acc;
        let offset = |n: usize| (n / kk) * plane + ((n % kk) / k) * wp + n % k;
        // Rows of missing channels (past c_out) read zeros: stride 0 into this row.
        let zeros = vec![0.0f32; wo + S::LANES];
        for g0 in (0..rows).step_by(NB) {
            let offsets: [usize; NB] = std::array::from_fn(|n| offset((g0 + n).min(rows - 1)));
            for co0 in (0..s.c_out).step_by(MC) {
                let gy_rows: [(*const f32, usize); MC] = std::array::from_fn(|m| {
                    let co = co0 + m;
                    if co < s.c_out {
                        let first = (co * ho + self.task.start) * wo;
                        (gy_image[first..first + band * wo].as_ptr(), wo)
                    } else {
                        (zeros.as_ptr(), 0)
                    }
                });
                // SAFETY: gy rows hold band·wo floats (or are the zero row, stride 0); slab
                // loads start below c_in·plane + LANES + k (within SLACK).
                let sums = unsafe {
                    position_tile::<S, MC>(&gy_rows, slab.as_ptr(), &offsets, band, wp, wo)
                };
                for (m, sm) in sums.iter().enumerate().take(s.c_out - co0) {
                    for (n, &v) in sm.iter().enumerate().take(rows - g0) {
                        // SAFETY: `sum` only reads the register.
                        acc[(co0 + m) * rows + g0 + n] += unsafe { S::sum(v) };
                    }
                }
            }
        }
        let bias = &mut acc[s.c_out * rows..];
        for (co, b) in bias.iter_mut().enumerate().take(s.c_out) {
            let first = (co * ho + self.task.start) * wo;
            *b += gy_image[first..first + band * wo].iter().sum::<f32>();
        }
    }
}

/// The register tile of [`PositionWeightGradTask`]: `sums[m][n] = Σ_{rows, cols}
/// gy_m[r, c] · x[offsets[n] + r·wp + c]` over `rows` rows of `wo` columns, in vectors along
/// the row (a last partial vector reads `gy` masked: its extra lanes add nothing).
///
/// # Safety
/// `gy[m].0 + r·gy[m].1 + c` must be readable for `r < rows`, `c < wo`; `x + offsets[n] +
/// r·wp + c` must be readable for `LANES` floats at every vector start `c`.
#[inline(always)]
unsafe fn position_tile<S: Simd, const MC: usize>(
    gy: &[(*const f32, usize); MC],
    x: *const f32,
    offsets: &[usize; NB],
    rows: usize,
    wp: usize,
    wo: usize,
) -> [[S::V; NB]; MC] {
    let mut sums = [[S::zero(); NB]; MC];
    for r in 0..rows {
        let mut c = 0;
        while c < wo {
            let lanes = S::LANES.min(wo - c);
            let mut g = [S::zero(); MC];
            for (gm, &(row, stride)) in g.iter_mut().zip(gy) {
                let p = row.add(r * stride + c);
                *gm = if lanes == S::LANES {
                    S::load(p)
                } else {
                    S::load_first(p, lanes)
                };
            }
            let base = x.add(r * wp + c);
            for (n, &o) in offsets.iter().enumerate() {
                let xv = S::load(base.add(o));
                for (sm, &gm) in sums.iter_mut().zip(&g) {
                    sm[n] = S::mul_add(gm, xv, sm[n]);
                }
            }
            c += S::LANES;
        }
    }
    sums
}

/// One band of rows of [`conv2d_backward_weight`], added into `acc`.
struct WeightGradTask<'a> {
    shape: &'a ConvShape,
    x: &'a [f32],
    gy: &'a [f32],
    task: RowTask,
    /// Output channels rounded up to whole vector blocks.
    cop: usize,
    /// Vectors per block (1 or 2).
    nv: usize,
    acc: &'a mut [f32],
}

impl Kernel for WeightGradTask<'_> {
    type Output = ();

    #[inline(always)]
    fn run<S: Simd>(self) {
        if self.nv == 2 {
            self.band::<S, 2>()
        } else {
            self.band::<S, 1>()
        }
    }
}

impl WeightGradTask<'_> {
    #[inline(always)]
    fn band<S: Simd, const NV: usize>(self) {
        let s = self.shape;
        let (ho, wo, k, kk) = (s.h_out(), s.w_out(), s.k, s.k * s.k);
        let band = self.task.len();
        let slab = Slab::new(s, self.x, self.task);
        let (wp, plane) = (slab.wp, slab.plane);
        let positions = band * wp;
        let cop = self.cop;
        let gy_image = image_of(s, self.gy, self.task.image);
        let rows = s.c_in * kk;
        let acc = self.acc;
        let mut gyt = Scratch::take(positions * cop);
        // gyt[(rr·wp + c)·cop + co] = gy[co, start + rr, c], zero for c ≥ wo and
        // co ≥ c_out; the bias gradient sums the same values.
        gyt.fill(0.0);
        let bias = &mut acc[(rows + NB) * cop..];
        for co in 0..s.c_out {
            let mut sum = 0.0;
            for rr in 0..band {
                let src = &gy_image[(co * ho + self.task.start + rr) * wo..][..wo];
                for (c, &g) in src.iter().enumerate() {
                    gyt[(rr * wp + c) * cop + co] = g;
                    sum += g;
                }
            }
            bias[co] += sum;
        }
        let width = NV * S::LANES;
        let offset = |n: usize| (n / kk) * plane + ((n % kk) / k) * wp + n % k;
        for q0 in (0..positions).step_by(QC) {
            let qn = QC.min(positions - q0);
            for g0 in (0..rows).step_by(NB) {
                let offsets: [usize; NB] =
                    std::array::from_fn(|n| offset((g0 + n).min(rows - 1)) + q0);
                for c0 in (0..cop).step_by(width) {
                    // SAFETY: the tile reads gyt rows q0 .. q0+qn (width floats from
                    // c0), slab floats below offset + qn ≤ c_in·plane + k (SLACK
                    // covers the rest), and NB rows of `acc` from g0 (NB spare rows
                    // exist past `rows`).
                    unsafe {
                        weight_grad_tile::<S, NV>(
                            gyt.as_ptr().add(q0 * cop + c0),
                            cop,
                            slab.as_ptr(),
                            &offsets,
                            qn,
                            acc.as_mut_ptr().add(g0 * cop + c0),
                            cop,
                        );
                    }
                }
            }
        }
    }
}

/// `acc[n][v] += Σ_q gyt[q][v] · x[offsets[n] + q]` for `NB` rows `n` and `NV` vectors `v`.
///
/// # Safety
/// `gyt + q·gyt_stride` must start `NV · LANES` readable floats for `q < positions`, `x` must
/// be readable at `offsets[n] + q`, and `acc + n·acc_stride` must start `NV · LANES` writable
/// floats.
#[inline(always)]
unsafe fn weight_grad_tile<S: Simd, const NV: usize>(
    gyt: *const f32,
    gyt_stride: usize,
    x: *const f32,
    offsets: &[usize; NB],
    positions: usize,
    acc: *mut f32,
    acc_stride: usize,
) {
    let mut sums = [[S::zero(); NV]; NB];
    for (n, s) in sums.iter_mut().enumerate() {
        for (v, sv) in s.iter_mut().enumerate() {
            *sv = S::load(acc.add(n * acc_stride + v * S::LANES));
        }
    }
    let rows: [*const f32; NB] = std::array::from_fn(|n| x.add(offsets[n]));
    for q in 0..positions {
        let mut b = [S::zero(); NV];
        for (v, bv) in b.iter_mut().enumerate() {
            *bv = S::load(gyt.add(q * gyt_stride + v * S::LANES));
        }
        for (s, row) in sums.iter_mut().zip(&rows) {
            let a = S::splat(*row.add(q));
            for (sv, &bv) in s.iter_mut().zip(&b) {
                *sv = S::mul_add(a, bv, *sv);
            }
        }
    }
    for (n, s) in sums.iter().enumerate() {
        for (v, &sv) in s.iter().enumerate() {
            S::store(acc.add(n * acc_stride + v * S::LANES), sv);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct-summation reference of the three results, in f64.
    fn naive(
        s: &ConvShape,
        x: &[f32],
        w: &[f32],
        b: &[f32],
        gy: &[f32],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let (ho, wo, k, p) = (s.h_out(), s.w_out(), s.k, s.pad as isize);
        let mut y = vec![0.0; s.y_len()];
        let mut dx = vec![0.0; s.x_len()];
        let mut dw = vec![0.0; s.w_len()];
        let mut db = vec![0.0; s.c_out];
        for n in 0..s.batch {
            for co in 0..s.c_out {
                for r in 0..ho {
                    for c in 0..wo {
                        let yi = ((n * s.c_out + co) * ho + r) * wo + c;
                        let g = f64::from(gy[yi]);
                        let mut acc = f64::from(b[co]);
                        db[co] += g;
                        for ci in 0..s.c_in {
                            for i in 0..k {
                                for j in 0..k {
                                    let sr = r as isize + i as isize - p;
                                    let sc = c as isize + j as isize - p;
                                    if sr < 0 || sc < 0 || sr >= s.h as isize || sc >= s.w as isize
                                    {
                                        continue;
                                    }
                                    let xi =
                                        ((n * s.c_in + ci) * s.h + sr as usize) * s.w + sc as usize;
                                    let wi = ((co * s.c_in + ci) * k + i) * k + j;
                                    acc += f64::from(w[wi]) * f64::from(x[xi]);
                                    dx[xi] += f64::from(w[wi]) * g;
                                    dw[wi] += f64::from(x[xi]) * g;
                                }
                            }
                        }
                        y[yi] = acc;
                    }
                }
            }
        }
        (y, dx, dw, db)
    }

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::SplitMix64::new(seed);
        (0..n).map(|_| rng.normal() as f32).collect()
    }

    fn assert_close(name: &str, got: &[f32], want: &[f64]) {
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-12);
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let err = (f64::from(*g) - w).abs() / scale;
            assert!(err < 1e-5, "{name}[{i}]: {g} vs {w} (rel {err:.2e})");
        }
    }

    fn check_shape(s: ConvShape) {
        let x = values(s.x_len(), 1);
        let w = values(s.w_len(), 2);
        let b = values(s.c_out, 3);
        let gy = values(s.y_len(), 4);
        let (y_ref, dx_ref, dw_ref, db_ref) = naive(&s, &x, &w, &b, &gy);
        for isa in Isa::available() {
            let mut y = vec![f32::NAN; s.y_len()];
            conv2d_forward(isa, &s, &x, &w, Epilogue::Bias(&b), &mut y);
            assert_close(&format!("{isa:?} {s:?} y"), &y, &y_ref);
            let mut dx = vec![f32::NAN; s.x_len()];
            conv2d_backward_input(isa, &s, &gy, &w, &mut dx);
            assert_close(&format!("{isa:?} {s:?} dx"), &dx, &dx_ref);
            let mut dw = vec![f32::NAN; s.w_len()];
            let mut db = vec![f32::NAN; s.c_out];
            conv2d_backward_weight(isa, &s, &x, &gy, &mut dw, &mut db);
            assert_close(&format!("{isa:?} {s:?} dw"), &dw, &dw_ref);
            assert_close(&format!("{isa:?} {s:?} db"), &db, &db_ref);
        }
    }

    #[test]
    fn conv_kernels_match_direct_sums() {
        let base = ConvShape {
            batch: 2,
            c_in: 3,
            h: 9,
            w: 7,
            c_out: 5,
            k: 3,
            pad: 1,
        };
        check_shape(base);
        check_shape(ConvShape {
            k: 1,
            pad: 0,
            ..base
        });
        check_shape(ConvShape { pad: 0, ..base });
        check_shape(ConvShape {
            k: 5,
            pad: 2,
            batch: 1,
            ..base
        });
        // One input channel (the first layer) and a single output (the head); wide rows with a
        // partial last vector; 16 and 32 output channels take the 16-lane weight gradient.
        check_shape(ConvShape {
            c_in: 1,
            c_out: 16,
            w: 37,
            ..base
        });
        check_shape(ConvShape {
            c_in: 12,
            c_out: 1,
            k: 1,
            pad: 0,
            h: 4,
            w: 40,
            ..base
        });
        check_shape(ConvShape {
            c_in: 9,
            c_out: 32,
            h: 6,
            w: 18,
            batch: 3,
            ..base
        });
    }

    #[test]
    fn eval_epilogue_scales_shifts_and_clamps() {
        let s = ConvShape {
            batch: 1,
            c_in: 2,
            h: 5,
            w: 6,
            c_out: 3,
            k: 3,
            pad: 1,
        };
        let x = values(s.x_len(), 5);
        let w = values(s.w_len(), 6);
        let scale = [0.5f32, -2.0, 1.5];
        let shift = [0.1f32, 0.2, -0.3];
        let mut plain = vec![f32::NAN; s.y_len()];
        let isa = Isa::best();
        conv2d_forward(isa, &s, &x, &w, Epilogue::Bias(&[0.0; 3]), &mut plain);
        let mut fused = vec![f32::NAN; s.y_len()];
        let epilogue = Epilogue::ScaleShiftRelu {
            scale: &scale,
            shift: &shift,
        };
        conv2d_forward(isa, &s, &x, &w, epilogue, &mut fused);
        for (i, (p, f)) in plain.iter().zip(&fused).enumerate() {
            let co = i / 30;
            let want = (p * scale[co] + shift[co]).max(0.0);
            assert!((f - want).abs() < 1e-5, "{i}: {f} vs {want}");
        }
    }
}
