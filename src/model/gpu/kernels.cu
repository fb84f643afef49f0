// lungseg's CUDA kernels for the U-Net's training step: convolution bias, BatchNorm+ReLU
// forward and backward, 2x2 max-pooling, bilinear x2 upsampling fused with the decoder's
// concatenation, the running-statistics update and Adam. The convolutions themselves run on
// cuDNN (src/model/gpu/conv.rs).
//
// Every kernel is a grid-stride loop over an index space, with no shared memory and no
// barriers: each index is independent. That makes the same source compile as plain C (without
// __CUDACC__, one "thread" walks the whole space), which is how the CPU test build runs
// these kernels against lungseg's CPU kernels (src/model/gpu/emulated.rs); nvcc compiles it to
// PTX for the `cudnn` feature (build.rs). Indices are 32-bit: the Rust side refuses tensors of
// 2^31 elements or more.
//
// Per-channel sums: `parts` threads per channel (a multiple of 32, so that a warp never spans
// two channels) each walk a strided share of the channel's values, accumulating in double; each
// warp adds its 32 sums with shuffles and one atomic add into the channel's total, which the
// caller zeroes first. Channel c of a (B, C, H*W) tensor holds values j = b*plane + k at
// (b*C + c)*plane + k.

#ifdef __CUDACC__
#define KERNEL extern "C" __global__ void
#define DEVICE __device__ __forceinline__
#define FOR_EACH(i, n)                                                                          \
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += blockDim.x * gridDim.x)
#define UNROLL _Pragma("unroll 4")
#else
#include <math.h>
#ifdef __cplusplus
#define KERNEL extern "C" void
#else
#define KERNEL void
#endif
#define DEVICE static inline
#define FOR_EACH(i, n) for (unsigned i = 0; i < (n); ++i)
#define UNROLL
#endif

// *total += v summed over the warp (all 32 lanes active, one channel): shuffles, then one
// atomic add by lane 0. One thread on the host.
DEVICE void warp_add(double* total, double v) {
#ifdef __CUDACC__
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  if ((threadIdx.x & 31) == 0) atomicAdd(total, v);
#else
  *total += v;
#endif
}

// Offset of value j of channel c.
DEVICE unsigned channel_at(unsigned j, unsigned c, unsigned channels, unsigned plane) {
  unsigned b = j / plane;
  return (b * channels + c) * plane + (j - b * plane);
}

// y[i] += bias[channel of i].
KERNEL lungseg_add_channel_bias(float* y, const float* bias, unsigned channels, unsigned plane,
                                unsigned n) {
  FOR_EACH(i, n) { y[i] += bias[(i / plane) % channels]; }
}

// sums[2c] += sum of (x - K) and sums[2c + 1] += sum of (x - K)^2 over channel c, where
// K = the channel's first value when `shifted` (as the CPU kernel shifts, to keep the variance
// accurate when the mean is large against the spread), else 0. Index t = c*parts + p walks
// values j = p, p + parts, ...
KERNEL lungseg_channel_moments(const float* x, double* sums, unsigned batch, unsigned channels,
                               unsigned plane, unsigned parts, int shifted) {
  unsigned count = batch * plane;
  FOR_EACH(t, channels * parts) {
    unsigned c = t / parts, p = t - c * parts;
    float k = shifted ? x[c * plane] : 0.0f;
    double s1 = 0.0, s2 = 0.0;
    UNROLL
    for (unsigned j = p; j < count; j += parts) {
      double d = (double)(x[channel_at(j, c, channels, plane)] - k);
      s1 += d;
      s2 += d * d;
    }
    warp_add(&sums[2 * c], s1);
    warp_add(&sums[2 * c + 1], s2);
  }
}

// out[c] = sums[2c] as float (a convolution's bias gradient).
KERNEL lungseg_channel_totals(const double* sums, float* out, unsigned channels) {
  FOR_EACH(c, channels) { out[c] = (float)sums[2 * c]; }
}

// Layout of a batch-norm's saved statistics: 5*C floats.
#define ST_MEAN 0
#define ST_VAR 1
#define ST_INV_STD 2
#define ST_SCALE 3
#define ST_SHIFT 4

// From the shifted sums of lungseg_channel_moments: mean, biased variance, 1/sqrt(var + eps),
// and the affine scale = gamma*inv_std and shift = beta - mean*scale that the forward applies.
// gamma_beta: gamma (C) then beta (C).
KERNEL lungseg_bn_forward_stats(const double* sums, const float* x, const float* gamma_beta,
                                float* stats, unsigned batch, unsigned channels, unsigned plane,
                                double eps) {
  double n = (double)batch * (double)plane;
  FOR_EACH(c, channels) {
    double s1 = sums[2 * c], s2 = sums[2 * c + 1];
    double m = s1 / n;
    double var = s2 / n - m * m;
    if (var < 0.0) var = 0.0;
    double mean = (double)x[c * plane] + m;
    double inv_std = 1.0 / sqrt(var + eps);
    double scale = (double)gamma_beta[c] * inv_std;
    double shift = (double)gamma_beta[channels + c] - mean * scale;
    stats[ST_MEAN * channels + c] = (float)mean;
    stats[ST_VAR * channels + c] = (float)var;
    stats[ST_INV_STD * channels + c] = (float)inv_std;
    stats[ST_SCALE * channels + c] = (float)scale;
    stats[ST_SHIFT * channels + c] = (float)shift;
  }
}

// Evaluation-mode statistics from the running ones (running: mean (C) then variance (C)):
// scale = gamma/sqrt(var + eps), shift = beta - mean*scale, in the layout of the training
// statistics so that lungseg_bn_relu_apply serves both.
KERNEL lungseg_bn_eval_stats(const float* gamma_beta, const float* running, float* stats,
                             unsigned channels, double eps) {
  FOR_EACH(c, channels) {
    double mean = (double)running[c], var = (double)running[channels + c];
    double std = sqrt(var + eps);
    double scale = (double)gamma_beta[c] / std;
    stats[ST_MEAN * channels + c] = (float)mean;
    stats[ST_VAR * channels + c] = (float)var;
    stats[ST_INV_STD * channels + c] = (float)(1.0 / std);
    stats[ST_SCALE * channels + c] = (float)scale;
    stats[ST_SHIFT * channels + c] = (float)((double)gamma_beta[channels + c] - mean * scale);
  }
}

// z = max(0, x*scale + shift), per channel.
KERNEL lungseg_bn_relu_apply(const float* x, const float* stats, float* z, unsigned channels,
                             unsigned plane, unsigned n) {
  FOR_EACH(i, n) {
    unsigned c = (i / plane) % channels;
    float v = fmaf(x[i], stats[ST_SCALE * channels + c], stats[ST_SHIFT * channels + c]);
    z[i] = v > 0.0f ? v : 0.0f;
  }
}

// The ReLU's gradient: gz where the forward's pre-activation was positive.
DEVICE float relu_grad(float x, float gz, const float* stats, unsigned c, unsigned channels) {
  float v = fmaf(x, stats[ST_SCALE * channels + c], stats[ST_SHIFT * channels + c]);
  return v > 0.0f ? gz : 0.0f;
}

// sums[2c] += sum of dy and sums[2c + 1] += sum of dy*(x - mean) over channel c, dy the ReLU's
// gradient (threads as in lungseg_channel_moments).
KERNEL lungseg_bn_backward_moments(const float* x, const float* gz, const float* stats,
                                   double* sums, unsigned batch, unsigned channels,
                                   unsigned plane, unsigned parts) {
  unsigned count = batch * plane;
  FOR_EACH(t, channels * parts) {
    unsigned c = t / parts, p = t - c * parts;
    float mean = stats[ST_MEAN * channels + c];
    double s1 = 0.0, s2 = 0.0;
    UNROLL
    for (unsigned j = p; j < count; j += parts) {
      unsigned at = channel_at(j, c, channels, plane);
      double dy = (double)relu_grad(x[at], gz[at], stats, c, channels);
      s1 += dy;
      s2 += dy * (double)(x[at] - mean);
    }
    warp_add(&sums[2 * c], s1);
    warp_add(&sums[2 * c + 1], s2);
  }
}

// From lungseg_bn_backward_moments' sums, per channel: dx = a*dy + b*x + c0 with a = gamma*inv_std, b = -a*inv_std^2*S2/n,
// c0 = -a*S1/n - b*mean (coef: a, b, c0, each C); dbeta = S1 and dgamma = S2*inv_std
// (dgamma_dbeta: dgamma then dbeta).
KERNEL lungseg_bn_backward_coefficients(const double* sums, const float* stats,
                                        const float* gamma_beta, float* coef,
                                        float* dgamma_dbeta, unsigned batch, unsigned channels,
                                        unsigned plane) {
  double n = (double)batch * (double)plane;
  FOR_EACH(c, channels) {
    double s1 = sums[2 * c], s2 = sums[2 * c + 1];
    double inv_std = (double)stats[ST_INV_STD * channels + c];
    double mean = (double)stats[ST_MEAN * channels + c];
    double a = (double)gamma_beta[c] * inv_std;
    double b = -a * inv_std * inv_std * s2 / n;
    double c0 = -a * s1 / n - b * mean;
    coef[c] = (float)a;
    coef[channels + c] = (float)b;
    coef[2 * channels + c] = (float)c0;
    dgamma_dbeta[c] = (float)(s2 * inv_std);
    dgamma_dbeta[channels + c] = (float)s1;
  }
}

// dx = a*dy + b*x + c0 per channel.
KERNEL lungseg_bn_backward_apply(const float* x, const float* gz, const float* stats,
                                 const float* coef, float* dx, unsigned channels, unsigned plane,
                                 unsigned n) {
  FOR_EACH(i, n) {
    unsigned c = (i / plane) % channels;
    float dy = relu_grad(x[i], gz[i], stats, c, channels);
    dx[i] = fmaf(coef[c], dy, fmaf(coef[channels + c], x[i], coef[2 * channels + c]));
  }
}

// running = (1 - momentum)*running + momentum*factor*batch, per channel (factor n/(n-1) for the
// unbiased running variance).
KERNEL lungseg_bn_running_update(float* running, const float* batch_stat, unsigned channels,
                                 double momentum, double factor) {
  FOR_EACH(c, channels) {
    running[c] = (float)((1.0 - momentum) * (double)running[c] +
                         momentum * factor * (double)batch_stat[c]);
  }
}

// Row-major index (0..4) of the first maximum of a 2x2 window (a NaN counts as the maximum, as
// in PyTorch).
DEVICE unsigned window_argmax(const float* x, unsigned top, unsigned w) {
  unsigned at[4] = {top, top + 1, top + w, top + w + 1};
  unsigned best = 0;
  float v = x[at[0]];
  for (unsigned k = 1; k < 4; ++k) {
    float u = x[at[k]];
    if (u > v || u != u) {
      best = k;
      v = u;
    }
  }
  return at[best];
}

// Top-left input offset of output o of a 2x2 pooling over planes of h x w.
DEVICE unsigned window_top(unsigned o, unsigned h, unsigned w) {
  unsigned wo = w / 2, ho = h / 2;
  unsigned plane = o / (ho * wo), r = o - plane * (ho * wo);
  unsigned i = r / wo, j = r - i * wo;
  return plane * h * w + 2 * i * w + 2 * j;
}

// y = maxpool2x2(x); n_out = planes * (h/2) * (w/2).
KERNEL lungseg_max_pool_forward(const float* x, float* y, unsigned h, unsigned w, unsigned n_out) {
  FOR_EACH(o, n_out) { y[o] = x[window_argmax(x, window_top(o, h, w), w)]; }
}

// dx[argmax of window o] += gy[o]. Windows do not overlap, so no two indices write one element.
KERNEL lungseg_max_pool_backward_add(const float* x, const float* gy, float* dx, unsigned h,
                                     unsigned w, unsigned n_out) {
  FOR_EACH(o, n_out) { dx[window_argmax(x, window_top(o, h, w), w)] += gy[o]; }
}

// Weight of input i in output o along an axis of n inputs (bilinear x2, align_corners=False):
// output o reads k = o/2 with 0.75 and its neighbour (k-1 for even o, k+1 for odd, clamped)
// with 0.25.
DEVICE float tap_weight(unsigned o, unsigned i, unsigned n) {
  unsigned k = o / 2;
  unsigned other = (o % 2 == 0) ? (k == 0 ? 0 : k - 1) : (k + 1 < n ? k + 1 : n - 1);
  return (k == i ? 0.75f : 0.0f) + (other == i ? 0.25f : 0.0f);
}

// out = cat([up2x(low), skip], 1): low (B, c_low, h, w), skip (B, c_skip, 2h, 2w).
KERNEL lungseg_upsample_cat_forward(const float* low, const float* skip, float* out,
                                    unsigned c_low, unsigned c_skip, unsigned h, unsigned w,
                                    unsigned n_out) {
  unsigned W = 2 * w, plane = 4 * h * w, channels = c_low + c_skip;
  FOR_EACH(i, n_out) {
    unsigned bc = i / plane, r = i - bc * plane;
    unsigned b = bc / channels, c = bc - b * channels;
    if (c >= c_low) {
      out[i] = skip[(b * c_skip + (c - c_low)) * plane + r];
      continue;
    }
    unsigned oy = r / W, ox = r - oy * W;
    const float* src = low + (b * c_low + c) * h * w;
    unsigned ky = oy / 2, kx = ox / 2;
    unsigned oty = (oy % 2 == 0) ? (ky == 0 ? 0 : ky - 1) : (ky + 1 < h ? ky + 1 : h - 1);
    unsigned otx = (ox % 2 == 0) ? (kx == 0 ? 0 : kx - 1) : (kx + 1 < w ? kx + 1 : w - 1);
    float top = 0.75f * src[ky * w + kx] + 0.25f * src[ky * w + otx];
    float other = 0.75f * src[oty * w + kx] + 0.25f * src[oty * w + otx];
    out[i] = 0.75f * top + 0.25f * other;
  }
}

// The adjoint of lungseg_upsample_cat_forward: indices below n_low gather d_low from the
// outputs that read them, the rest copy the skip channels' gradient.
KERNEL lungseg_upsample_cat_backward(const float* g, float* d_low, float* d_skip,
                                     unsigned c_low, unsigned c_skip, unsigned h, unsigned w,
                                     unsigned n_low, unsigned n_skip) {
  unsigned W = 2 * w, plane = 4 * h * w, channels = c_low + c_skip;
  FOR_EACH(i, n_low + n_skip) {
    if (i >= n_low) {
      unsigned s = i - n_low;
      unsigned bc = s / plane, r = s - bc * plane;
      unsigned b = bc / c_skip, c = bc - b * c_skip;
      d_skip[s] = g[(b * channels + c_low + c) * plane + r];
      continue;
    }
    unsigned bc = i / (h * w), r = i - bc * (h * w);
    unsigned b = bc / c_low, c = bc - b * c_low;
    unsigned y = r / w, x = r - y * w;
    const float* src = g + (b * channels + c) * plane;
    float acc = 0.0f;
    unsigned y0 = y == 0 ? 0 : 2 * y - 1, y1 = 2 * y + 2 < 2 * h ? 2 * y + 2 : 2 * h - 1;
    unsigned x0 = x == 0 ? 0 : 2 * x - 1, x1 = 2 * x + 2 < 2 * w ? 2 * x + 2 : 2 * w - 1;
    for (unsigned oy = y0; oy <= y1; ++oy) {
      float wy = tap_weight(oy, y, h);
      if (wy == 0.0f) continue;
      float row = 0.0f;
      for (unsigned ox = x0; ox <= x1; ++ox) row += tap_weight(ox, x, w) * src[oy * W + ox];
      acc += wy * row;
    }
    d_low[i] = acc;
  }
}

// One Adam step in place: mv holds m (n) then v (n).
// m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
// theta = theta*decay - lr*(m*inv_bias1)/(sqrt(v*inv_bias2) + eps), decay 1 without weight decay.
KERNEL lungseg_adam_update(float* theta, const float* g, float* mv, unsigned n, float beta1,
                           float one_minus_beta1, float beta2, float one_minus_beta2,
                           float inv_bias1, float inv_bias2, float eps, float lr, float decay) {
  FOR_EACH(i, n) {
    float gi = g[i];
    float m = mv[i] * beta1 + gi * one_minus_beta1;
    float v = mv[n + i] * beta2 + gi * gi * one_minus_beta2;
    mv[i] = m;
    mv[n + i] = v;
    float update = (m * inv_bias1) / (sqrtf(v * inv_bias2) + eps);
    theta[i] = theta[i] * decay - update * lr;
  }
}

// x[i] = v (tests poison fresh buffers with NaN, so that an unwritten element shows).
KERNEL lungseg_fill(float* x, float v, unsigned n) {
  FOR_EACH(i, n) { x[i] = v; }
}
