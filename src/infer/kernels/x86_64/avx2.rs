//! AVX2 + FMA kernels: 8 f32 lanes, 16 i16 lanes.
//!
//! Both GEMMs are dot-product shaped (`c = a · bᵀ`, both operands contiguous along `k`): a
//! register tile of `ROWS` activation rows × `COLS` weight rows keeps one vector accumulator per
//! output and reduces it horizontally once per `k` block. Weight rows are the outer loop, so a
//! tile of weights stays in L1 while every activation row tile passes by it, and the weights
//! (the large operand) are read from memory once per `k` block. When there is more than one row
//! tile, `k` is blocked by `K_BLOCK` and the activation block is first copied contiguously:
//! rows at a large power-of-two stride (k = 4096) map to the same L1 sets and evict each other.
//! With a single row tile (`m <= ROWS`, e.g. GEMV) `k` is not blocked, so each weight row is one
//! prefetcher-friendly stream. The kernels allocate that copy (at most `m × K_BLOCK` elements,
//! or `m × k` i16 for the int8 GEMM with `m <= ROWS`) per call.
//!
//! The int8 GEMM widens the activations to i16 once per `k` block (into the contiguous copy),
//! sign-extends the weights to i16 as they stream in (`vpmovsxbw`) and multiplies with
//! `vpmaddwd`: each i32 lane gets `p0·q0 + p1·q1` with `|p·q| ≤ 128²`, so no step saturates and
//! the result is the exact integer sum for any i8 input (no `vpmaddubsw`, whose i16 pair sums
//! can saturate).

use std::arch::x86_64::*;
use std::slice;

use crate::infer::kernels::blocks::QK;
use crate::infer::kernels::scalar;
use crate::infer::kernels::I8_MAX_CODE;

/// f32 lanes per vector.
const F32_LANES: usize = 8;
/// i8 elements per integer step: 16 bytes widen to one vector of 16 i16.
const I8_STEP: usize = 16;
/// Activation rows per register tile.
const ROWS: usize = 4;
/// Weight rows per register tile (ROWS × COLS = 12 accumulators + 4 operand registers).
const COLS: usize = 3;
/// Elements of `k` per block when `m > ROWS`: a tile's 4 activation rows + 3 weight rows of this
/// many f32 (28 KiB) stay in L1; the whole packed activation block sits in L2.
/// A multiple of both steps, so only the last block has a scalar tail.
const K_BLOCK: usize = 1024;

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

/// Dot products of `R` activation rows with `C` weight rows over `kc` elements.
///
/// # Safety
/// The CPU must support AVX2 and FMA. For every `r < R`, `a.add(r * lda)` must be valid for
/// reading `kc` f32, and for every `c < C`, `b.add(c * ldb)` likewise.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile_f32<const R: usize, const C: usize>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    kc: usize,
) -> [[f32; C]; R] {
    let mut sums = [[_mm256_setzero_ps(); C]; R];
    let simd_len = kc - kc % F32_LANES;
    let tail_len = kc - simd_len;
    let mut kk = 0;
    while kk < simd_len {
        let mut b_vecs = [_mm256_setzero_ps(); C];
        for (c, b_vec) in b_vecs.iter_mut().enumerate() {
            // SAFETY: kk + 8 <= kc and row c < C is readable for kc f32 (contract above).
            *b_vec = unsafe { _mm256_loadu_ps(b.add(c * ldb + kk)) };
        }
        for (r, row_sums) in sums.iter_mut().enumerate() {
            // SAFETY: kk + 8 <= kc and row r < R is readable for kc f32 (contract above).
            let a_vec = unsafe { _mm256_loadu_ps(a.add(r * lda + kk)) };
            for (sum, &b_vec) in row_sums.iter_mut().zip(&b_vecs) {
                *sum = _mm256_fmadd_ps(a_vec, b_vec, *sum);
            }
        }
        kk += F32_LANES;
    }
    let mut out = [[0.0f32; C]; R];
    for (r, (out_row, row_sums)) in out.iter_mut().zip(&sums).enumerate() {
        // SAFETY: row r is readable for kc f32 (contract above).
        let a_tail = unsafe { slice::from_raw_parts(a.add(r * lda + simd_len), tail_len) };
        for (c, (out, &sum)) in out_row.iter_mut().zip(row_sums).enumerate() {
            // SAFETY: row c is readable for kc f32 (contract above).
            let b_tail = unsafe { slice::from_raw_parts(b.add(c * ldb + simd_len), tail_len) };
            let tail: f32 = a_tail.iter().zip(b_tail).map(|(&x, &y)| x * y).sum();
            *out = hsum_f32(sum) + tail;
        }
    }
    out
}

/// Exact integer dot products of `R` activation rows (already widened to i16) with `C` weight
/// rows over `kc` elements.
///
/// # Safety
/// The CPU must support AVX2. For every `r < R`, `a.add(r * lda)` must be valid for
/// reading `kc` i16, and for every `c < C`, `w.add(c * ldw)` must be valid for reading `kc`
/// bytes.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn tile_i8<const R: usize, const C: usize>(
    a: *const i16,
    lda: usize,
    w: *const i8,
    ldw: usize,
    kc: usize,
) -> [[i32; C]; R] {
    let mut sums = [[_mm256_setzero_si256(); C]; R];
    let simd_len = kc - kc % I8_STEP;
    let tail_len = kc - simd_len;
    let mut kk = 0;
    while kk < simd_len {
        let mut w_vecs = [_mm256_setzero_si256(); C];
        for (c, w_vec) in w_vecs.iter_mut().enumerate() {
            // SAFETY: kk + 16 <= kc and row c < C is readable for kc bytes (contract above).
            let bytes = unsafe { _mm_loadu_si128(w.add(c * ldw + kk).cast()) };
            *w_vec = _mm256_cvtepi8_epi16(bytes);
        }
        for (r, row_sums) in sums.iter_mut().enumerate() {
            // SAFETY: kk + 16 <= kc and row r < R is readable for kc i16 (contract above).
            let a_vec = unsafe { _mm256_loadu_si256(a.add(r * lda + kk).cast()) };
            for (sum, &w_vec) in row_sums.iter_mut().zip(&w_vecs) {
                *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(a_vec, w_vec));
            }
        }
        kk += I8_STEP;
    }
    let mut out = [[0i32; C]; R];
    for (r, (out_row, row_sums)) in out.iter_mut().zip(&sums).enumerate() {
        // SAFETY: row r is readable for kc i16 (contract above).
        let a_tail = unsafe { slice::from_raw_parts(a.add(r * lda + simd_len), tail_len) };
        for (c, (out, &sum)) in out_row.iter_mut().zip(row_sums).enumerate() {
            // SAFETY: row c is readable for kc bytes (contract above).
            let w_tail = unsafe { slice::from_raw_parts(w.add(c * ldw + simd_len), tail_len) };
            *out = hsum_i32(sum)
                + a_tail
                    .iter()
                    .zip(w_tail)
                    .map(|(&x, &y)| i32::from(x) * i32::from(y))
                    .sum::<i32>();
        }
    }
    out
}

/// Adds one `R × C` f32 tile at output `(i, j)` for the `k` block starting at `k0`; row `r` of
/// that block of `a` starts at `a[r * lda + a_k0]` (`a` may be a packed copy of the block).
///
/// # Safety
/// The CPU must support AVX2 and FMA; `a` holds `m` rows of stride `lda` with `a_k0 + kc <= lda`, `b` is
/// `n × k`, `c` is `m × n` (checked shapes), `i + R <= m`, `j + C <= n` and `k0 + kc <= k`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn add_tile_f32<const R: usize, const C: usize>(
    (a, lda, a_k0): (&[f32], usize, usize),
    b: &[f32],
    c: &mut [f32],
    n: usize,
    k: usize,
    (i, j): (usize, usize),
    k0: usize,
    kc: usize,
) {
    // SAFETY: rows i..i+R of `a` (stride lda, a_k0 + kc <= lda) and j..j+C of `b` exist and k0 + kc <= k, so every row pointer
    // is readable for kc elements; the CPU supports the features (contract above).
    let sums = unsafe {
        tile_f32::<R, C>(
            a.as_ptr().add(i * lda + a_k0),
            lda,
            b.as_ptr().add(j * k + k0),
            k,
            kc,
        )
    };
    for (r, row) in sums.iter().enumerate() {
        let c_row = &mut c[(i + r) * n + j..][..C];
        for (out, &sum) in c_row.iter_mut().zip(row) {
            *out += sum;
        }
    }
}

/// Adds one `R × C` i32 tile at output `(i, j)` for the `k` block starting at `k0`; row `r` of
/// that block of `a` starts at `a[r * lda + a_k0]` (`a` may be a packed copy of the block).
///
/// # Safety
/// The CPU must support AVX2; `a` holds `m` rows of stride `lda` with `a_k0 + kc <= lda`, `w` is
/// `n × k`, `acc` is `m × n` (checked shapes), `i + R <= m`, `j + C <= n` and `k0 + kc <= k`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn add_tile_i8<const R: usize, const C: usize>(
    (a, lda, a_k0): (&[i16], usize, usize),
    w: &[i8],
    acc: &mut [i32],
    n: usize,
    k: usize,
    (i, j): (usize, usize),
    k0: usize,
    kc: usize,
) {
    // SAFETY: rows i..i+R of `a` (stride lda, a_k0 + kc <= lda) and j..j+C of `w` exist and k0 + kc <= k, so every row pointer
    // is readable for kc elements; the CPU supports AVX2 (contract above).
    let sums = unsafe {
        tile_i8::<R, C>(
            a.as_ptr().add(i * lda + a_k0),
            lda,
            w.as_ptr().add(j * k + k0),
            k,
            kc,
        )
    };
    for (r, row) in sums.iter().enumerate() {
        let acc_row = &mut acc[(i + r) * n + j..][..C];
        for (out, &sum) in acc_row.iter_mut().zip(row) {
            *out += sum;
        }
    }
}

/// See `GemmKernels::gemm_f32`.
///
/// # Safety
/// The CPU must support AVX2 and FMA, and the shapes must have been checked with
/// `check_gemm_shapes`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn gemm_f32(a: &[f32], b: &[f32], m: usize, n: usize, k: usize, c: &mut [f32]) {
    c.fill(0.0);
    let mut packed: Vec<f32> = Vec::new();
    // With a single row tile there is no reuse of weights to protect: one pass over each
    // weight row keeps the hardware prefetcher streaming.
    let k_block = if m <= ROWS { k.max(1) } else { K_BLOCK };
    for k0 in (0..k).step_by(k_block) {
        let kc = k_block.min(k - k0);
        // Rows of `a` at a large power-of-two stride share L1 sets and evict each other; a
        // contiguous copy of the block stays cached while every weight tile passes by.
        let (a_block, lda, a_k0) = if m > ROWS {
            packed.clear();
            packed.extend(a.chunks_exact(k).flat_map(|row| &row[k0..k0 + kc]));
            (&packed[..], kc, 0)
        } else {
            (a, k, k0)
        };
        let mut j = 0;
        while j < n {
            let full_cols = j + COLS <= n;
            let mut i = 0;
            while i < m {
                let full_rows = i + ROWS <= m;
                // SAFETY: each arm's tile fits inside m × n at (i, j) (checked by the
                // conditions), k0 + kc <= k, the shapes were checked and the CPU supports
                // AVX2 + FMA (contract above).
                unsafe {
                    match (full_rows, full_cols) {
                        (true, true) => add_tile_f32::<ROWS, COLS>(
                            (a_block, lda, a_k0),
                            b,
                            c,
                            n,
                            k,
                            (i, j),
                            k0,
                            kc,
                        ),
                        (false, true) => add_tile_f32::<1, COLS>(
                            (a_block, lda, a_k0),
                            b,
                            c,
                            n,
                            k,
                            (i, j),
                            k0,
                            kc,
                        ),
                        (true, false) => add_tile_f32::<ROWS, 1>(
                            (a_block, lda, a_k0),
                            b,
                            c,
                            n,
                            k,
                            (i, j),
                            k0,
                            kc,
                        ),
                        (false, false) => {
                            add_tile_f32::<1, 1>((a_block, lda, a_k0), b, c, n, k, (i, j), k0, kc)
                        }
                    }
                }
                i += if full_rows { ROWS } else { 1 };
            }
            j += if full_cols { COLS } else { 1 };
        }
    }
}

/// See `GemmKernels::gemm_i8_i32`.
///
/// # Safety
/// The CPU must support AVX2, and the shapes must have been checked with `check_gemm_shapes`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn gemm_i8_i32(
    a_q: &[i8],
    w_q: &[i8],
    m: usize,
    n: usize,
    k: usize,
    acc: &mut [i32],
) {
    acc.fill(0);
    let mut packed: Vec<i16> = Vec::new();
    // With a single row tile there is no reuse of weights to protect: one pass over each
    // weight row keeps the hardware prefetcher streaming.
    let k_block = if m <= ROWS { k.max(1) } else { K_BLOCK };
    for k0 in (0..k).step_by(k_block) {
        let kc = k_block.min(k - k0);
        // The activations are widened to i16 once per block instead of once per weight tile,
        // and the contiguous copy avoids the L1 set conflicts of rows at a power-of-two stride.
        packed.clear();
        packed.extend(
            a_q.chunks_exact(k)
                .flat_map(|row| row[k0..k0 + kc].iter().map(|&x| i16::from(x))),
        );
        let (a_block, lda, a_k0) = (&packed[..], kc, 0);
        let mut j = 0;
        while j < n {
            let full_cols = j + COLS <= n;
            let mut i = 0;
            while i < m {
                let full_rows = i + ROWS <= m;
                // SAFETY: each arm's tile fits inside m × n at (i, j) (checked by the
                // conditions), k0 + kc <= k, the shapes were checked and the CPU supports
                // AVX2 (contract above).
                unsafe {
                    match (full_rows, full_cols) {
                        (true, true) => add_tile_i8::<ROWS, COLS>(
                            (a_block, lda, a_k0),
                            w_q,
                            acc,
                            n,
                            k,
                            (i, j),
                            k0,
                            kc,
                        ),
                        (false, true) => add_tile_i8::<1, COLS>(
                            (a_block, lda, a_k0),
                            w_q,
                            acc,
                            n,
                            k,
                            (i, j),
                            k0,
                            kc,
                        ),
                        (true, false) => add_tile_i8::<ROWS, 1>(
                            (a_block, lda, a_k0),
                            w_q,
                            acc,
                            n,
                            k,
                            (i, j),
                            k0,
                            kc,
                        ),
                        (false, false) => add_tile_i8::<1, 1>(
                            (a_block, lda, a_k0),
                            w_q,
                            acc,
                            n,
                            k,
                            (i, j),
                            k0,
                            kc,
                        ),
                    }
                }
                i += if full_rows { ROWS } else { 1 };
            }
            j += if full_cols { COLS } else { 1 };
        }
    }
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

/// See `GemmKernels::quantize_rows_i8`.
///
/// # Safety
/// The CPU must support AVX2, and the shapes must have been checked with
/// `check_quantize_shapes`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn quantize_rows_i8(
    a: &[f32],
    m: usize,
    k: usize,
    q: &mut [i8],
    scales: &mut [f32],
) {
    if k == 0 {
        scales.fill(0.0);
        return;
    }
    debug_assert_eq!(a.len(), m * k);
    for ((row, q_row), scale_out) in a
        .chunks_exact(k)
        .zip(q.chunks_exact_mut(k))
        .zip(scales.iter_mut())
    {
        let scale = absmax(row) / I8_MAX_CODE;
        *scale_out = scale;
        if scale == 0.0 {
            q_row.fill(0);
        } else {
            quantize_row(row, scale, q_row);
        }
    }
}

/// See `GemmKernels::quantize_blocks`: the per-row code of `quantize_rows_i8` applied to every
/// 32-element block, so scales and codes are bit-identical to `scalar::quantize_blocks`.
///
/// # Safety
/// The CPU must support AVX2, and the shapes must have been checked with
/// `check_quantize_blocks_shapes`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn quantize_blocks(
    a: &[f32],
    codes: &mut [i8],
    scales: &mut [f32],
    sums: &mut [i32],
) {
    for (((block, q_block), scale_out), sum_out) in a
        .chunks_exact(QK)
        .zip(codes.chunks_exact_mut(QK))
        .zip(scales.iter_mut())
        .zip(sums.iter_mut())
    {
        let scale = absmax(block) / I8_MAX_CODE;
        *scale_out = scale;
        if scale == 0.0 {
            q_block.fill(0);
            *sum_out = 0;
        } else {
            quantize_row(block, scale, q_block);
            *sum_out = q_block.iter().map(|&x| i32::from(x)).sum();
        }
    }
}
