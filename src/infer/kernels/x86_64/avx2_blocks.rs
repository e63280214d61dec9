//! AVX2 + FMA block kernels (see `kernels::blocks`), also used by the AVX-512 table without VNNI.
//!
//! One 32-element block per 256-bit vector, activations and weights in natural order.
//! `vpmaddubsw` multiplies unsigned by signed bytes into saturating i16 pair sums, so the
//! operand roles are chosen to stay exact:
//! - Q4 nibbles are unsigned (`0..=15`): `maddubs(q, a)`, pair sums `≤ 2·15·128`;
//! - int8 weights: `maddubs(|w|, sign(a, w))`: `|w| ≤ 128` as an unsigned byte (also for
//!   -128), `|sign(a, w)| = |a| ≤ 127`, pair sums `≤ 2·128·127 < 2^15`. This needs activation
//!   codes in `-127..=127`, which is what `quantize_blocks` produces.
//!
//! `vpmaddwd` against ones then adds the pairs into 8 exact i32 lanes per block, which are
//! converted to f32, multiplied by the activation block scale and added with an FMA of the
//! weight block scale into an f32 accumulator per output; lanes are reduced once per output.
//! With one scale per weight row (`gemm_blocks_i8_rows`) the lanes are added with an FMA of the
//! activation block scale alone, and the row scale multiplies the reduced sum once.

use std::arch::x86_64::*;

use super::avx2::hsum_f32;
use crate::infer::kernels::blocks::{BlockActsView, QK};

/// Activation rows per register tile.
const ROWS: usize = 4;
/// Weight rows per register tile (ROWS × COLS = 8 accumulators, + 4 weight vectors for int8).
const COLS: usize = 2;

/// The 32 4-bit codes of a Q4 block (16 bytes at `p`, element `t` in the low nibble of byte
/// `t` and element `t + 16` in the high nibble) as 32 bytes in element order.
///
/// # Safety
/// The CPU must support AVX2; `p` must be valid for reading 16 bytes.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn load_q4_block(p: *const u8) -> __m256i {
    // SAFETY: 16 readable bytes (contract above); loadu has no alignment requirement.
    let bytes = unsafe { _mm_loadu_si128(p.cast()) };
    // Low 128 bits keep the low nibbles, high 128 bits shift the high nibbles down.
    let both = _mm256_broadcastsi128_si256(bytes);
    let shifted = _mm256_srlv_epi32(both, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    _mm256_and_si256(shifted, _mm256_set1_epi8(0x0f))
}

/// f32 sums over the blocks of `R` activation rows × `C` weight rows of
/// `da · d · Σ_block a·q` (the `mn` term excluded), or of `da · Σ_block a·q` if `ROW_D` (one
/// scale per weight row, applied by the caller; `d` is not read).
///
/// `U4` selects the weight format: 16 bytes of nibbles per block, or 32 i8 per block.
///
/// # Safety
/// The CPU must support AVX2 and FMA. For every `r < R`, `a.add(r * lda)` must be valid for
/// reading `nb * 32` bytes and `da.add(r * nb)` for `nb` f32; for every `c < C`,
/// `w.add(c * ldw)` must be valid for reading `nb` blocks and, unless `ROW_D`, `d.add(c * nb)`
/// for `nb` f32.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn block_tile<const R: usize, const C: usize, const U4: bool, const ROW_D: bool>(
    (a, lda, da): (*const i8, usize, *const f32),
    (w, ldw, d): (*const u8, usize, *const f32),
    nb: usize,
) -> [[f32; C]; R] {
    let block_bytes = if U4 { QK / 2 } else { QK };
    let ones = _mm256_set1_epi16(1);
    let mut sums = [[_mm256_setzero_ps(); C]; R];
    for b in 0..nb {
        // For U4: the nibbles. For int8: the weights (signs) and their magnitudes.
        let mut w_vecs = [_mm256_setzero_si256(); C];
        let mut w_abs = [_mm256_setzero_si256(); C];
        let mut d_vecs = [_mm256_setzero_ps(); C];
        for (c, ((w_vec, abs), d_vec)) in w_vecs
            .iter_mut()
            .zip(&mut w_abs)
            .zip(&mut d_vecs)
            .enumerate()
        {
            let block = w.wrapping_add(c * ldw + b * block_bytes);
            if U4 {
                // SAFETY: block b of weight row c is readable (contract above).
                *w_vec = unsafe { load_q4_block(block) };
            } else {
                // SAFETY: as above; 32 bytes.
                *w_vec = unsafe { _mm256_loadu_si256(block.cast()) };
                *abs = _mm256_abs_epi8(*w_vec);
            }
            if !ROW_D {
                // SAFETY: d of row c has nb entries (contract above).
                *d_vec = _mm256_set1_ps(unsafe { *d.add(c * nb + b) });
            }
        }
        for (r, row_sums) in sums.iter_mut().enumerate() {
            // SAFETY: block b of activation row r is readable (contract above).
            let a_vec = unsafe { _mm256_loadu_si256(a.add(r * lda + b * QK).cast()) };
            // SAFETY: da of row r has nb entries (contract above).
            let da_vec = _mm256_set1_ps(unsafe { *da.add(r * nb + b) });
            for (c, sum) in row_sums.iter_mut().enumerate() {
                let pairs = if U4 {
                    _mm256_maddubs_epi16(w_vecs[c], a_vec)
                } else {
                    _mm256_maddubs_epi16(w_abs[c], _mm256_sign_epi8(a_vec, w_vecs[c]))
                };
                let lanes = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
                *sum = if ROW_D {
                    _mm256_fmadd_ps(lanes, da_vec, *sum)
                } else {
                    _mm256_fmadd_ps(_mm256_mul_ps(lanes, da_vec), d_vecs[c], *sum)
                };
            }
        }
    }
    let mut out = [[0.0f32; C]; R];
    for (out_row, row_sums) in out.iter_mut().zip(&sums) {
        for (out, &sum) in out_row.iter_mut().zip(row_sums) {
            *out = hsum_f32(sum);
        }
    }
    out
}

/// Adds one `R × C` tile of [`block_tile`] to `y` at `(i, j)` (times `d[j + c]` if `ROW_D`).
///
/// # Safety
/// The CPU must support AVX2 and FMA; the shapes of `a`, `w` (`n` rows of `ldw` bytes, `ldw` =
/// `nb` blocks), `d` (`n` row scales if `ROW_D`) and `y` (`m` rows of stride `ldy`) must have
/// been checked with `check_block_gemm_shapes` (`check_block_gemm_rows_shapes` if `ROW_D`),
/// `i + R <= m` and `j + C <= n`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn add_block_tile<const R: usize, const C: usize, const U4: bool, const ROW_D: bool>(
    a: &BlockActsView<'_>,
    w: *const u8,
    ldw: usize,
    d: &[f32],
    y: &mut [f32],
    ldy: usize,
    (i, j): (usize, usize),
) {
    let nb = a.k / QK;
    let d_tile = d.as_ptr().wrapping_add(if ROW_D { j } else { j * nb });
    // SAFETY: rows i..i+R of the activations and j..j+C of the weights exist (contract), so
    // each row pointer is readable for its nb blocks and nb scales (`d` is not read if ROW_D).
    let sums = unsafe {
        block_tile::<R, C, U4, ROW_D>(
            (
                a.codes.as_ptr().add(i * a.k),
                a.k,
                a.scales.as_ptr().add(i * nb),
            ),
            (w.add(j * ldw), ldw, d_tile),
            nb,
        )
    };
    for (r, row) in sums.iter().enumerate() {
        let y_row = &mut y[(i + r) * ldy + j..][..C];
        for (c, (out, &sum)) in y_row.iter_mut().zip(row).enumerate() {
            *out += if ROW_D { d[j + c] * sum } else { sum };
        }
    }
}

/// Adds `Σ_b da · d · isum` to `y` (the caller initialised `y` with the `mn` term), or
/// `d[j] · Σ_b da · isum` if `ROW_D` (`d` = one scale per weight row).
///
/// # Safety
/// The CPU must support AVX2 and FMA; the shapes must have been checked with
/// `check_block_gemm_shapes` (`check_block_gemm_rows_shapes` if `ROW_D`), with `w` valid for
/// reading `n` rows of `ldw` bytes.
#[target_feature(enable = "avx2,fma")]
unsafe fn gemm_blocks<const U4: bool, const ROW_D: bool>(
    a: &BlockActsView<'_>,
    (w, ldw, d): (*const u8, usize, &[f32]),
    n: usize,
    y: &mut [f32],
    ldy: usize,
) {
    let m = a.m;
    let mut j = 0;
    while j < n {
        let full_cols = j + COLS <= n;
        let mut i = 0;
        while i < m {
            let full_rows = i + ROWS <= m;
            let ij = (i, j);
            // SAFETY: each arm's tile fits inside m × n at (i, j) (checked by the conditions),
            // the shapes were checked and the CPU supports AVX2 + FMA (contract above).
            unsafe {
                match (full_rows, full_cols) {
                    (true, true) => {
                        add_block_tile::<ROWS, COLS, U4, ROW_D>(a, w, ldw, d, y, ldy, ij)
                    }
                    (false, true) => add_block_tile::<1, COLS, U4, ROW_D>(a, w, ldw, d, y, ldy, ij),
                    (true, false) => add_block_tile::<ROWS, 1, U4, ROW_D>(a, w, ldw, d, y, ldy, ij),
                    (false, false) => add_block_tile::<1, 1, U4, ROW_D>(a, w, ldw, d, y, ldy, ij),
                }
            }
            i += if full_rows { ROWS } else { 1 };
        }
        j += if full_cols { COLS } else { 1 };
    }
}

/// The `Σ_b da · d · isum` part of `GemmKernels::gemm_blocks_i8`, added to `y`.
///
/// # Safety
/// The CPU must support AVX2 and FMA, and the shapes must have been checked with
/// `check_block_gemm_shapes`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn gemm_blocks_i8(
    a: &BlockActsView<'_>,
    q: &[i8],
    d: &[f32],
    n: usize,
    y: &mut [f32],
    ldy: usize,
) {
    // SAFETY: `q` holds n rows of k bytes (checked shapes); same CPU contract.
    unsafe { gemm_blocks::<false, false>(a, (q.as_ptr().cast(), a.k, d), n, y, ldy) }
}

/// `GemmKernels::gemm_blocks_i8_rows`, added to `y` (the caller zeroes it).
///
/// # Safety
/// The CPU must support AVX2 and FMA, and the shapes must have been checked with
/// `check_block_gemm_rows_shapes`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn gemm_blocks_i8_rows(
    a: &BlockActsView<'_>,
    q: &[i8],
    d_row: &[f32],
    n: usize,
    y: &mut [f32],
    ldy: usize,
) {
    // SAFETY: `q` holds n rows of k bytes and `d_row` n scales (checked shapes); same CPU
    // contract.
    unsafe { gemm_blocks::<false, true>(a, (q.as_ptr().cast(), a.k, d_row), n, y, ldy) }
}

/// The `Σ_b da · d · isum` part of `GemmKernels::gemm_blocks_u4`, added to `y`.
///
/// # Safety
/// The CPU must support AVX2 and FMA, and the shapes must have been checked with
/// `check_block_gemm_shapes`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn gemm_blocks_u4(
    a: &BlockActsView<'_>,
    q: &[u8],
    d: &[f32],
    n: usize,
    y: &mut [f32],
    ldy: usize,
) {
    // SAFETY: `q` holds n rows of k / 2 bytes (checked shapes); same CPU contract.
    unsafe { gemm_blocks::<true, false>(a, (q.as_ptr(), a.k / 2, d), n, y, ldy) }
}
