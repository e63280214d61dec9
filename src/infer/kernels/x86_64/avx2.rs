//! AVX2 + FMA kernels: 8 f32 lanes, 16 i16 lanes.
//!
//! The dot-product GEMMs are `dot.rs`'s bodies on the [`Avx2`] lanes (4 × 3 register tiles);
//! the activation quantizers are here.

use std::arch::x86_64::*;

use crate::infer::kernels::scalar;
use crate::infer::kernels::I8_MAX_CODE;

use super::dot::{self, DotLanes};
use super::rows::{self, RowLanes};

/// f32 lanes per vector.
const F32_LANES: usize = 8;
/// i8 elements per integer step: 16 bytes widen to one vector of 16 i16.
const I8_STEP: usize = 16;
/// Activation rows per register tile.
const ROWS: usize = 4;
/// Weight rows per register tile (ROWS × COLS = 12 accumulators + 4 operand registers).
const COLS: usize = 3;

#[target_feature(enable = "avx2")]
#[inline]
fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn hsum_f32(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Proof that the CPU runs AVX2 and FMA: the dot-product GEMMs of `dot.rs` run on it.
#[derive(Clone, Copy)]
pub(super) struct Avx2 {
    _private: (),
}

impl Avx2 {
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[inline(always)]
    unsafe fn new() -> Self {
        Avx2 { _private: () }
    }
}

// SAFETY (for every block in this impl): an `Avx2` exists only where the CPU supports AVX2 and
// FMA (`Avx2::new`'s contract), which is all these intrinsics need; loads carry their own
// contract.
impl DotLanes for Avx2 {
    type F32 = __m256;
    type Int = __m256i;
    const F32_LANES: usize = F32_LANES;
    const I8_STEP: usize = I8_STEP;

    #[inline(always)]
    fn zero_f32(self) -> __m256 {
        // SAFETY: AVX2 is present (impl comment).
        unsafe { _mm256_setzero_ps() }
    }

    #[inline(always)]
    unsafe fn load_f32(self, src: *const f32) -> __m256 {
        // SAFETY: `src` is readable for 8 f32 (contract); AVX2 is present (impl comment).
        unsafe { _mm256_loadu_ps(src) }
    }

    #[inline(always)]
    fn fmadd(self, a: __m256, b: __m256, acc: __m256) -> __m256 {
        // SAFETY: FMA is present (impl comment).
        unsafe { _mm256_fmadd_ps(a, b, acc) }
    }

    #[inline(always)]
    fn hsum_f32(self, v: __m256) -> f32 {
        // SAFETY: AVX2 is present (impl comment).
        unsafe { hsum_f32(v) }
    }

    #[inline(always)]
    fn zero_int(self) -> __m256i {
        // SAFETY: AVX2 is present (impl comment).
        unsafe { _mm256_setzero_si256() }
    }

    #[inline(always)]
    unsafe fn load_i16(self, src: *const i16) -> __m256i {
        // SAFETY: `src` is readable for 16 i16 (contract); AVX2 is present (impl comment).
        unsafe { _mm256_loadu_si256(src.cast()) }
    }

    #[inline(always)]
    unsafe fn load_i8_as_i16(self, src: *const i8) -> __m256i {
        // SAFETY: `src` is readable for 16 bytes (contract); AVX2 is present (impl comment).
        unsafe { _mm256_cvtepi8_epi16(_mm_loadu_si128(src.cast())) }
    }

    #[inline(always)]
    fn madd_i16(self, a: __m256i, b: __m256i, acc: __m256i) -> __m256i {
        // SAFETY: AVX2 is present (impl comment).
        unsafe { _mm256_add_epi32(acc, _mm256_madd_epi16(a, b)) }
    }

    #[inline(always)]
    fn hsum_i32(self, v: __m256i) -> i32 {
        // SAFETY: AVX2 is present (impl comment).
        unsafe { hsum_i32(v) }
    }
}

/// See `GemmKernels::gemm_f32`: `dot::gemm_f32` with 4 × 3 tiles.
///
/// # Safety
/// The CPU must support AVX2 and FMA, and the shapes must have been checked with
/// `check_gemm_shapes`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn gemm_f32(a: &[f32], b: &[f32], m: usize, n: usize, k: usize, c: &mut [f32]) {
    // SAFETY: this function's contract is `Avx2::new`'s and `dot::gemm_f32`'s, and it enables
    // the features.
    unsafe { dot::gemm_f32::<_, ROWS, COLS>(Avx2::new(), a, b, m, n, k, c) }
}

/// See `GemmKernels::gemm_i8_i32`: `dot::gemm_i8_i32` with 4 × 3 tiles.
///
/// # Safety
/// The CPU must support AVX2 and FMA, and the shapes must have been checked with
/// `check_gemm_shapes`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn gemm_i8_i32(
    a_q: &[i8],
    w_q: &[i8],
    m: usize,
    n: usize,
    k: usize,
    acc: &mut [i32],
) {
    // SAFETY: this function's contract is `Avx2::new`'s and `dot::gemm_i8_i32`'s, and it
    // enables the features.
    unsafe { dot::gemm_i8_i32::<_, ROWS, COLS>(Avx2::new(), a_q, w_q, m, n, k, acc) }
}

/// `max |x|` of a row; exact (a maximum), so equal to `scalar::row_scale`'s for finite input.
#[target_feature(enable = "avx2")]
fn absmax(row: &[f32]) -> f32 {
    let magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let mut maxima = [_mm256_setzero_ps(); 2];
    let chunks = row.chunks_exact(2 * F32_LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (half, maximum) in maxima.iter_mut().enumerate() {
            // SAFETY: `chunk` holds 16 floats, so the 8 at half * 8 are in bounds.
            let x = unsafe { _mm256_loadu_ps(chunk.as_ptr().add(half * F32_LANES)) };
            *maximum = _mm256_max_ps(*maximum, _mm256_and_ps(x, magnitude));
        }
    }
    let combined = _mm256_max_ps(maxima[0], maxima[1]);
    let s = _mm_max_ps(
        _mm256_castps256_ps128(combined),
        _mm256_extractf128_ps::<1>(combined),
    );
    let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_max_ss(s, _mm_movehdup_ps(s));
    tail.iter()
        .fold(_mm_cvtss_f32(s), |max, &x| max.max(x.abs()))
}

/// Quantizes one row with a non-zero scale; bit-identical to `scalar::quantize_row_with`.
#[target_feature(enable = "avx2")]
fn quantize_row(row: &[f32], scale: f32, q_row: &mut [i8]) {
    const STEP: usize = 4 * F32_LANES;
    let scales = _mm256_set1_ps(scale);
    let lo = _mm256_set1_ps(-I8_MAX_CODE);
    let hi = _mm256_set1_ps(I8_MAX_CODE);
    // packs interleave the 128-bit lanes; this puts the 4-byte groups back in order.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let chunks = row.chunks_exact(STEP);
    let tail = chunks.remainder();
    let mut q_chunks = q_row.chunks_exact_mut(STEP);
    for (chunk, q_chunk) in chunks.zip(&mut q_chunks) {
        let mut codes = [_mm256_setzero_si256(); 4];
        for (v, code) in codes.iter_mut().enumerate() {
            // SAFETY: `chunk` holds 32 floats, so the 8 at v * 8 are in bounds.
            let x = unsafe { _mm256_loadu_ps(chunk.as_ptr().add(v * F32_LANES)) };
            // IEEE division and round-half-even, exactly as the scalar code; clamping before
            // or after rounding is the same for integer bounds.
            let y = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_div_ps(x, scales),
            );
            *code = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(y, lo), hi));
        }
        let words_01 = _mm256_packs_epi32(codes[0], codes[1]);
        let words_23 = _mm256_packs_epi32(codes[2], codes[3]);
        let bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(words_01, words_23), order);
        // SAFETY: `q_chunk` holds 32 bytes; storeu has no alignment requirement.
        unsafe { _mm256_storeu_si256(q_chunk.as_mut_ptr().cast(), bytes) };
    }
    scalar::quantize_row_with(tail, scale, q_chunks.into_remainder());
}

impl RowLanes for Avx2 {
    #[inline(always)]
    fn absmax(self, row: &[f32]) -> f32 {
        // SAFETY: a `Avx2` exists only where the CPU supports AVX2 and FMA (`Avx2::new`).
        unsafe { absmax(row) }
    }

    #[inline(always)]
    fn quantize_row(self, row: &[f32], scale: f32, q_row: &mut [i8]) {
        // SAFETY: a `Avx2` exists only where the CPU supports AVX2 and FMA (`Avx2::new`).
        unsafe { quantize_row(row, scale, q_row) }
    }
}

/// See `GemmKernels::quantize_rows_i8`: `rows::quantize_rows_i8` on these lanes.
///
/// # Safety
/// The CPU must support AVX2 and FMA, and the shapes must have been checked with
/// `check_quantize_shapes`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn quantize_rows_i8(
    a: &[f32],
    m: usize,
    k: usize,
    q: &mut [i8],
    scales: &mut [f32],
) {
    // SAFETY: this function's contract is `Avx2::new`'s, and it enables the features.
    rows::quantize_rows_i8(unsafe { Avx2::new() }, a, m, k, q, scales)
}

/// See `GemmKernels::quantize_blocks`: `rows::quantize_blocks` on these lanes.
///
/// # Safety
/// The CPU must support AVX2 and FMA, and the shapes must have been checked with
/// `check_quantize_blocks_shapes`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn quantize_blocks(
    a: &[f32],
    codes: &mut [i8],
    scales: &mut [f32],
    sums: &mut [i32],
) {
    // SAFETY: this function's contract is `Avx2::new`'s, and it enables the features.
    rows::quantize_blocks(unsafe { Avx2::new() }, a, codes, scales, sums)
}
