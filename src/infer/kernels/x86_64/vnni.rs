//! AVX-512 VNNI kernels (F + BW + VL + VNNI): `vpdpbusd` multiplies 4 unsigned bytes by 4
//! signed bytes and adds the 4 products to an i32 lane, without saturation.
//!
//! `vpdpbusd` wants one unsigned operand, so the signed int8 GEMM offsets the activations:
//! `u = a + 128` (`a ^ 0x80` as a byte), `Σ u·w = Σ a·w + 128·Σ w`, and the weight row sums
//! `Σ w` are accumulated with a second `vpdpbusd` against bytes of 1 during the first row
//! tile only. Every lane sum wraps modulo 2^32 (no saturation), so subtracting `128·Σ w` at the
//! end gives the exact result whenever it fits an i32, i.e. for any i8 input with `k < 2^17`.
//! The GEMM has the structure of `avx512.rs` (4 × 4 register tile, weight rows outer, `k`
//! blocked with a contiguous offset copy of the activation block); tails of `k` use masked
//! loads, which read only the selected bytes.
//!
//! The block kernels (see `kernels::blocks`) use 256-bit `vpdpbusd` (AVX-512 VL): one 32-element
//! block per vector, so activations and weights keep their natural order. A block's 8 i32 lane
//! sums are converted to f32 (exact: `|lane| ≤ 4·255·128`), multiplied by the activation block
//! scale and added with an FMA of the weight block scale into an f32 accumulator per output;
//! lanes are reduced once per output at the end. Q4 nibbles are unsigned already
//! (`vpdpbusd(q, a)`); int8 weights are offset (`w ^ 0x80 = w + 128`) and the lane sums start
//! from `-128·Σ a` (computed per activation vector with one more `vpdpbusd`), so every block
//! sum is exact for any i8 codes.

use std::arch::x86_64::*;

use super::avx2_blocks::load_q4_block;
use crate::infer::kernels::blocks::{BlockActsView, QK};

/// i8 elements per integer step of the per-row GEMM.
const I8_STEP: usize = 64;
/// Activation rows per register tile.
const ROWS: usize = 4;
/// Weight rows per register tile (ROWS × COLS = 16 accumulators + 4 row sums + 5 operands).
const COLS: usize = 4;
/// Elements of `k` per block when `m > ROWS`: a tile's 4 activation rows + 4 weight rows of
/// this many bytes (16 KiB) stay in L1; the packed activation block sits in L2.
const K_BLOCK: usize = 2048;

/// Wrapping sums of `u · w` for `R` offset activation rows × `C` weight rows over `kc` bytes,
/// plus (if `WSUM`) the wrapping sums of each weight row (zeros otherwise).
///
/// # Safety
/// The CPU must support AVX-512 F, BW and VNNI. For every `r < R`, `a.add(r * lda)` must be
/// valid for reading `kc` bytes, and for every `c < C`, `w.add(c * ldw)` likewise.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn tile_i8<const R: usize, const C: usize, const WSUM: bool>(
    a: *const u8,
    lda: usize,
    w: *const i8,
    ldw: usize,
    kc: usize,
) -> ([[i32; C]; R], [i32; C]) {
    let ones = _mm512_set1_epi8(1);
    let mut sums = [[_mm512_setzero_si512(); C]; R];
    let mut w_sums = [_mm512_setzero_si512(); C];
    let mut kk = 0;
    while kk < kc {
        let left = kc - kk;
        let mask: __mmask64 = if left >= I8_STEP {
            u64::MAX
        } else {
            (1u64 << left) - 1
        };
        let mut w_vecs = [_mm512_setzero_si512(); C];
        for (c, w_vec) in w_vecs.iter_mut().enumerate() {
            // SAFETY: the mask selects only bytes kk..min(kk + 64, kc) of row c, readable
            // (contract above); masked-off bytes are not accessed.
            *w_vec = unsafe { _mm512_maskz_loadu_epi8(mask, w.add(c * ldw + kk)) };
        }
        if WSUM {
            for (w_sum, &w_vec) in w_sums.iter_mut().zip(&w_vecs) {
                *w_sum = _mm512_dpbusd_epi32(*w_sum, ones, w_vec);
            }
        }
        for (r, row_sums) in sums.iter_mut().enumerate() {
            // SAFETY: as above, for activation row r.
            let a_vec = unsafe { _mm512_maskz_loadu_epi8(mask, a.add(r * lda + kk).cast()) };
            for (sum, &w_vec) in row_sums.iter_mut().zip(&w_vecs) {
                *sum = _mm512_dpbusd_epi32(*sum, a_vec, w_vec);
            }
        }
        kk += I8_STEP;
    }
    let mut out = [[0i32; C]; R];
    for (out_row, row_sums) in out.iter_mut().zip(&sums) {
        for (out, &sum) in out_row.iter_mut().zip(row_sums) {
            *out = _mm512_reduce_add_epi32(sum);
        }
    }
    let mut w_out = [0i32; C];
    for (out, &w_sum) in w_out.iter_mut().zip(&w_sums) {
        *out = _mm512_reduce_add_epi32(w_sum);
    }
    (out, w_out)
}

/// Adds one `R × C` tile of wrapping `u · w` sums at output `(i, j)` for the `k` block
/// starting at `k0` (row `r` of the packed block starts at `a[(i + r) * kc]`), and on the
/// first row tile (`i == 0`) the weight row sums of the block to `w_sums[j..j + C]`.
///
/// # Safety
/// The CPU must support AVX-512 F, BW and VNNI; `a` holds `m × kc` bytes, `w` is `n × k`,
/// `acc` is `m × n` (checked shapes), `w_sums` has `n` entries, `i + R <= m`, `j + C <= n`
/// and `k0 + kc <= k`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn add_tile_i8<const R: usize, const C: usize>(
    a: &[u8],
    w: &[i8],
    acc: &mut [i32],
    w_sums: &mut [i32],
    (n, k): (usize, usize),
    (i, j): (usize, usize),
    k0: usize,
    kc: usize,
) {
    let a_ptr = a.as_ptr().wrapping_add(i * kc);
    let w_ptr = w.as_ptr().wrapping_add(j * k + k0);
    let (sums, tile_w_sums) = if i == 0 {
        // SAFETY: rows i..i+R of the packed block and j..j+C of `w` exist and k0 + kc <= k, so
        // every row pointer is readable for kc bytes; the CPU has the features (contract).
        unsafe { tile_i8::<R, C, true>(a_ptr, kc, w_ptr, k, kc) }
    } else {
        // SAFETY: as above.
        unsafe { tile_i8::<R, C, false>(a_ptr, kc, w_ptr, k, kc) }
    };
    for (r, row) in sums.iter().enumerate() {
        let acc_row = &mut acc[(i + r) * n + j..][..C];
        for (out, &sum) in acc_row.iter_mut().zip(row) {
            *out = out.wrapping_add(sum);
        }
    }
    if i == 0 {
        for (out, &sum) in w_sums[j..j + C].iter_mut().zip(&tile_w_sums) {
            *out = out.wrapping_add(sum);
        }
    }
}

/// See `GemmKernels::gemm_i8_i32`.
///
/// # Safety
/// The CPU must support AVX-512 F, BW and VNNI, and the shapes must have been checked with
/// `check_gemm_shapes`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn gemm_i8_i32(
    a_q: &[i8],
    w_q: &[i8],
    m: usize,
    n: usize,
    k: usize,
    acc: &mut [i32],
) {
    acc.fill(0);
    let mut w_sums = vec![0i32; n];
    let mut packed: Vec<u8> = Vec::new();
    // With a single row tile there is no reuse of weights to protect: one pass over each
    // weight row keeps the hardware prefetcher streaming.
    let k_block = if m <= ROWS { k.max(1) } else { K_BLOCK };
    for k0 in (0..k).step_by(k_block) {
        let kc = k_block.min(k - k0);
        // Offset to unsigned once per block; the contiguous copy also avoids the L1 set
        // conflicts of rows at a power-of-two stride.
        packed.clear();
        packed.extend(
            a_q.chunks_exact(k)
                .flat_map(|row| row[k0..k0 + kc].iter().map(|&x| x as u8 ^ 0x80)),
        );
        let mut j = 0;
        while j < n {
            let full_cols = j + COLS <= n;
            let mut i = 0;
            while i < m {
                let full_rows = i + ROWS <= m;
                let (nk, ij) = ((n, k), (i, j));
                // SAFETY: each arm's tile fits inside m × n at (i, j) (checked by the
                // conditions), k0 + kc <= k, `packed` is m × kc, the shapes were checked and
                // the CPU has the features (contract above).
                unsafe {
                    match (full_rows, full_cols) {
                        (true, true) => add_tile_i8::<ROWS, COLS>(
                            &packed,
                            w_q,
                            acc,
                            &mut w_sums,
                            nk,
                            ij,
                            k0,
                            kc,
                        ),
                        (false, true) => {
                            add_tile_i8::<1, COLS>(&packed, w_q, acc, &mut w_sums, nk, ij, k0, kc)
                        }
                        (true, false) => {
                            add_tile_i8::<ROWS, 1>(&packed, w_q, acc, &mut w_sums, nk, ij, k0, kc)
                        }
                        (false, false) => {
                            add_tile_i8::<1, 1>(&packed, w_q, acc, &mut w_sums, nk, ij, k0, kc)
                        }
                    }
                }
                i += if full_rows { ROWS } else { 1 };
            }
            j += if full_cols { COLS } else { 1 };
        }
    }
    if n == 0 {
        return;
    }
    for acc_row in acc.chunks_exact_mut(n) {
        for (out, &w_sum) in acc_row.iter_mut().zip(&w_sums) {
            *out = out.wrapping_sub(w_sum.wrapping_mul(128));
        }
    }
}

/// Weight rows per register tile of the block GEMMs (ROWS × BLOCK_COLS = 16 f32 accumulators).
const BLOCK_COLS: usize = 4;

/// f32 sums over the blocks of `R` activation rows × `C` weight rows of
/// `da · d · Σ_block a·q` (the `mn` term excluded).
///
/// `U4` selects the weight format: 16 bytes of nibbles per block, or 32 i8 per block.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL and VNNI. For every `r < R`, `a.add(r * lda)` must be
/// valid for reading `nb * 32` bytes and `da.add(r * nb)` for `nb` f32; for every `c < C`,
/// `w.add(c * ldw)` must be valid for reading `nb` blocks and `d.add(c * nb)` for `nb` f32.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn block_tile<const R: usize, const C: usize, const U4: bool>(
    (a, lda, da): (*const i8, usize, *const f32),
    (w, ldw, d): (*const u8, usize, *const f32),
    nb: usize,
) -> [[f32; C]; R] {
    let block_bytes = if U4 { QK / 2 } else { QK };
    let zero = _mm256_setzero_si256();
    let offset = _mm256_set1_epi8(0x80u8 as i8);
    let mut sums = [[_mm256_setzero_ps(); C]; R];
    for b in 0..nb {
        let mut w_vecs = [zero; C];
        let mut d_vecs = [_mm256_setzero_ps(); C];
        for (c, (w_vec, d_vec)) in w_vecs.iter_mut().zip(&mut d_vecs).enumerate() {
            let block = w.wrapping_add(c * ldw + b * block_bytes);
            *w_vec = if U4 {
                // SAFETY: block b of weight row c is readable (contract above).
                unsafe { load_q4_block(block) }
            } else {
                // SAFETY: as above; 32 bytes.
                let q = unsafe { _mm256_loadu_si256(block.cast()) };
                _mm256_xor_si256(q, offset)
            };
            // SAFETY: d of row c has nb entries (contract above).
            *d_vec = _mm256_set1_ps(unsafe { *d.add(c * nb + b) });
        }
        for (r, row_sums) in sums.iter_mut().enumerate() {
            // SAFETY: block b of activation row r is readable (contract above).
            let a_vec = unsafe { _mm256_loadu_si256(a.add(r * lda + b * QK).cast()) };
            // SAFETY: da of row r has nb entries (contract above).
            let da_vec = _mm256_set1_ps(unsafe { *da.add(r * nb + b) });
            // Offset weights: start each lane at -128·Σa so it ends at Σ w·a.
            let start = if U4 {
                zero
            } else {
                _mm256_sub_epi32(zero, _mm256_dpbusd_epi32(zero, offset, a_vec))
            };
            for (sum, (&w_vec, &d_vec)) in row_sums.iter_mut().zip(w_vecs.iter().zip(&d_vecs)) {
                let lanes = _mm256_dpbusd_epi32(start, w_vec, a_vec);
                let scaled = _mm256_mul_ps(_mm256_cvtepi32_ps(lanes), da_vec);
                *sum = _mm256_fmadd_ps(scaled, d_vec, *sum);
            }
        }
    }
    let mut out = [[0.0f32; C]; R];
    for (out_row, row_sums) in out.iter_mut().zip(&sums) {
        for (out, &sum) in out_row.iter_mut().zip(row_sums) {
            *out = super::avx2::hsum_f32(sum);
        }
    }
    out
}

/// Adds one `R × C` tile of [`block_tile`] to `y` at `(i, j)`.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL and VNNI; the shapes of `a`, `w` (`n` rows of `ldw`
/// bytes, `ldw` = `nb` blocks), `d` and `y` (`m` rows of stride `ldy`) must have been checked
/// with `check_block_gemm_shapes`, `i + R <= m` and `j + C <= n`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn add_block_tile<const R: usize, const C: usize, const U4: bool>(
    a: &BlockActsView<'_>,
    w: *const u8,
    ldw: usize,
    d: &[f32],
    y: &mut [f32],
    ldy: usize,
    (i, j): (usize, usize),
) {
    let nb = a.k / QK;
    // SAFETY: rows i..i+R of the activations and j..j+C of the weights exist (contract), so
    // each row pointer is readable for its nb blocks and nb scales.
    let sums = unsafe {
        block_tile::<R, C, U4>(
            (
                a.codes.as_ptr().add(i * a.k),
                a.k,
                a.scales.as_ptr().add(i * nb),
            ),
            (w.add(j * ldw), ldw, d.as_ptr().add(j * nb)),
            nb,
        )
    };
    for (r, row) in sums.iter().enumerate() {
        let y_row = &mut y[(i + r) * ldy + j..][..C];
        for (out, &sum) in y_row.iter_mut().zip(row) {
            *out += sum;
        }
    }
}

/// Adds `Σ_b da · d · isum` to `y` (the caller initialised `y` with the `mn` term).
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL and VNNI; the shapes must have been checked with
/// `check_block_gemm_shapes`, with `w` valid for reading `n` rows of `ldw` bytes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn gemm_blocks<const U4: bool>(
    a: &BlockActsView<'_>,
    (w, ldw, d): (*const u8, usize, &[f32]),
    n: usize,
    y: &mut [f32],
    ldy: usize,
) {
    let m = a.m;
    let mut j = 0;
    while j < n {
        let full_cols = j + BLOCK_COLS <= n;
        let mut i = 0;
        while i < m {
            let full_rows = i + ROWS <= m;
            let ij = (i, j);
            // SAFETY: each arm's tile fits inside m × n at (i, j) (checked by the conditions),
            // the shapes were checked and the CPU has the features (contract above).
            unsafe {
                match (full_rows, full_cols) {
                    (true, true) => {
                        add_block_tile::<ROWS, BLOCK_COLS, U4>(a, w, ldw, d, y, ldy, ij)
                    }
                    (false, true) => add_block_tile::<1, BLOCK_COLS, U4>(a, w, ldw, d, y, ldy, ij),
                    (true, false) => add_block_tile::<ROWS, 1, U4>(a, w, ldw, d, y, ldy, ij),
                    (false, false) => add_block_tile::<1, 1, U4>(a, w, ldw, d, y, ldy, ij),
                }
            }
            i += if full_rows { ROWS } else { 1 };
        }
        j += if full_cols { BLOCK_COLS } else { 1 };
    }
}

/// The `Σ_b da · d · isum` part of `GemmKernels::gemm_blocks_i8`, added to `y`.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL and VNNI, and the shapes must have been checked
/// with `check_block_gemm_shapes`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn gemm_blocks_i8(
    a: &BlockActsView<'_>,
    q: &[i8],
    d: &[f32],
    n: usize,
    y: &mut [f32],
    ldy: usize,
) {
    // SAFETY: `q` holds n rows of k bytes (checked shapes); same CPU contract.
    unsafe { gemm_blocks::<false>(a, (q.as_ptr().cast(), a.k, d), n, y, ldy) }
}

/// The `Σ_b da · d · isum` part of `GemmKernels::gemm_blocks_u4`, added to `y`.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL and VNNI, and the shapes must have been checked
/// with `check_block_gemm_shapes`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn gemm_blocks_u4(
    a: &BlockActsView<'_>,
    q: &[u8],
    d: &[f32],
    n: usize,
    y: &mut [f32],
    ldy: usize,
) {
    // SAFETY: `q` holds n rows of k / 2 bytes (checked shapes); same CPU contract.
    unsafe { gemm_blocks::<true>(a, (q.as_ptr(), a.k / 2, d), n, y, ldy) }
}
