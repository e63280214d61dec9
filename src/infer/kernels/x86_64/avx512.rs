//! AVX-512 (F + BW) kernels: 16 f32 lanes, 32 i16 lanes.
//!
//! The dot-product GEMMs are `dot.rs`'s bodies (shared with `avx2.rs`) on the [`Avx512`]
//! lanes, with a 4 × 4 tile (16 accumulators of the 32 registers). The int8 GEMM sign-extends
//! 32 weight bytes at a time to i16 (`vpmovsxbw`) and multiplies with `vpmaddwd`, which is
//! exact for any i8 input (no VNNI needed).
//!
//! The f32 GEMM keeps those dot-product tiles only for few rows (memory-bound, `b` read in
//! place); from `PACK_MIN_ROWS` rows (or `MR` rows with short `k`) it packs blocks of `b` into
//! 32-row panels in a per-thread buffer and runs an 8 × 32 outer-product micro-kernel.

use std::arch::x86_64::*;
use std::cell::Cell;

use crate::infer::kernels::scalar;
use crate::infer::kernels::I8_MAX_CODE;

use super::dot::{self, DotLanes};
use super::rows::{self, RowLanes};

/// f32 lanes per vector.
const F32_LANES: usize = 16;
/// i8 elements per integer step: 32 bytes widen to one vector of 32 i16.
const I8_STEP: usize = 32;
/// Activation rows per register tile.
const ROWS: usize = 4;
/// Weight rows per register tile (ROWS × COLS = 16 accumulators + 5 operand registers).
const COLS: usize = 4;

/// Proof that the CPU runs AVX-512 F and BW: the dot-product GEMMs of `dot.rs` run on it.
#[derive(Clone, Copy)]
pub(super) struct Avx512 {
    _private: (),
}

impl Avx512 {
    /// # Safety
    /// The CPU must support AVX-512 F and BW.
    #[inline(always)]
    unsafe fn new() -> Self {
        Avx512 { _private: () }
    }
}

// SAFETY (for every block in this impl): an `Avx512` exists only where the CPU supports
// AVX-512 F and BW (`Avx512::new`'s contract), which is all these intrinsics need; loads carry
// their own contract.
impl DotLanes for Avx512 {
    type F32 = __m512;
    type Int = __m512i;
    const F32_LANES: usize = F32_LANES;
    const I8_STEP: usize = I8_STEP;

    #[inline(always)]
    fn zero_f32(self) -> __m512 {
        // SAFETY: AVX-512 F is present (impl comment).
        unsafe { _mm512_setzero_ps() }
    }

    #[inline(always)]
    unsafe fn load_f32(self, src: *const f32) -> __m512 {
        // SAFETY: `src` is readable for 16 f32 (contract); AVX-512 F is present (impl comment).
        unsafe { _mm512_loadu_ps(src) }
    }

    #[inline(always)]
    fn fmadd(self, a: __m512, b: __m512, acc: __m512) -> __m512 {
        // SAFETY: AVX-512 F is present (impl comment).
        unsafe { _mm512_fmadd_ps(a, b, acc) }
    }

    #[inline(always)]
    fn hsum_f32(self, v: __m512) -> f32 {
        // SAFETY: AVX-512 F is present (impl comment).
        unsafe { _mm512_reduce_add_ps(v) }
    }

    #[inline(always)]
    fn zero_int(self) -> __m512i {
        // SAFETY: AVX-512 F is present (impl comment).
        unsafe { _mm512_setzero_si512() }
    }

    #[inline(always)]
    unsafe fn load_i16(self, src: *const i16) -> __m512i {
        // SAFETY: `src` is readable for 32 i16 (contract); AVX-512 F is present (impl comment).
        unsafe { _mm512_loadu_si512(src.cast()) }
    }

    #[inline(always)]
    unsafe fn load_i8_as_i16(self, src: *const i8) -> __m512i {
        // SAFETY: `src` is readable for 32 bytes (contract); AVX-512 BW is present (impl
        // comment).
        unsafe { _mm512_cvtepi8_epi16(_mm256_loadu_si256(src.cast())) }
    }

    #[inline(always)]
    fn madd_i16(self, a: __m512i, b: __m512i, acc: __m512i) -> __m512i {
        // SAFETY: AVX-512 F and BW are present (impl comment).
        unsafe { _mm512_add_epi32(acc, _mm512_madd_epi16(a, b)) }
    }

    #[inline(always)]
    fn hsum_i32(self, v: __m512i) -> i32 {
        // SAFETY: AVX-512 F is present (impl comment).
        unsafe { _mm512_reduce_add_epi32(v) }
    }
}

/// `gemm_f32` with dot-product tiles (`dot::gemm_f32`, 4 × 4), for few rows of `a`.
///
/// # Safety
/// The CPU must support AVX-512 F and BW, and the shapes must have been checked with
/// `check_gemm_shapes`.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn gemm_f32_dot(a: &[f32], b: &[f32], m: usize, n: usize, k: usize, c: &mut [f32]) {
    // SAFETY: this function's contract is `Avx512::new`'s and `dot::gemm_f32`'s, and it
    // enables the features.
    unsafe { dot::gemm_f32::<_, ROWS, COLS>(Avx512::new(), a, b, m, n, k, c) }
}

/// Rows of `a` below which `gemm_f32` keeps the dot-product tiles: with so few rows every
/// weight is used only a few times, and reading `b` in place beats transposing it into panels
/// first (measured: still slightly ahead at 32 rows on Zen 4).
const PACK_MIN_ROWS: usize = 48;
/// Below `PACK_MIN_ROWS`, `k` up to this still packs (from `MR` rows on): short dot products
/// spend most of their time in horizontal sums.
const DOT_MIN_K: usize = 128;
/// Output rows of the outer-product micro-kernel (`MR × 2` accumulators of 16 lanes).
const MR: usize = 8;
/// Output columns (weight rows) of the outer-product micro-kernel: one panel of packed `b`.
const NR: usize = 2 * F32_LANES;
/// Elements of `k` per packed block: long runs of each weight row when packing, and an
/// `MR`-row slice of `a` (16 KiB) stays in L1/L2 while the micro-kernel sweeps the panels.
const KC: usize = 512;
/// Weight rows per packed block (a multiple of `NR`): `NC × KC` f32 (512 KiB) stay in L2 while
/// every row tile of `a` passes by.
const NC: usize = 256;

/// One cache line of f32: the unit of the packing buffer, so every panel is 64-byte aligned.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([f32; F32_LANES]);

thread_local! {
    /// Per-thread packing buffer for `b`, kept across calls so that repeated small GEMMs
    /// (attention) neither allocate nor fault in fresh pages.
    static B_PACK: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
}

/// Transposes a 16 × 16 block held as 16 row vectors.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    let mut u = [_mm512_setzero_ps(); 16];
    for i in 0..4 {
        let (lo, hi) = (4 * i, 4 * i + 2);
        u[4 * i] = _mm512_shuffle_ps::<0x44>(t[lo], t[hi]);
        u[4 * i + 1] = _mm512_shuffle_ps::<0xee>(t[lo], t[hi]);
        u[4 * i + 2] = _mm512_shuffle_ps::<0x44>(t[lo + 1], t[hi + 1]);
        u[4 * i + 3] = _mm512_shuffle_ps::<0xee>(t[lo + 1], t[hi + 1]);
    }
    // u[4i + c] holds column c of rows 4i..4i+4 in each 128-bit lane l (columns 4l + c).
    for i in 0..2 {
        for c in 0..4 {
            t[8 * i + c] = _mm512_shuffle_f32x4::<0x88>(u[8 * i + c], u[8 * i + 4 + c]);
            t[8 * i + 4 + c] = _mm512_shuffle_f32x4::<0xdd>(u[8 * i + c], u[8 * i + 4 + c]);
        }
    }
    let mut out = [_mm512_setzero_ps(); 16];
    for c in 0..8 {
        out[c] = _mm512_shuffle_f32x4::<0x88>(t[c], t[8 + c]);
        out[8 + c] = _mm512_shuffle_f32x4::<0xdd>(t[c], t[8 + c]);
    }
    out
}

/// Mask of the first `len` (at most 16) lanes.
fn lane_mask(len: usize) -> __mmask16 {
    if len >= F32_LANES {
        !0
    } else {
        (1u16 << len) - 1
    }
}

/// Packs weight rows `j0..j0 + nc` over `k0..k0 + kc` into panels of `NR` rows: panel `q` holds
/// `dst[q·NR·kc + p·NR + jj] = b[(j0 + q·NR + jj)·k + k0 + p]`, zero for rows past `j0 + nc`.
///
/// # Safety
/// The CPU must support AVX-512 F and BW; `b` is `n × k` with `j0 + nc <= n`, `k0 + kc <= k`,
/// and `dst` is 64-byte aligned and valid for writing `nc.div_ceil(NR) · NR · kc` f32.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn pack_b(
    b: &[f32],
    k: usize,
    (j0, nc): (usize, usize),
    (k0, kc): (usize, usize),
    dst: *mut f32,
) {
    for q in 0..nc.div_ceil(NR) {
        // SAFETY: panel q < nc.div_ceil(NR) lies inside `dst` (contract above).
        let panel = unsafe { dst.add(q * NR * kc) };
        for half in 0..NR / F32_LANES {
            let row0 = q * NR + half * F32_LANES;
            let rows = nc.saturating_sub(row0).min(F32_LANES);
            for p0 in (0..kc).step_by(F32_LANES) {
                let len = F32_LANES.min(kc - p0);
                let mask = lane_mask(len);
                let mut block = [_mm512_setzero_ps(); 16];
                for (r, vec) in block.iter_mut().enumerate().take(rows) {
                    // SAFETY: row j0 + row0 + r < j0 + nc <= n and the masked lanes stay below
                    // k0 + kc <= k, so every loaded element is inside `b`.
                    *vec = unsafe {
                        _mm512_maskz_loadu_ps(mask, b.as_ptr().add((j0 + row0 + r) * k + k0 + p0))
                    };
                }
                let columns = transpose16(block);
                for (p, &col) in columns.iter().enumerate().take(len) {
                    // SAFETY: p0 + p < kc, so the 16 f32 at this offset are inside panel q, and
                    // the offset is a multiple of 16 f32 from the 64-byte aligned `dst`.
                    unsafe { _mm512_store_ps(panel.add((p0 + p) * NR + half * F32_LANES), col) };
                }
            }
        }
    }
}

/// `c[r·ldc + jj] (+)= Σ_p a[r·lda + p] · panel[p·NR + jj]` for `r < R`, `jj < nr`: one
/// `R × NR` outer-product tile, accumulated in registers over `kc` and then added to `c`
/// (`accumulate`) or stored over it.
///
/// # Safety
/// The CPU must support AVX-512 F and BW; for every `r < R`, `a.add(r * lda)` is valid for
/// reading `kc` f32 and `c.add(r * ldc)` for reading and writing `nr <= NR` f32; `panel` is
/// 64-byte aligned and valid for reading `kc · NR` f32.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn micro_f32<const R: usize>(
    a: *const f32,
    lda: usize,
    panel: *const f32,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    nr: usize,
    accumulate: bool,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for p in 0..kc {
        // SAFETY: p < kc, so both aligned vectors of row p of the panel are readable.
        let (b0, b1) = unsafe {
            (
                _mm512_load_ps(panel.add(p * NR)),
                _mm512_load_ps(panel.add(p * NR + F32_LANES)),
            )
        };
        for (r, row_acc) in acc.iter_mut().enumerate() {
            // SAFETY: r < R and p < kc (contract above).
            let a_vec = _mm512_set1_ps(unsafe { *a.add(r * lda + p) });
            row_acc[0] = _mm512_fmadd_ps(a_vec, b0, row_acc[0]);
            row_acc[1] = _mm512_fmadd_ps(a_vec, b1, row_acc[1]);
        }
    }
    let masks = [lane_mask(nr), lane_mask(nr.saturating_sub(F32_LANES))];
    for (r, row_acc) in acc.iter().enumerate() {
        for (half, (&sum, &mask)) in row_acc.iter().zip(&masks).enumerate() {
            // SAFETY: lanes up to nr of row r < R are valid (contract above); masked-off lanes
            // are neither read nor written.
            unsafe {
                let out = c.add(r * ldc + half * F32_LANES);
                let value = if accumulate {
                    _mm512_add_ps(_mm512_maskz_loadu_ps(mask, out), sum)
                } else {
                    sum
                };
                _mm512_mask_storeu_ps(out, mask, value);
            }
        }
    }
}

/// See `GemmKernels::gemm_f32`. Few rows use the dot-product tiles of `gemm_f32_dot`; otherwise
/// blocks of `b` are packed (per-thread buffer) into panels of `NR` weight rows and an
/// `MR × NR` outer-product micro-kernel (broadcast activation × two weight vectors) runs over
/// them, with no horizontal sums.
///
/// # Safety
/// The CPU must support AVX-512 F and BW, and the shapes must have been checked with
/// `check_gemm_shapes`.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn gemm_f32(a: &[f32], b: &[f32], m: usize, n: usize, k: usize, c: &mut [f32]) {
    let pack = m >= PACK_MIN_ROWS || (m >= MR && k < DOT_MIN_K);
    if !pack || n == 0 || k == 0 {
        // SAFETY: same contract (above).
        unsafe { gemm_f32_dot(a, b, m, n, k, c) };
        return;
    }
    let mut pack = B_PACK.take();
    let need = NC.min(n.div_ceil(NR) * NR) * KC.min(k) / F32_LANES;
    if pack.len() < need {
        pack.resize(need, Line([0.0; F32_LANES]));
    }
    let pack_ptr = pack.as_mut_ptr().cast::<f32>();
    for j0 in (0..n).step_by(NC) {
        let nc = NC.min(n - j0);
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            // SAFETY: j0 + nc <= n, k0 + kc <= k, and `pack` holds at least
            // nc.div_ceil(NR) · NR · kc f32 (sized above), 64-byte aligned as `Line`s.
            unsafe { pack_b(b, k, (j0, nc), (k0, kc), pack_ptr) };
            let accumulate = k0 > 0;
            for i in (0..m).step_by(MR) {
                let rows = MR.min(m - i);
                // SAFETY: rows i..i + rows of `a` (m × k) are readable from column k0 for kc
                // elements.
                let a_tile = unsafe { a.as_ptr().add(i * k + k0) };
                for q in 0..nc.div_ceil(NR) {
                    let j = j0 + q * NR;
                    let nr = NR.min(n - j);
                    // SAFETY: panel q was packed above (kc · NR f32, 64-byte aligned); rows
                    // i..i + rows of `c` (m × n) hold columns j..j + nr; the CPU supports the
                    // features (contract above).
                    unsafe {
                        let panel = pack_ptr.add(q * NR * kc);
                        let c_tile = c.as_mut_ptr().add(i * n + j);
                        match rows {
                            8 => micro_f32::<8>(a_tile, k, panel, kc, c_tile, n, nr, accumulate),
                            7 => micro_f32::<7>(a_tile, k, panel, kc, c_tile, n, nr, accumulate),
                            6 => micro_f32::<6>(a_tile, k, panel, kc, c_tile, n, nr, accumulate),
                            5 => micro_f32::<5>(a_tile, k, panel, kc, c_tile, n, nr, accumulate),
                            4 => micro_f32::<4>(a_tile, k, panel, kc, c_tile, n, nr, accumulate),
                            3 => micro_f32::<3>(a_tile, k, panel, kc, c_tile, n, nr, accumulate),
                            2 => micro_f32::<2>(a_tile, k, panel, kc, c_tile, n, nr, accumulate),
                            _ => micro_f32::<1>(a_tile, k, panel, kc, c_tile, n, nr, accumulate),
                        }
                    }
                }
            }
        }
    }
    B_PACK.set(pack);
}

/// See `GemmKernels::gemm_i8_i32`: `dot::gemm_i8_i32` with 4 × 4 tiles.
///
/// # Safety
/// The CPU must support AVX-512 F and BW, and the shapes must have been checked with `check_gemm_shapes`.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn gemm_i8_i32(
    a_q: &[i8],
    w_q: &[i8],
    m: usize,
    n: usize,
    k: usize,
    acc: &mut [i32],
) {
    // SAFETY: this function's contract is `Avx512::new`'s and `dot::gemm_i8_i32`'s, and it
    // enables the features.
    unsafe { dot::gemm_i8_i32::<_, ROWS, COLS>(Avx512::new(), a_q, w_q, m, n, k, acc) }
}

/// `max |x|` of a row; exact (a maximum), so equal to `scalar::row_scale`'s for finite input.
#[target_feature(enable = "avx512f,avx512bw")]
fn absmax(row: &[f32]) -> f32 {
    let mut maxima = [_mm512_setzero_ps(); 2];
    let chunks = row.chunks_exact(2 * F32_LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (half, maximum) in maxima.iter_mut().enumerate() {
            // SAFETY: `chunk` holds 32 floats, so the 16 at half * 16 are in bounds.
            let x = unsafe { _mm512_loadu_ps(chunk.as_ptr().add(half * F32_LANES)) };
            *maximum = _mm512_max_ps(*maximum, _mm512_abs_ps(x));
        }
    }
    let vector_max = _mm512_reduce_max_ps(_mm512_max_ps(maxima[0], maxima[1]));
    tail.iter().fold(vector_max, |max, &x| max.max(x.abs()))
}

/// Quantizes one row with a non-zero scale; bit-identical to `scalar::quantize_row_with`.
#[target_feature(enable = "avx512f,avx512bw")]
fn quantize_row(row: &[f32], scale: f32, q_row: &mut [i8]) {
    let scales = _mm512_set1_ps(scale);
    let lo = _mm512_set1_ps(-I8_MAX_CODE);
    let hi = _mm512_set1_ps(I8_MAX_CODE);
    let chunks = row.chunks_exact(F32_LANES);
    let tail = chunks.remainder();
    let mut q_chunks = q_row.chunks_exact_mut(F32_LANES);
    for (chunk, q_chunk) in chunks.zip(&mut q_chunks) {
        // SAFETY: `chunk` holds 16 floats.
        let x = unsafe { _mm512_loadu_ps(chunk.as_ptr()) };
        // IEEE division and round-half-even, exactly as the scalar code; clamping before or
        // after rounding is the same for integer bounds.
        let y = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_div_ps(x, scales),
        );
        let codes = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(y, lo), hi));
        let bytes = _mm512_cvtsepi32_epi8(codes);
        // SAFETY: `q_chunk` holds 16 bytes; storeu has no alignment requirement.
        unsafe { _mm_storeu_si128(q_chunk.as_mut_ptr().cast(), bytes) };
    }
    scalar::quantize_row_with(tail, scale, q_chunks.into_remainder());
}

impl RowLanes for Avx512 {
    #[inline(always)]
    fn absmax(self, row: &[f32]) -> f32 {
        // SAFETY: a `Avx512` exists only where the CPU supports AVX-512 F and BW (`Avx512::new`).
        unsafe { absmax(row) }
    }

    #[inline(always)]
    fn quantize_row(self, row: &[f32], scale: f32, q_row: &mut [i8]) {
        // SAFETY: a `Avx512` exists only where the CPU supports AVX-512 F and BW (`Avx512::new`).
        unsafe { quantize_row(row, scale, q_row) }
    }
}

/// See `GemmKernels::quantize_rows_i8`: `rows::quantize_rows_i8` on these lanes.
///
/// # Safety
/// The CPU must support AVX-512 F and BW, and the shapes must have been checked with
/// `check_quantize_shapes`.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn quantize_rows_i8(
    a: &[f32],
    m: usize,
    k: usize,
    q: &mut [i8],
    scales: &mut [f32],
) {
    // SAFETY: this function's contract is `Avx512::new`'s, and it enables the features.
    rows::quantize_rows_i8(unsafe { Avx512::new() }, a, m, k, q, scales)
}

/// See `GemmKernels::quantize_blocks`: `rows::quantize_blocks` on these lanes.
///
/// # Safety
/// The CPU must support AVX-512 F and BW, and the shapes must have been checked with
/// `check_quantize_blocks_shapes`.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn quantize_blocks(
    a: &[f32],
    codes: &mut [i8],
    scales: &mut [f32],
    sums: &mut [i32],
) {
    // SAFETY: this function's contract is `Avx512::new`'s, and it enables the features.
    rows::quantize_blocks(unsafe { Avx512::new() }, a, codes, scales, sums)
}
