//! One SIMD vocabulary for the CPU kernels, so that each kernel is written once and compiled for
//! AVX-512, for AVX2 + FMA and for plain scalar code; [`run`] picks the widest one the CPU has,
//! at run time.
//!
//! A kernel is a [`Kernel`]: its generic `run::<S>()` is inlined into a function compiled with
//! the matching `#[target_feature]`, so every intrinsic below inlines into straight-line vector
//! code (called from a function without the feature, each would be a call). Rayon tasks must
//! therefore dispatch inside the task, not around the parallel loop.
//!
//! On Zen 4 a 512-bit FMA issues once a cycle, as two 256-bit ones do, so AVX-512 does not add
//! FLOPs; it pays through its 32 registers, which hold the larger register tiles the
//! convolution kernels need (16 accumulators plus operands).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::sync::OnceLock;

/// A vector of `LANES` f32 and the operations the kernels use.
///
/// # Safety
/// Every method is `unsafe` for two reasons: it must run on a CPU with the type's instruction
/// set (guaranteed by [`run`]), and the pointer methods read or write `LANES` (or `n`) floats,
/// which the caller must own.
#[allow(clippy::missing_safety_doc)] // one contract for every method, stated above
pub trait Simd: Copy {
    /// The vector register type.
    type V: Copy;
    /// f32 lanes per vector.
    const LANES: usize;
    /// All lanes zero.
    unsafe fn zero() -> Self::V;
    /// All lanes `x`.
    unsafe fn splat(x: f32) -> Self::V;
    /// `LANES` floats from `p` (unaligned).
    unsafe fn load(p: *const f32) -> Self::V;
    /// The first `n < LANES` floats from `p`, the other lanes zero; reads only `n` floats.
    unsafe fn load_first(p: *const f32, n: usize) -> Self::V;
    /// Writes `LANES` floats to `p` (unaligned).
    unsafe fn store(p: *mut f32, v: Self::V);
    /// Writes the first `n < LANES` lanes to `p`; touches only `n` floats.
    unsafe fn store_first(p: *mut f32, v: Self::V, n: usize);
    /// `a * b + c`, fused.
    unsafe fn mul_add(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a + b`.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// `a - b`.
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    /// `a * b`.
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise maximum (either operand where one is NaN; the kernels feed it finite values).
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// `a` where `m > 0`, else zero (the ReLU mask).
    unsafe fn where_positive(m: Self::V, a: Self::V) -> Self::V;
    /// The sum of the lanes.
    unsafe fn sum(v: Self::V) -> f32;
}

/// The AVX-512 vector type: its intrinsics are stable since Rust 1.89, so it is compiled only
/// from there on (older compilers run the AVX2 path).
#[cfg(target_arch = "x86_64")]
#[rustversion::since(1.89)]
#[clippy::msrv = "1.89"]
mod avx512 {
    use super::Simd;
    use std::arch::x86_64::*;

    /// 16 lanes in one `zmm` register.
    #[derive(Clone, Copy)]
    pub struct Avx512;

    impl Avx512 {
        #[inline(always)]
        fn first(n: usize) -> __mmask16 {
            ((1u32 << n) - 1) as __mmask16
        }
    }

    // SAFETY (whole impl): each method is a single intrinsic of AVX-512F; `run` only selects this
    // type after `is_x86_feature_detected!("avx512f")`, and the masked loads and stores touch only
    // the `n` enabled lanes, as the trait documents.
    impl Simd for Avx512 {
        type V = __m512;
        const LANES: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> __m512 {
            _mm512_setzero_ps()
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m512 {
            _mm512_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            _mm512_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn load_first(p: *const f32, n: usize) -> __m512 {
            _mm512_maskz_loadu_ps(Self::first(n), p)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512) {
            _mm512_storeu_ps(p, v)
        }
        #[inline(always)]
        unsafe fn store_first(p: *mut f32, v: __m512, n: usize) {
            _mm512_mask_storeu_ps(p, Self::first(n), v)
        }
        #[inline(always)]
        unsafe fn mul_add(a: __m512, b: __m512, c: __m512) -> __m512 {
            _mm512_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn add(a: __m512, b: __m512) -> __m512 {
            _mm512_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn sub(a: __m512, b: __m512) -> __m512 {
            _mm512_sub_ps(a, b)
        }
        #[inline(always)]
        unsafe fn mul(a: __m512, b: __m512) -> __m512 {
            _mm512_mul_ps(a, b)
        }
        #[inline(always)]
        unsafe fn max(a: __m512, b: __m512) -> __m512 {
            _mm512_max_ps(a, b)
        }
        #[inline(always)]
        unsafe fn where_positive(m: __m512, a: __m512) -> __m512 {
            let k = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(m, _mm512_setzero_ps());
            _mm512_maskz_mov_ps(k, a)
        }
        #[inline(always)]
        unsafe fn sum(v: __m512) -> f32 {
            _mm512_reduce_add_ps(v)
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[rustversion::since(1.89)]
pub use avx512::Avx512;

/// 8 lanes in one `ymm` register.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Avx2 {
    /// Lane mask with the first `n` lanes set (sign bit), for `maskload`/`maskstore`.
    #[inline(always)]
    unsafe fn first(n: usize) -> __m256i {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(n as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }
}

// SAFETY (whole impl): each method uses AVX/AVX2/FMA intrinsics only; `run` selects this type
// after detecting `avx2` and `fma`; masked loads and stores touch only the enabled lanes.
#[cfg(target_arch = "x86_64")]
impl Simd for Avx2 {
    type V = __m256;
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        _mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        _mm256_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn load_first(p: *const f32, n: usize) -> __m256 {
        _mm256_maskload_ps(p, Self::first(n))
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        _mm256_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn store_first(p: *mut f32, v: __m256, n: usize) {
        _mm256_maskstore_ps(p, Self::first(n), v)
    }
    #[inline(always)]
    unsafe fn mul_add(a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        _mm256_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: __m256, b: __m256) -> __m256 {
        _mm256_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        _mm256_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn max(a: __m256, b: __m256) -> __m256 {
        _mm256_max_ps(a, b)
    }
    #[inline(always)]
    unsafe fn where_positive(m: __m256, a: __m256) -> __m256 {
        _mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(m, _mm256_setzero_ps()), a)
    }
    #[inline(always)]
    unsafe fn sum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }
}

/// One lane: the portable fallback (and the reference the vector paths are tested against).
#[derive(Clone, Copy)]
pub struct Scalar;

// SAFETY (whole impl): plain loads and stores of the floats the trait lets the caller promise.
impl Simd for Scalar {
    type V = f32;
    const LANES: usize = 1;
    #[inline(always)]
    unsafe fn zero() -> f32 {
        0.0
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> f32 {
        x
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32 {
        *p
    }
    #[inline(always)]
    unsafe fn load_first(_p: *const f32, _n: usize) -> f32 {
        0.0 // n < 1 lane: nothing to read
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: f32) {
        *p = v
    }
    #[inline(always)]
    unsafe fn store_first(_p: *mut f32, _v: f32, _n: usize) {}
    #[inline(always)]
    unsafe fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    unsafe fn add(a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    unsafe fn sub(a: f32, b: f32) -> f32 {
        a - b
    }
    #[inline(always)]
    unsafe fn mul(a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    unsafe fn max(a: f32, b: f32) -> f32 {
        a.max(b)
    }
    #[inline(always)]
    unsafe fn where_positive(m: f32, a: f32) -> f32 {
        if m > 0.0 {
            a
        } else {
            0.0
        }
    }
    #[inline(always)]
    unsafe fn sum(v: f32) -> f32 {
        v
    }
}

/// A piece of work written once for every [`Simd`] type.
pub trait Kernel {
    /// What the kernel returns.
    type Output;
    /// Runs the kernel with vector type `S`. Implementations should be `#[inline(always)]` so
    /// that they compile inside [`run`]'s feature-enabled functions.
    fn run<S: Simd>(self) -> Self::Output;
}

/// An instruction set the kernels are compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Portable code, one lane.
    Scalar,
    /// AVX2 + FMA, 8 lanes.
    Avx2,
    /// AVX-512F, 16 lanes.
    Avx512,
}

impl Isa {
    /// Every instruction set this CPU can run, narrowest first.
    pub fn available() -> Vec<Isa> {
        let best = Self::best();
        [Isa::Scalar, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|&i| i <= best)
            .collect()
    }

    /// f32 lanes per vector.
    pub fn lanes(self) -> usize {
        match self {
            Isa::Scalar => 1,
            Isa::Avx2 => 8,
            Isa::Avx512 => 16,
        }
    }

    /// The widest instruction set of this CPU (detected once). `LUNGSEG_ISA=avx2` or `scalar`
    /// caps it, for measuring the narrower paths.
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            let detected = detect();
            match std::env::var("LUNGSEG_ISA").as_deref() {
                Ok("scalar") => Isa::Scalar,
                Ok("avx2") => detected.min(Isa::Avx2),
                _ => detected,
            }
        })
    }
}

fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if AVX512_COMPILED && is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Isa::Avx2;
        }
    }
    Isa::Scalar
}

/// Runs `k` with the widest vectors of this CPU.
#[inline]
pub fn run<K: Kernel>(k: K) -> K::Output {
    run_on(Isa::best(), k)
}

/// Runs `k` with `isa`, or with the widest instruction set below it that this CPU has.
#[inline]
pub fn run_on<K: Kernel>(isa: Isa, k: K) -> K::Output {
    match isa.min(Isa::best()) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::best()` only reports AVX-512 after detecting avx512f.
        Isa::Avx512 => unsafe { run_avx512(k) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::best()` only reports AVX2 (or more) after detecting avx2 and fma.
        Isa::Avx2 => unsafe { run_avx2(k) },
        _ => k.run::<Scalar>(),
    }
}

/// Whether this build has the AVX-512 path.
#[cfg(target_arch = "x86_64")]
#[rustversion::since(1.89)]
const AVX512_COMPILED: bool = true;
#[cfg(target_arch = "x86_64")]
#[rustversion::before(1.89)]
const AVX512_COMPILED: bool = false;

#[cfg(target_arch = "x86_64")]
#[rustversion::since(1.89)]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn run_avx512<K: Kernel>(k: K) -> K::Output {
    k.run::<Avx512>()
}

/// Never called: `detect` only reports AVX-512 where it is compiled.
#[cfg(target_arch = "x86_64")]
#[rustversion::before(1.89)]
unsafe fn run_avx512<K: Kernel>(k: K) -> K::Output {
    run_avx2(k)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<K: Kernel>(k: K) -> K::Output {
    k.run::<Avx2>()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Probe<'a>(&'a [f32]);

    impl Kernel for Probe<'_> {
        type Output = (f32, Vec<f32>);
        #[inline(always)]
        fn run<S: Simd>(self) -> (f32, Vec<f32>) {
            let mut out = vec![f32::NAN; self.0.len()];
            let l = S::LANES;
            let mut acc = 0.0;
            // SAFETY: every access stays inside `self.0` / `out` (full vectors, then `n` lanes).
            unsafe {
                let mut i = 0;
                while i + l <= self.0.len() {
                    let v = S::load(self.0.as_ptr().add(i));
                    let r = S::where_positive(v, S::mul_add(v, S::splat(2.0), S::splat(1.0)));
                    S::store(out.as_mut_ptr().add(i), r);
                    acc += S::sum(v);
                    i += l;
                }
                let n = self.0.len() - i;
                if n > 0 {
                    let v = S::load_first(self.0.as_ptr().add(i), n);
                    let r = S::where_positive(v, S::mul_add(v, S::splat(2.0), S::splat(1.0)));
                    S::store_first(out.as_mut_ptr().add(i), r, n);
                    acc += S::sum(v);
                }
            }
            (acc, out)
        }
    }

    #[test]
    fn every_isa_computes_the_same_lanes() {
        let x: Vec<f32> = (0..37).map(|i| (i as f32 - 17.0) * 0.5).collect();
        let want: Vec<f32> = x
            .iter()
            .map(|&v| if v > 0.0 { 2.0 * v + 1.0 } else { 0.0 })
            .collect();
        for isa in Isa::available() {
            let (sum, out) = run_on(isa, Probe(&x));
            assert_eq!(out, want, "{isa:?}");
            assert!((sum - x.iter().sum::<f32>()).abs() < 1e-4, "{isa:?}");
        }
    }
}
