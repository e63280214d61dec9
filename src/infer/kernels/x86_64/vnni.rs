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
//! The block kernels (see `kernels::blocks`) use 512-bit `vpdpbusd` over two consecutive
//! 32-element blocks per vector (lanes 0–7 block `b`, 8–15 block `b + 1`; an odd final block
//! uses the low half with masked accumulation), so activations and weights keep their natural
//! order. A block's 8 i32 lane sums are converted to f32 (exact: `|lane| ≤ 4·255·128`),
//! multiplied by the activation block scales and added with an FMA of the weight block scales
//! into an f32 accumulator per output; the lanes of a 4 × 4 tile are reduced together at the
//! end. Q4 nibbles are unsigned already (`vpdpbusd(q, a)`); for int8 weights the activations
//! are offset instead (`u = a ^ 0x80 = a + 128`, once per activation vector, shared by the
//! tile's columns) and each weight vector's lane sums start from `-128·Σ w` (one more
//! `vpdpbusd`, shared by the tile's rows), so every block sum is exact for any i8 codes. With
//! enough activation rows, a tile of weight rows is prepared once per chunk of rows (Q4 codes
//! decoded to bytes, the int8 starts precomputed) and then meets every row of the chunk.
//!
//! With one scale per weight row (`gemm_blocks_i8_rows`, const `ROW_D`) the converted lane sums
//! are added with one FMA of the activation block scales (`sum += f32(lanes) · da`: no weight
//! scale per step, no multiply) and the reduced tile is multiplied by the row scales once.
//! Its prepared path ([`prepare_cols_quad`], [`block_tile_quad`]) steps over 4 blocks: weights
//! and activations are split into block halves (128-bit lanes), so two `vpdpbusd` into one
//! register leave each block's exact sum in 4 lanes and one conversion and one FMA (with the
//! 4 activation block scales) serve 4 blocks instead of 2.

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

/// Activation rows per register tile of the block GEMMs.
const BLOCK_ROWS: usize = 4;
/// Weight rows per register tile of the block GEMMs (BLOCK_ROWS × BLOCK_COLS = 16 zmm f32
/// accumulators).
const BLOCK_COLS: usize = 4;
/// Activation bytes per row chunk of the block GEMMs: every weight tile passes over one chunk
/// of activation rows, which stays in L2 while the weights stream through once per chunk.
const BLOCK_CHUNK_BYTES: usize = 256 * 1024;
/// Lanes of 32-bit `vpdpbusd` sums per 32-element block.
const BLOCK_LANES: usize = 8;

/// Mask of the lanes of the first block of a pair (the only block of an odd final one).
const FIRST_BLOCK: __mmask16 = (1 << BLOCK_LANES) - 1;

/// Spreads two consecutive block scales (at `p`) over the lanes of their blocks: lanes 0–7
/// get `p[0]`, lanes 8–15 `p[1]`.
///
/// # Safety
/// The CPU must support AVX-512 F; `p` must be valid for reading 2 f32.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn pair_scales(p: *const f32) -> __m512 {
    // SAFETY: 8 readable bytes (contract above); `_mm_loadl_epi64` reads them unaligned.
    let two = unsafe { _mm_loadl_epi64(p.cast()) };
    let index = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    _mm512_permutexvar_ps(index, _mm512_castps128_ps512(_mm_castsi128_ps(two)))
}

/// The 64 4-bit codes of two consecutive Q4 blocks (32 bytes at `p`) as 64 bytes in element
/// order (the layout of [`load_q4_block`], twice).
///
/// # Safety
/// The CPU must support AVX-512 F and BW; `p` must be valid for reading 32 bytes.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn load_q4_pair(p: *const u8) -> __m512i {
    // SAFETY: 32 readable bytes (contract above); loadu has no alignment requirement.
    let bytes = unsafe { _mm256_loadu_si256(p.cast()) };
    // 128-bit lanes [b, b, b + 1, b + 1]; the second copy of each block shifts its high
    // nibbles down (16-bit elements 8..16 and 24..32).
    let index = _mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3);
    let both = _mm512_permutexvar_epi64(index, _mm512_castsi256_si512(bytes));
    let shifted = _mm512_mask_srli_epi16(both, 0xff00_ff00, both, 4);
    _mm512_and_si512(shifted, _mm512_set1_epi8(0x0f))
}

/// Sums of the 16 accumulators of a 4 × 4 tile (`v[r * 4 + c]`): lane `4·r + c` of the result.
#[target_feature(enable = "avx512f")]
#[inline]
fn reduce_4x4(v: &[__m512; 16]) -> __m512 {
    // Pairs of columns: per 128-bit lane [x0+x2, y0+y2, x1+x3, y1+y3].
    let mut t = [_mm512_setzero_ps(); 8];
    for (t, pair) in t.iter_mut().zip(v.chunks_exact(2)) {
        *t = _mm512_add_ps(
            _mm512_unpacklo_ps(pair[0], pair[1]),
            _mm512_unpackhi_ps(pair[0], pair[1]),
        );
    }
    // Rows: per 128-bit lane the 4 columns of the row.
    let mut s = [_mm512_setzero_ps(); 4];
    for (s, pair) in s.iter_mut().zip(t.chunks_exact(2)) {
        let (x, y) = (_mm512_castps_pd(pair[0]), _mm512_castps_pd(pair[1]));
        *s = _mm512_add_ps(
            _mm512_castpd_ps(_mm512_unpacklo_pd(x, y)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)),
        );
    }
    // 128-bit lanes [0 + 1, 2 + 3] of two rows, then of all four.
    let u01 = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0x88>(s[0], s[1]),
        _mm512_shuffle_f32x4::<0xdd>(s[0], s[1]),
    );
    let u23 = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0x88>(s[2], s[3]),
        _mm512_shuffle_f32x4::<0xdd>(s[2], s[3]),
    );
    _mm512_add_ps(
        _mm512_shuffle_f32x4::<0x88>(u01, u23),
        _mm512_shuffle_f32x4::<0xdd>(u01, u23),
    )
}

/// i32 lanes per 512-bit vector: one step of two blocks.
const STEP_LANES: usize = 16;
/// Fewest activation rows per chunk for which column tiles are prepared ([`prepare_cols`]).
const PREP_MIN_ROWS: usize = 16;
/// Largest `k` for which column tiles are prepared.
const PREP_MAX_K: usize = 2048;

/// Prepares the weight rows `0..cols` at `w` (`ldw` bytes each) for [`block_tile`]: Q4 codes
/// decoded to bytes in element order (`codes`, row `c` at `c * nb * 32`); for i8 the lane
/// starts `-128·Σ w` of every step of two blocks (`starts`, 16 i32 per row and step, row `c`
/// at `c * steps * 16`; an odd final block has zero high lanes); for both, the weight block
/// scales `d` spread over the lanes of each step (`d_exp`, laid out as `starts`). Int8 weights
/// with row scales are prepared by [`prepare_cols_quad`] instead.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL and VNNI; for every `c < cols`, `w.add(c * ldw)`
/// must be valid for reading `nb` blocks and `d.add(c * nb)` for `nb` f32, and `d_exp` must
/// hold `cols · ⌈nb / 2⌉ · 16` f32;
/// if `U4`, `codes` holds `cols · nb · 32` bytes, else `starts` holds `cols · ⌈nb / 2⌉ · 16` i32.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn prepare_cols<const U4: bool>(
    (w, ldw): (*const u8, usize),
    cols: usize,
    nb: usize,
    codes: &mut [u8],
    starts: &mut [i32],
    (d, d_exp): (*const f32, &mut [f32]),
) {
    let zero = _mm512_setzero_si512();
    let offset = _mm512_set1_epi8(0x80u8 as i8);
    let low: __mmask64 = (1 << QK) - 1;
    let steps = nb.div_ceil(2);
    for c in 0..cols {
        for s in 0..steps {
            let b = 2 * s;
            let pair = b + 2 <= nb;
            let d_vec = if pair {
                // SAFETY: d of row c has nb > b + 1 entries (contract above).
                unsafe { pair_scales(d.add(c * nb + b)) }
            } else {
                // SAFETY: d of row c has nb > b entries (contract above).
                _mm512_set1_ps(unsafe { *d.add(c * nb + b) })
            };
            let out = &mut d_exp[(c * steps + s) * STEP_LANES..][..STEP_LANES];
            // SAFETY: `out` holds 16 f32.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), d_vec) };
            if U4 {
                let block = w.wrapping_add(c * ldw + b * QK / 2);
                let out = &mut codes[(c * nb + b) * QK..][..if pair { 2 * QK } else { QK }];
                if pair {
                    // SAFETY: blocks b and b + 1 of row c are readable (contract); `out` holds
                    // 64 bytes.
                    unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), load_q4_pair(block)) };
                } else {
                    // SAFETY: block b of row c is readable (contract); `out` holds 32 bytes.
                    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), load_q4_block(block)) };
                }
            } else {
                let mask = if pair { u64::MAX } else { low };
                // SAFETY: the mask selects the bytes of blocks b (and b + 1 if it exists) of
                // row c, readable (contract).
                let q = unsafe { _mm512_maskz_loadu_epi8(mask, w.add(c * ldw + b * QK).cast()) };
                let start = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, offset, q));
                let out = &mut starts[(c * steps + s) * STEP_LANES..][..STEP_LANES];
                // SAFETY: `out` holds 16 i32.
                unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), start) };
            }
        }
    }
}

/// Sums of 4 accumulators (`v[c]`): lane `c` of the result (lanes 4..16 are partial sums).
#[target_feature(enable = "avx512f")]
#[inline]
fn reduce_1x4(v: &[__m512; 4]) -> __m128 {
    // As `reduce_4x4` for one row: per 128-bit lane the 4 columns, then the 4 lanes added.
    let t0 = _mm512_add_ps(
        _mm512_unpacklo_ps(v[0], v[1]),
        _mm512_unpackhi_ps(v[0], v[1]),
    );
    let t1 = _mm512_add_ps(
        _mm512_unpacklo_ps(v[2], v[3]),
        _mm512_unpackhi_ps(v[2], v[3]),
    );
    let (x, y) = (_mm512_castps_pd(t0), _mm512_castps_pd(t1));
    let s = _mm512_add_ps(
        _mm512_castpd_ps(_mm512_unpacklo_pd(x, y)),
        _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)),
    );
    let h = _mm256_add_ps(
        _mm512_castps512_ps256(s),
        _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(s))),
    );
    _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h))
}

/// f32 sums over the blocks of `R` activation rows × `C` weight rows of
/// `da · d · Σ_block a·q` (the `mn` term excluded), per output still spread over 16 lanes; if
/// `ROW_D` (one scale per weight row, applied by the caller) of `da · Σ_block a·q`, and
/// neither `d` nor `d_exp` is read.
///
/// Each 512-bit step covers two blocks (lanes 0–7 block `b`, 8–15 block `b + 1`); an odd final
/// block uses the low half with the high lanes masked off. Q4 codes (decoded by
/// [`prepare_cols`] if `PREP`, else per step) are the unsigned `vpdpbusd` operand against the
/// activations. For i8 the activations are offset (`u = a ^ 0x80 = a + 128`, once per row and
/// step) and each weight row's lane sums start from `-128·Σ w` (prepared if `PREP`, else one
/// `vpdpbusd` per row and step), so `Σ u·w - 128·Σ w = Σ a·w` exactly for any i8 codes.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL and VNNI. For every `r < R`, `a.add(r * lda)` must be
/// valid for reading `nb * 32` bytes and `da.add(r * nb)` for `nb` f32; for every `c < C`,
/// `w.add(c * ldw)` must be valid for reading `nb` blocks (as described next) and
/// `d.add(c * nb)` for `nb` f32. If `PREP`, the weights were prepared by [`prepare_cols`]: `w` points at 32 bytes per
/// block in element order (Q4 codes decoded), `d_exp` holds `C · ⌈nb / 2⌉ · 16` f32 and, unless
/// `U4`, `starts` as many i32. Otherwise `w` holds the raw codes (16 bytes of nibbles or 32 i8
/// per block) and `starts` / `d_exp` are not read.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn block_tile<
    const R: usize,
    const C: usize,
    const U4: bool,
    const PREP: bool,
    const ROW_D: bool,
>(
    (a, lda, da): (*const i8, usize, *const f32),
    (w, ldw, d): (*const u8, usize, *const f32),
    (starts, d_exp): (*const i32, *const f32),
    nb: usize,
) -> [[__m512; C]; R] {
    let zero = _mm512_setzero_si512();
    let offset = _mm512_set1_epi8(0x80u8 as i8);
    let steps = nb.div_ceil(2);
    let block_bytes = if U4 && !PREP { QK / 2 } else { QK };
    let mut sums = [[_mm512_setzero_ps(); C]; R];
    let mut w_vecs = [zero; C];
    let mut start_vecs = [zero; C];
    let mut d_vecs = [_mm512_setzero_ps(); C];
    for s in 0..nb / 2 {
        let b = 2 * s;
        for c in 0..C {
            let block = w.wrapping_add(c * ldw + b * block_bytes);
            w_vecs[c] = if U4 && !PREP {
                // SAFETY: blocks b and b + 1 of weight row c are readable (contract above).
                unsafe { load_q4_pair(block) }
            } else {
                // SAFETY: as above, 64 bytes.
                unsafe { _mm512_loadu_si512(block.cast()) }
            };
            if !U4 {
                start_vecs[c] = if PREP {
                    // SAFETY: `starts` holds 16 i32 per row and step (contract above).
                    unsafe { _mm512_loadu_si512(starts.add((c * steps + s) * STEP_LANES).cast()) }
                } else {
                    _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, offset, w_vecs[c]))
                };
            }
            if !ROW_D {
                d_vecs[c] = if PREP {
                    // SAFETY: `d_exp` holds 16 f32 per row and step (contract above).
                    unsafe { _mm512_loadu_ps(d_exp.add((c * steps + s) * STEP_LANES)) }
                } else {
                    // SAFETY: d of row c has nb > b + 1 entries (contract above).
                    unsafe { pair_scales(d.add(c * nb + b)) }
                };
            }
        }
        for (r, row_sums) in sums.iter_mut().enumerate() {
            // SAFETY: blocks b and b + 1 of activation row r are readable (contract above).
            let a_vec = unsafe { _mm512_loadu_si512(a.add(r * lda + b * QK).cast()) };
            // SAFETY: da of row r has nb > b + 1 entries (contract above).
            let da_vec = unsafe { pair_scales(da.add(r * nb + b)) };
            let u_vec = _mm512_xor_si512(a_vec, offset);
            for c in 0..C {
                let lanes = if U4 {
                    _mm512_dpbusd_epi32(zero, w_vecs[c], a_vec)
                } else {
                    _mm512_dpbusd_epi32(start_vecs[c], u_vec, w_vecs[c])
                };
                let lanes = _mm512_cvtepi32_ps(lanes);
                row_sums[c] = if ROW_D {
                    _mm512_fmadd_ps(lanes, da_vec, row_sums[c])
                } else {
                    _mm512_fmadd_ps(_mm512_mul_ps(lanes, da_vec), d_vecs[c], row_sums[c])
                };
            }
        }
    }
    if nb % 2 == 1 {
        // Odd final block: the low 256 bits, zero high lanes, masked accumulation.
        let (b, s) = (nb - 1, steps - 1);
        let low: __mmask64 = (1 << QK) - 1;
        for c in 0..C {
            let block = w.wrapping_add(c * ldw + b * block_bytes);
            w_vecs[c] = if U4 && !PREP {
                // SAFETY: block b of weight row c is readable (contract above).
                _mm512_maskz_mov_epi8(low, _mm512_castsi256_si512(unsafe { load_q4_block(block) }))
            } else {
                // SAFETY: block b of weight row c is readable; the mask selects its bytes only.
                unsafe { _mm512_maskz_loadu_epi8(low, block.cast()) }
            };
            if !U4 {
                start_vecs[c] = if PREP {
                    // SAFETY: as in the loop above.
                    unsafe { _mm512_loadu_si512(starts.add((c * steps + s) * STEP_LANES).cast()) }
                } else {
                    _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, offset, w_vecs[c]))
                };
            }
            if !ROW_D {
                // SAFETY: d of row c has nb > b entries (contract above).
                d_vecs[c] = _mm512_set1_ps(unsafe { *d.add(c * nb + b) });
            }
        }
        for (r, row_sums) in sums.iter_mut().enumerate() {
            // SAFETY: block b of activation row r is readable; the mask selects its bytes only.
            let a_vec = unsafe { _mm512_maskz_loadu_epi8(low, a.add(r * lda + b * QK)) };
            // SAFETY: da of row r has nb > b entries (contract above).
            let da_vec = _mm512_set1_ps(unsafe { *da.add(r * nb + b) });
            let u_vec = _mm512_xor_si512(a_vec, offset);
            for c in 0..C {
                let lanes = if U4 {
                    _mm512_dpbusd_epi32(zero, w_vecs[c], a_vec)
                } else {
                    _mm512_dpbusd_epi32(start_vecs[c], u_vec, w_vecs[c])
                };
                let lanes = _mm512_cvtepi32_ps(lanes);
                row_sums[c] = if ROW_D {
                    _mm512_mask3_fmadd_ps(lanes, da_vec, row_sums[c], FIRST_BLOCK)
                } else {
                    let scaled = _mm512_mul_ps(lanes, da_vec);
                    _mm512_mask3_fmadd_ps(scaled, d_vecs[c], row_sums[c], FIRST_BLOCK)
                };
            }
        }
    }
    sums
}

/// Blocks per step of the prepared int8 row-scale path ([`block_tile_quad`]).
const QUAD: usize = 4;

/// Start vectors per weight row of the prepared int8 row-scale path: one per 4 blocks, one for
/// a remaining pair and one for an odd final block.
fn quad_starts(nb: usize) -> usize {
    nb / QUAD + (nb % QUAD).div_ceil(2)
}

/// Prepares the int8 weight rows `0..cols` at `w` (`ldw` bytes each) for [`block_tile_quad`].
/// Every 4 blocks (128 bytes) of row `c` are stored at `codes[c * nb * 32..]` as two vectors:
/// the first 16 bytes of each block (`x`: 128-bit lanes = blocks `b..b + 4`), then the last 16
/// (`y`), so `vpdpbusd` of `x` then `y` into one register sums each block in 4 lanes. A
/// remaining pair and an odd final block keep their order. `starts` gets the lane starts
/// `-128·Σ w` of every such vector (16 i32, row `c` at `c * quad_starts(nb) * 16`).
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL and VNNI; for every `c < cols`, `w.add(c * ldw)` must
/// be valid for reading `nb * 32` bytes; `codes` holds `cols · nb · 32` bytes and `starts`
/// `cols · quad_starts(nb) · 16` i32.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn prepare_cols_quad(
    (w, ldw): (*const u8, usize),
    cols: usize,
    nb: usize,
    codes: &mut [u8],
    starts: &mut [i32],
) {
    let zero = _mm512_setzero_si512();
    let offset = _mm512_set1_epi8(0x80u8 as i8);
    let low: __mmask64 = (1 << QK) - 1;
    let (k, nq, st) = (nb * QK, nb / QUAD, quad_starts(nb));
    for c in 0..cols {
        let row = w.wrapping_add(c * ldw);
        let out = &mut codes[c * k..][..k];
        let row_starts = &mut starts[c * st * STEP_LANES..][..st * STEP_LANES];
        for q in 0..nq {
            let b = q * QUAD;
            // SAFETY: blocks b..b + 4 (128 bytes) of row c are readable (contract above).
            let (a0, a1) = unsafe {
                (
                    _mm512_loadu_si512(row.add(b * QK).cast()),
                    _mm512_loadu_si512(row.add(b * QK + 64).cast()),
                )
            };
            let x = _mm512_shuffle_i64x2::<0x88>(a0, a1);
            let y = _mm512_shuffle_i64x2::<0xdd>(a0, a1);
            let start = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, offset, x), offset, y);
            let start = _mm512_sub_epi32(zero, start);
            let dst = &mut out[b * QK..][..2 * 64];
            let dst_start = &mut row_starts[q * STEP_LANES..][..STEP_LANES];
            // SAFETY: `dst` holds 128 bytes and `dst_start` 16 i32; storeu is unaligned.
            unsafe {
                _mm512_storeu_si512(dst.as_mut_ptr().cast(), x);
                _mm512_storeu_si512(dst.as_mut_ptr().add(64).cast(), y);
                _mm512_storeu_si512(dst_start.as_mut_ptr().cast(), start);
            }
        }
        let (mut b, mut s) = (nq * QUAD, nq);
        while b < nb {
            let pair = b + 2 <= nb;
            let mask = if pair { u64::MAX } else { low };
            let dst = &mut out[b * QK..][..if pair { 2 * QK } else { QK }];
            // SAFETY: the mask selects the bytes of blocks b (and b + 1 if it exists) of row
            // c, readable (contract), and `dst` holds as many bytes.
            let v = unsafe { _mm512_maskz_loadu_epi8(mask, row.add(b * QK).cast()) };
            // SAFETY: `dst` holds the bytes the mask selects; masked-off bytes are not written.
            unsafe { _mm512_mask_storeu_epi8(dst.as_mut_ptr().cast(), mask, v) };
            let start = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, offset, v));
            let dst_start = &mut row_starts[s * STEP_LANES..][..STEP_LANES];
            // SAFETY: `dst_start` holds 16 i32.
            unsafe { _mm512_storeu_si512(dst_start.as_mut_ptr().cast(), start) };
            b += 2;
            s += 1;
        }
    }
}

/// [`block_tile`] for int8 weights with row scales (`ROW_D`) prepared by
/// [`prepare_cols_quad`]: f32 sums of `da · Σ_block a·q` per output, spread over 16 lanes.
/// Each step covers 4 blocks: the activation vectors are split into block halves like the
/// weights (two 128-bit lane shuffles per row), and two `vpdpbusd` into one register leave
/// each block's exact sum in 4 lanes, so one conversion and one FMA serve 4 blocks.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL and VNNI. For every `r < R`, `a.add(r * lda)` must be
/// valid for reading `nb * 32` bytes and `da.add(r * nb)` for `nb` f32; `w` and `starts` hold
/// `C` rows prepared by [`prepare_cols_quad`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn block_tile_quad<const R: usize, const C: usize>(
    (a, lda, da): (*const i8, usize, *const f32),
    w: *const u8,
    starts: *const i32,
    nb: usize,
) -> [[__m512; C]; R] {
    let offset = _mm512_set1_epi8(0x80u8 as i8);
    let (k, nq, st) = (nb * QK, nb / QUAD, quad_starts(nb));
    let quad_index = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    let mut sums = [[_mm512_setzero_ps(); C]; R];
    let mut x_vecs = [_mm512_setzero_si512(); C];
    let mut y_vecs = [_mm512_setzero_si512(); C];
    for q in 0..nq {
        let b = q * QUAD;
        for c in 0..C {
            // SAFETY: the prepared row c holds nb * 32 >= b * 32 + 128 bytes (contract).
            unsafe {
                x_vecs[c] = _mm512_loadu_si512(w.add(c * k + b * QK).cast());
                y_vecs[c] = _mm512_loadu_si512(w.add(c * k + b * QK + 64).cast());
            }
        }
        for (r, row_sums) in sums.iter_mut().enumerate() {
            // SAFETY: blocks b..b + 4 of activation row r and their scales are readable
            // (contract above).
            let (a0, a1, da4) = unsafe {
                let p = a.add(r * lda + b * QK);
                (
                    _mm512_loadu_si512(p.cast()),
                    _mm512_loadu_si512(p.add(64).cast()),
                    _mm_loadu_ps(da.add(r * nb + b)),
                )
            };
            let ux = _mm512_xor_si512(_mm512_shuffle_i64x2::<0x88>(a0, a1), offset);
            let uy = _mm512_xor_si512(_mm512_shuffle_i64x2::<0xdd>(a0, a1), offset);
            let da_vec = _mm512_permutexvar_ps(quad_index, _mm512_castps128_ps512(da4));
            for c in 0..C {
                // SAFETY: `starts` holds st vectors of 16 i32 per row (contract above).
                let start =
                    unsafe { _mm512_loadu_si512(starts.add((c * st + q) * STEP_LANES).cast()) };
                let lanes = _mm512_dpbusd_epi32(start, ux, x_vecs[c]);
                let lanes = _mm512_dpbusd_epi32(lanes, uy, y_vecs[c]);
                row_sums[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lanes), da_vec, row_sums[c]);
            }
        }
    }
    let (mut b, mut s) = (nq * QUAD, nq);
    while b < nb {
        // A remaining pair (lanes 0–7 block b, 8–15 block b + 1) or an odd final block (low
        // lanes; the prepared high bytes and starts are zero, masked accumulation anyway).
        let pair = b + 2 <= nb;
        let (mask, lane_mask): (__mmask64, __mmask16) = if pair {
            (u64::MAX, u16::MAX)
        } else {
            ((1 << QK) - 1, FIRST_BLOCK)
        };
        for (c, w_vec) in x_vecs.iter_mut().enumerate() {
            // SAFETY: the mask selects the prepared bytes of blocks b (and b + 1) of row c.
            *w_vec = unsafe { _mm512_maskz_loadu_epi8(mask, w.add(c * k + b * QK).cast()) };
        }
        for (r, row_sums) in sums.iter_mut().enumerate() {
            // SAFETY: as above for activation row r; its scales b (and b + 1) are readable.
            let (a_vec, da_vec) = unsafe {
                let a_vec = _mm512_maskz_loadu_epi8(mask, a.add(r * lda + b * QK));
                let da_vec = if pair {
                    pair_scales(da.add(r * nb + b))
                } else {
                    _mm512_set1_ps(*da.add(r * nb + b))
                };
                (a_vec, da_vec)
            };
            let u_vec = _mm512_xor_si512(a_vec, offset);
            for c in 0..C {
                // SAFETY: as in the loop above.
                let start =
                    unsafe { _mm512_loadu_si512(starts.add((c * st + s) * STEP_LANES).cast()) };
                let lanes = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(start, u_vec, x_vecs[c]));
                row_sums[c] = _mm512_mask3_fmadd_ps(lanes, da_vec, row_sums[c], lane_mask);
            }
        }
        b += 2;
        s += 1;
    }
    sums
}

/// Adds one `R × C` tile of [`block_tile`] to `y` at `(i, j)` (each column `c` times the row
/// scale `d[j + c]` if `ROW_D`); `w` and `starts` are the prepared column tile starting at
/// column `j` ([`prepare_cols`]).
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL and VNNI; the shapes of `a`, `d` (`n` row scales if
/// `ROW_D`) and `y` (`m` rows of stride `ldy`) must have been checked with
/// `check_block_gemm_shapes` (`check_block_gemm_rows_shapes` if `ROW_D`), `i + R <= m`,
/// `j + C <= n`, and `w` / `starts` / `d_exp` must satisfy the contract of [`block_tile`] for `C`
/// rows.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn add_block_tile<
    const R: usize,
    const C: usize,
    const U4: bool,
    const PREP: bool,
    const ROW_D: bool,
>(
    a: &BlockActsView<'_>,
    (w, ldw, starts, d_exp): (*const u8, usize, *const i32, *const f32),
    d: &[f32],
    y: &mut [f32],
    ldy: usize,
    (i, j): (usize, usize),
) {
    let nb = a.k / QK;
    let d_tile = d.as_ptr().wrapping_add(if ROW_D { j } else { j * nb });
    // Column c of the tile: its row scale if ROW_D (applied once per output), else 1.
    let scale = |c: usize| if ROW_D { d[j + c] } else { 1.0 };
    // SAFETY: rows i..i+R of the activations and j..j+C of `d` exist (contract), so each row
    // pointer is readable for its nb blocks and nb scales (`d` is not read if ROW_D); `w` and
    // `starts` as required.
    let sums = if ROW_D && !U4 && PREP {
        // SAFETY: as below; `w` and `starts` were prepared by `prepare_cols_quad`.
        unsafe {
            block_tile_quad::<R, C>(
                (
                    a.codes.as_ptr().add(i * a.k),
                    a.k,
                    a.scales.as_ptr().add(i * nb),
                ),
                w,
                starts,
                nb,
            )
        }
    } else {
        // SAFETY: see above.
        unsafe {
            block_tile::<R, C, U4, PREP, ROW_D>(
                (
                    a.codes.as_ptr().add(i * a.k),
                    a.k,
                    a.scales.as_ptr().add(i * nb),
                ),
                (w, ldw, d_tile),
                (starts, d_exp),
                nb,
            )
        }
    };
    let mut r = 0;
    if C == 4 {
        // Groups of 4 rows: one tree reduction of their 16 accumulators.
        while r + 4 <= R {
            let mut flat = [_mm512_setzero_ps(); 16];
            for (dst, &src) in flat.iter_mut().zip(sums[r..r + 4].iter().flatten()) {
                *dst = src;
            }
            let mut out = [0.0f32; 16];
            // SAFETY: `out` holds 16 f32; storeu has no alignment requirement.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), reduce_4x4(&flat)) };
            for (g, row) in out.chunks_exact(4).enumerate() {
                let y_row = &mut y[(i + r + g) * ldy + j..][..4];
                for (c, (out, &sum)) in y_row.iter_mut().zip(row).enumerate() {
                    *out += if ROW_D { scale(c) * sum } else { sum };
                }
            }
            r += 4;
        }
    }
    for (r, row) in sums.iter().enumerate().skip(r) {
        let y_row = &mut y[(i + r) * ldy + j..][..C];
        if C == 4 {
            let mut flat = [_mm512_setzero_ps(); 4];
            for (dst, &src) in flat.iter_mut().zip(row) {
                *dst = src;
            }
            let mut out = [0.0f32; 4];
            // SAFETY: `out` holds 4 f32; storeu has no alignment requirement.
            unsafe { _mm_storeu_ps(out.as_mut_ptr(), reduce_1x4(&flat)) };
            for (c, (out, &sum)) in y_row.iter_mut().zip(&out).enumerate() {
                *out += if ROW_D { scale(c) * sum } else { sum };
            }
            continue;
        }
        for (c, (out, &sum)) in y_row.iter_mut().zip(row).enumerate() {
            let sum = _mm512_reduce_add_ps(sum);
            *out += if ROW_D { scale(c) * sum } else { sum };
        }
    }
}

/// Adds `Σ_b da · d · isum` to `y` (the caller initialised `y` with the `mn` term), or
/// `d[j] · Σ_b da · isum` if `ROW_D` (`d` = one scale per weight row; int8 only).
///
/// Rows are processed in chunks of about [`BLOCK_CHUNK_BYTES`] of activations; within a chunk,
/// every tile of weight rows is prepared once ([`prepare_cols`], in L1) and meets all the
/// chunk's activation rows (in L2).
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL and VNNI; the shapes must have been checked with
/// `check_block_gemm_shapes` (`check_block_gemm_rows_shapes` if `ROW_D`), with `w` valid for
/// reading `n` rows of `ldw` bytes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn gemm_blocks<const U4: bool, const ROW_D: bool>(
    a: &BlockActsView<'_>,
    (w, ldw, d): (*const u8, usize, &[f32]),
    n: usize,
    y: &mut [f32],
    ldy: usize,
) {
    let (m, k) = (a.m, a.k);
    let nb = k / QK;
    let chunk = (BLOCK_CHUNK_BYTES / k.max(1) / BLOCK_ROWS * BLOCK_ROWS).max(BLOCK_ROWS);
    // Preparing a column tile pays off once it meets enough activation rows, and while the
    // prepared tile, the raw tile and the rows still fit L1.
    let prep = m.min(chunk) >= PREP_MIN_ROWS && k <= PREP_MAX_K;
    let (mut codes, mut starts, mut d_exp) = (Vec::new(), Vec::new(), Vec::new());
    if prep {
        if !ROW_D {
            d_exp = vec![0.0f32; BLOCK_COLS * nb.div_ceil(2) * STEP_LANES];
        }
        if U4 {
            codes = vec![0u8; BLOCK_COLS * k];
        } else if ROW_D {
            codes = vec![0u8; BLOCK_COLS * k];
            starts = vec![0i32; BLOCK_COLS * quad_starts(nb) * STEP_LANES];
        } else {
            starts = vec![0i32; BLOCK_COLS * nb.div_ceil(2) * STEP_LANES];
        }
    }
    let mut i0 = 0;
    while i0 < m {
        let i1 = m.min(i0 + chunk);
        let mut j = 0;
        while j < n {
            let full_cols = j + BLOCK_COLS <= n;
            let cols = if full_cols { BLOCK_COLS } else { 1 };
            let tile_w = if prep {
                let d_tile = d.as_ptr().wrapping_add(if ROW_D { j } else { j * nb });
                // SAFETY: weight rows j..j+cols exist (j + cols <= n) with nb blocks of `ldw`
                // bytes (and nb scales at `d_tile` unless ROW_D); the buffers hold
                // BLOCK_COLS >= cols rows (`d_exp` is empty and unused if ROW_D); the CPU has
                // the features.
                unsafe {
                    if ROW_D && !U4 {
                        prepare_cols_quad((w.add(j * ldw), ldw), cols, nb, &mut codes, &mut starts)
                    } else {
                        prepare_cols::<U4>(
                            (w.add(j * ldw), ldw),
                            cols,
                            nb,
                            &mut codes,
                            &mut starts,
                            (d_tile, &mut d_exp),
                        )
                    }
                };
                if U4 || ROW_D {
                    (codes.as_ptr(), k, starts.as_ptr(), d_exp.as_ptr())
                } else {
                    (w.wrapping_add(j * ldw), k, starts.as_ptr(), d_exp.as_ptr())
                }
            } else {
                (
                    w.wrapping_add(j * ldw),
                    ldw,
                    starts.as_ptr(),
                    d_exp.as_ptr(),
                )
            };
            let mut i = i0;
            while i < i1 {
                let full_rows = i + BLOCK_ROWS <= i1;
                let ij = (i, j);
                // SAFETY: each arm's tile fits inside m × n at (i, j) (checked by the
                // conditions, i1 <= m), the column tile was prepared for `cols` rows if
                // `prep`, the shapes were checked and the CPU has the features (contract above).
                unsafe {
                    match (full_rows, full_cols, prep) {
                        (true, true, true) => {
                            add_block_tile::<BLOCK_ROWS, BLOCK_COLS, U4, true, ROW_D>(
                                a, tile_w, d, y, ldy, ij,
                            )
                        }
                        (false, true, true) => add_block_tile::<1, BLOCK_COLS, U4, true, ROW_D>(
                            a, tile_w, d, y, ldy, ij,
                        ),
                        (true, false, true) => add_block_tile::<BLOCK_ROWS, 1, U4, true, ROW_D>(
                            a, tile_w, d, y, ldy, ij,
                        ),
                        (false, false, true) => {
                            add_block_tile::<1, 1, U4, true, ROW_D>(a, tile_w, d, y, ldy, ij)
                        }
                        (true, true, false) => {
                            add_block_tile::<BLOCK_ROWS, BLOCK_COLS, U4, false, ROW_D>(
                                a, tile_w, d, y, ldy, ij,
                            )
                        }
                        (false, true, false) => add_block_tile::<1, BLOCK_COLS, U4, false, ROW_D>(
                            a, tile_w, d, y, ldy, ij,
                        ),
                        (true, false, false) => add_block_tile::<BLOCK_ROWS, 1, U4, false, ROW_D>(
                            a, tile_w, d, y, ldy, ij,
                        ),
                        (false, false, false) => {
                            add_block_tile::<1, 1, U4, false, ROW_D>(a, tile_w, d, y, ldy, ij)
                        }
                    }
                }
                i += if full_rows { BLOCK_ROWS } else { 1 };
            }
            j += cols;
        }
        i0 = i1;
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
    unsafe { gemm_blocks::<false, false>(a, (q.as_ptr().cast(), a.k, d), n, y, ldy) }
}

/// `GemmKernels::gemm_blocks_i8_rows`, added to `y` (the caller zeroes it).
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL and VNNI, and the shapes must have been checked
/// with `check_block_gemm_rows_shapes`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
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
    unsafe { gemm_blocks::<true, false>(a, (q.as_ptr(), a.k / 2, d), n, y, ldy) }
}
