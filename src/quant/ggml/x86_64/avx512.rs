//! AVX-512 (F + BW) quantizers: 16 f32 lanes, groups of 16 blocks.
//!
//! Every result is defined by `ggml::scalar`. The work is split in two passes over a group of
//! 16 blocks (2 KiB of input, which stays in L1 between them):
//!
//! 1. Scales: each block's extremes are folded into one vector per block, and a transposing
//!    reduction turns those 16 vectors into one vector holding one block per lane. The
//!    divisions (`d = .../-8`, `id = 1/d`) and f32 → f16 conversions then run once per 16
//!    blocks instead of once per block.
//! 2. Quants: each block is reloaded, multiplied by its broadcast `id` with exactly the scalar
//!    operations (no FMA: `x * id + 8.5` is two roundings in gguf-py), truncated, narrowed to
//!    bytes by keeping the low byte (`vpmovdb`, the scalar `truncated_low_byte`), clamped and
//!    packed.
//!
//! Rare blocks whose extremes are ambiguous for the vector reduction are finished by the
//! scalar helpers (see [`signed_maxima`] and [`minima_maxima`]). A short last group is run on a
//! zero-padded copy, so every block goes through the same code.

use std::arch::x86_64::*;

use crate::quant::ggml::blocks::{
    Q4_0_QS, Q4_1_M, Q4_1_QS, Q5_0_QH, Q5_0_QS, Q5_1_M, Q5_1_QH, Q5_1_QS, Q8_0_QS, QK,
};
use crate::quant::ggml::{scalar, GgmlType};

/// f32 lanes per vector.
const LANES: usize = 16;
/// Blocks per group: the reduction leaves one block per lane.
const GROUP: usize = LANES;
/// Floats per group.
const GROUP_ELEMENTS: usize = GROUP * QK;
/// Bytes of the largest block type (Q8_0), for the padded tail's output buffer.
const MAX_TYPE_SIZE: usize = 34;

type Group = [f32; GROUP_ELEMENTS];
type Block = [f32; QK];

/// Per-block scales of one group: the result of the first pass.
#[derive(Clone, Copy)]
struct Scales {
    /// `1 / d`, or 0: the multiplier of the second pass.
    ids: [f32; GROUP],
    /// Block minima, subtracted first by the affine types (Q4_1, Q5_1); 0 for the others.
    minima: [f32; GROUP],
    /// `d` as f16 bits.
    d_bits: [u16; GROUP],
    /// `m` (the minimum) as f16 bits, for the affine types.
    m_bits: [u16; GROUP],
}

/// The first pass over one group.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW.
type ScalesFn = unsafe fn(&Group) -> Scales;

/// The second pass over one group: writes exactly `GROUP` blocks of the type into `out`.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW.
type QuantsFn = unsafe fn(&Group, &Scales, &mut [u8]);

/// The largest f32 below 0.5. Adding it with the sign of `r` and truncating rounds half away
/// from zero exactly (the scalar `round_half_away`): for a tie `k + 0.5` the sum is
/// `k + 1 - 2^-25`, which rounds to `k + 1` in f32, while for anything below a tie the rounded
/// sum stays below `k + 1`. Adding 0.5 itself would be wrong: 0.49999997 + 0.5 rounds to 1.
/// ±Inf and NaN stay non-finite and truncate to "integer indefinite", whose low byte 0 is
/// what the scalar path gives for its NaN.
const JUST_BELOW_HALF: f32 = 0.499_999_97;

/// Truth table of `(a & b) | c` for `vpternlogd` (bit `4a + 2b + c` of the immediate).
const SIGN_OR_CONSTANT: i32 = 0b1110_1010;

/// Embedded rounding for f32 → f16: nearest even, no exceptions (as `half` and numpy).
const F16_ROUNDING: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

/// Runs both passes over every full group of `src`, then over a zero-padded copy of the
/// last, partial group.
///
/// The passes are software-pipelined: the scales of group `g + 1` are computed before the
/// quants of group `g`, so the latency of the reduction and the two divisions (a dependency
/// chain of about a hundred cycles) overlaps with the independent quantizing work instead of
/// stalling every group.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW, and `dst.len()` must be
/// `src.len() / QK * ty.type_size()` with `src.len() % QK == 0` (checked by the caller; the
/// slicing below would panic rather than misbehave otherwise).
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_groups(
    ty: GgmlType,
    src: &[f32],
    dst: &mut [u8],
    scales_fn: ScalesFn,
    quants_fn: QuantsFn,
) {
    let group_bytes = GROUP * ty.type_size();
    let (groups, tail) = src.as_chunks::<GROUP_ELEMENTS>();
    let padded = (!tail.is_empty()).then(|| {
        let mut padded = [0.0f32; GROUP_ELEMENTS];
        padded[..tail.len()].copy_from_slice(tail);
        padded
    });
    let group_at = |group_idx: usize| groups.get(group_idx).or(padded.as_ref());
    let Some(first) = group_at(0) else {
        return;
    };
    // SAFETY: the CPU features are this function's own precondition (so for all calls below).
    let mut scales = unsafe { scales_fn(first) };
    for (group_idx, out) in dst.chunks_mut(group_bytes).enumerate() {
        let next_scales = match group_at(group_idx + 1) {
            // SAFETY: as above.
            Some(next) => unsafe { scales_fn(next) },
            None => scales,
        };
        let group = group_at(group_idx).expect("one group per chunk of dst");
        if out.len() == group_bytes {
            // SAFETY: as above; `out` is one whole group.
            unsafe { quants_fn(group, &scales, out) };
        } else {
            let mut padded_out = [0u8; GROUP * MAX_TYPE_SIZE];
            // SAFETY: as above; `padded_out` is cut to one whole group.
            unsafe { quants_fn(group, &scales, &mut padded_out[..group_bytes]) };
            out.copy_from_slice(&padded_out[..out.len()]);
        }
        scales = next_scales;
    }
}

/// The 32 floats of one block as two vectors.
#[target_feature(enable = "avx512f")]
#[inline]
fn load_block(block: &Block) -> [__m512; 2] {
    // SAFETY: a block holds 2 * LANES floats, so both reads are in bounds; loadu has no
    // alignment requirement.
    unsafe {
        [
            _mm512_loadu_ps(block.as_ptr()),
            _mm512_loadu_ps(block.as_ptr().add(LANES)),
        ]
    }
}

/// Lane-wise max (`MAX`) or min of two vectors.
#[target_feature(enable = "avx512f")]
#[inline]
fn combine<const MAX: bool>(a: __m512, b: __m512) -> __m512 {
    if MAX {
        _mm512_max_ps(a, b)
    } else {
        _mm512_min_ps(a, b)
    }
}

/// Horizontal max (or min) of each of 16 vectors, returned as lane `b` = result of vector `b`.
///
/// A transposing tree: unpacks pair lanes within 128-bit quarters, 64-bit unpacks pair those
/// results, and two 128-bit shuffles finish across quarters; 45 instructions for 16 vectors
/// instead of 8 each. Max and min are exact, so the order of the tree cannot change a value
/// (only the sign of a zero, which callers resolve separately).
#[target_feature(enable = "avx512f")]
#[inline]
fn reduce_per_vector<const MAX: bool>(vectors: &[__m512; GROUP]) -> __m512 {
    // Plain loops, not closures: a closure would not inherit the target features and would
    // be compiled as an out-of-line call per vector.
    // Per quarter: [a0|a2, b0|b2, a1|a3, b1|b3] for the pair (a, b).
    let mut pairs = [_mm512_setzero_ps(); 8];
    for (idx, pair) in pairs.iter_mut().enumerate() {
        let (a, b) = (vectors[2 * idx], vectors[2 * idx + 1]);
        *pair = combine::<MAX>(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    }
    // Per quarter: [a, b, c, d] partials of four consecutive vectors.
    let mut quads = [_mm512_setzero_ps(); 4];
    for (idx, quad) in quads.iter_mut().enumerate() {
        let (a, b) = (
            _mm512_castps_pd(pairs[2 * idx]),
            _mm512_castps_pd(pairs[2 * idx + 1]),
        );
        *quad = combine::<MAX>(
            _mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)),
        );
    }
    // Quarters (0|1, 2|3) of two quads: [q0 low, q0 high, q1 low, q1 high].
    let mut halves = [_mm512_setzero_ps(); 2];
    for (idx, half) in halves.iter_mut().enumerate() {
        let (a, b) = (quads[2 * idx], quads[2 * idx + 1]);
        *half = combine::<MAX>(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b),
        );
    }
    combine::<MAX>(
        _mm512_shuffle_f32x4::<0b10_00_10_00>(halves[0], halves[1]),
        _mm512_shuffle_f32x4::<0b11_01_11_01>(halves[0], halves[1]),
    )
}

/// The 16 lanes of a vector.
#[target_feature(enable = "avx512f")]
#[inline]
fn to_array(vector: __m512) -> [f32; LANES] {
    // SAFETY: both types are 64 bytes and every bit pattern is a valid f32.
    unsafe { std::mem::transmute::<__m512, [f32; LANES]>(vector) }
}

/// The 16 lanes of an array as a vector.
#[target_feature(enable = "avx512f")]
#[inline]
fn from_array(values: &[f32; LANES]) -> __m512 {
    // SAFETY: the array holds exactly LANES floats.
    unsafe { _mm512_loadu_ps(values.as_ptr()) }
}

/// `scalar::inverse_or_zero` on every lane: `1 / d`, or 0 where `d == 0`.
#[target_feature(enable = "avx512f")]
#[inline]
fn inverse_or_zero(d: __m512) -> __m512 {
    let nonzero = _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(d, _mm512_setzero_ps());
    _mm512_maskz_div_ps(nonzero, _mm512_set1_ps(1.0), d)
}

/// f32 → f16 bits on every lane (`scalar::f16_bits`).
#[target_feature(enable = "avx512f")]
#[inline]
fn f16_bits(values: __m512) -> [u16; LANES] {
    let halves = _mm512_cvtps_ph::<F16_ROUNDING>(values);
    // SAFETY: both types are 32 bytes and every bit pattern is a valid u16.
    unsafe { std::mem::transmute::<__m256i, [u16; LANES]>(halves) }
}

/// Per block: the element of largest magnitude with its sign (`scalar::signed_absmax`).
///
/// The vector part reduces each block's max and min. `max > -min` means the positive extreme
/// is strictly larger in magnitude, `max < -min` the negative one; only then is the signed
/// value unambiguous. Equality (an all-zero block, or `+a` and `-a` both present, where ggml
/// takes the first) goes to the scalar helper.
#[target_feature(enable = "avx512f")]
fn signed_maxima(blocks: &[Block]) -> [f32; GROUP] {
    let mut highs = [_mm512_setzero_ps(); GROUP];
    let mut lows = [_mm512_setzero_ps(); GROUP];
    for ((high, low), block) in highs.iter_mut().zip(&mut lows).zip(blocks) {
        let [first, second] = load_block(block);
        *high = _mm512_max_ps(first, second);
        *low = _mm512_min_ps(first, second);
    }
    let high = reduce_per_vector::<true>(&highs);
    let low = reduce_per_vector::<false>(&lows);
    let negated_low = _mm512_sub_ps(_mm512_setzero_ps(), low);
    let low_wins = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(high, negated_low);
    let ties = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(high, negated_low);
    let mut maxima = to_array(_mm512_mask_blend_ps(low_wins, high, low));
    if ties != 0 {
        resolve_signed_maxima(blocks, ties as u32, &mut maxima);
    }
    maxima
}

/// Per block: `(min, max)` as `scalar::block_min_max` gives them.
///
/// Vector min/max are exact; only the sign of a zero extreme depends on the reduction order,
/// so blocks whose minimum is ±0 (the only case where a zero's sign reaches the output: `m`
/// itself, or `d` of an all-zero block) are redone by the scalar helper.
#[target_feature(enable = "avx512f")]
fn minima_maxima(blocks: &[Block]) -> ([f32; GROUP], [f32; GROUP]) {
    let mut highs = [_mm512_setzero_ps(); GROUP];
    let mut lows = [_mm512_setzero_ps(); GROUP];
    for ((high, low), block) in highs.iter_mut().zip(&mut lows).zip(blocks) {
        let [first, second] = load_block(block);
        *high = _mm512_max_ps(first, second);
        *low = _mm512_min_ps(first, second);
    }
    let high = reduce_per_vector::<true>(&highs);
    let low = reduce_per_vector::<false>(&lows);
    let zero_minima = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(low, _mm512_setzero_ps());
    let mut minima = to_array(low);
    let mut maxima = to_array(high);
    if zero_minima != 0 {
        resolve_min_max(blocks, zero_minima as u32, &mut minima, &mut maxima);
    }
    (minima, maxima)
}

/// The scalar signed maximum of the blocks flagged in `flags` (bit `b` for block `b`). Kept
/// out of line: it is rare, and inlined it would bloat the hot loop 16-fold.
#[cold]
#[inline(never)]
fn resolve_signed_maxima(blocks: &[Block], flags: u32, maxima: &mut [f32; GROUP]) {
    for (block_idx, maximum) in maxima.iter_mut().enumerate() {
        if flags >> block_idx & 1 == 1 {
            *maximum = scalar::signed_absmax(&blocks[block_idx]);
        }
    }
}

/// The scalar `(min, max)` of the blocks flagged in `flags`; out of line like
/// [`resolve_signed_maxima`].
#[cold]
#[inline(never)]
fn resolve_min_max(
    blocks: &[Block],
    flags: u32,
    minima: &mut [f32; GROUP],
    maxima: &mut [f32; GROUP],
) {
    for block_idx in 0..GROUP {
        if flags >> block_idx & 1 == 1 {
            (minima[block_idx], maxima[block_idx]) = scalar::block_min_max(&blocks[block_idx]);
        }
    }
}

/// `truncated_low_byte(value)` for 16 lanes, clamped to `limit` (15 or 31) as the scalar
/// `.min(limit)` does after the cast.
#[target_feature(enable = "avx512f")]
#[inline]
fn clamped_low_bytes(values: __m512, limit: __m128i) -> __m128i {
    // cvttps2dq truncates and gives i32::MIN for NaN and out-of-range lanes; vpmovdb keeps the
    // low byte: exactly `truncated_low_byte`.
    let bytes = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(values));
    _mm_min_epu8(bytes, limit)
}

/// ggml's nibble packing of 32 4-bit quants: byte `j` = `q[j] | q[j + 16] << 4`.
#[target_feature(enable = "avx512f")]
#[inline]
fn pack_nibbles(low_half: __m128i, high_half: __m128i) -> __m128i {
    let low_nibbles = _mm_and_si128(low_half, _mm_set1_epi8(0x0f));
    // A 16-bit shift is fine: each byte holds at most 4 bits after the mask.
    let high_nibbles = _mm_slli_epi16::<4>(_mm_and_si128(high_half, _mm_set1_epi8(0x0f)));
    _mm_or_si128(low_nibbles, high_nibbles)
}

/// The fifth bit of each of 32 5-bit quants, bit `j` for element `j` (ggml's `qh`).
#[target_feature(enable = "avx512f")]
#[inline]
fn fifth_bits(low_half: __m128i, high_half: __m128i) -> u32 {
    // Moving bit 4 of every byte to bit 7 lets movemask collect it; the bits shifted across a
    // byte boundary by the 16-bit shift land below bit 7 and are ignored.
    let low = _mm_movemask_epi8(_mm_slli_epi16::<3>(low_half)) as u32;
    let high = _mm_movemask_epi8(_mm_slli_epi16::<3>(high_half)) as u32;
    low | high << 16
}

/// Stores 16 bytes at `out[offset..offset + 16]`.
#[target_feature(enable = "avx512f")]
#[inline]
fn store_16(out: &mut [u8], offset: usize, bytes: __m128i) {
    let target = &mut out[offset..offset + 16];
    // SAFETY: `target` is exactly 16 bytes; storeu has no alignment requirement.
    unsafe { _mm_storeu_si128(target.as_mut_ptr().cast(), bytes) }
}

/// Splits a group's output into its `GROUP` blocks of `N` bytes.
fn output_blocks<const N: usize>(out: &mut [u8]) -> &mut [[u8; N]] {
    let (blocks, rest) = out.as_chunks_mut::<N>();
    assert!(
        blocks.len() == GROUP && rest.is_empty(),
        "one group of blocks"
    );
    blocks
}

/// Scales of the symmetric types from their f32 `d`.
#[target_feature(enable = "avx512f")]
#[inline]
fn symmetric_scales(d: __m512) -> Scales {
    Scales {
        ids: to_array(inverse_or_zero(d)),
        minima: [0.0; GROUP],
        d_bits: f16_bits(d),
        m_bits: [0; GROUP],
    }
}

/// Scales of the affine types: `d = (max - min) / steps`, `m = min`.
#[target_feature(enable = "avx512f")]
#[inline]
fn affine_scales(blocks: &[Block], steps: f32) -> Scales {
    let (minima, maxima) = minima_maxima(blocks);
    let low = from_array(&minima);
    let d = _mm512_div_ps(
        _mm512_sub_ps(from_array(&maxima), low),
        _mm512_set1_ps(steps),
    );
    Scales {
        ids: to_array(inverse_or_zero(d)),
        minima,
        d_bits: f16_bits(d),
        m_bits: f16_bits(low),
    }
}

/// Q8_0 scales: `d = absmax / 127`.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn q8_0_scales(group: &Group) -> Scales {
    let blocks = group.as_chunks::<QK>().0;
    let mut magnitudes = [_mm512_setzero_ps(); GROUP];
    for (magnitude, block) in magnitudes.iter_mut().zip(blocks) {
        let [first, second] = load_block(block);
        *magnitude = _mm512_max_ps(_mm512_abs_ps(first), _mm512_abs_ps(second));
    }
    let absmax = reduce_per_vector::<true>(&magnitudes);
    symmetric_scales(_mm512_div_ps(absmax, _mm512_set1_ps(127.0)))
}

/// Q4_0 scales: `d = max / -8`.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn q4_0_scales(group: &Group) -> Scales {
    let maxima = signed_maxima(group.as_chunks::<QK>().0);
    symmetric_scales(_mm512_div_ps(from_array(&maxima), _mm512_set1_ps(-8.0)))
}

/// Q5_0 scales: `d = max / -16`.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn q5_0_scales(group: &Group) -> Scales {
    let maxima = signed_maxima(group.as_chunks::<QK>().0);
    symmetric_scales(_mm512_div_ps(from_array(&maxima), _mm512_set1_ps(-16.0)))
}

/// Q4_1 scales: `d = (max - min) / 15`.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn q4_1_scales(group: &Group) -> Scales {
    affine_scales(group.as_chunks::<QK>().0, 15.0)
}

/// Q5_1 scales: `d = (max - min) / 31`.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn q5_1_scales(group: &Group) -> Scales {
    affine_scales(group.as_chunks::<QK>().0, 31.0)
}

/// Q8_0 quants: `round_half_away(x * id)`.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn q8_0_quants(group: &Group, scales: &Scales, out: &mut [u8]) {
    let blocks = group.as_chunks::<QK>().0;
    let sign_mask = _mm512_set1_epi32(i32::MIN);
    let just_below_half = _mm512_set1_epi32(JUST_BELOW_HALF.to_bits() as i32);
    for (block_idx, (block, out)) in blocks.iter().zip(output_blocks::<34>(out)).enumerate() {
        let id = _mm512_set1_ps(scales.ids[block_idx]);
        let mut halves = [_mm_setzero_si128(); 2];
        for (bytes, values) in halves.iter_mut().zip(load_block(block)) {
            let scaled = _mm512_mul_ps(values, id);
            // round_half_away: add 0.49999997 with the sign of `scaled`, then truncate. The
            // bias is `(scaled & sign) | 0.49999997` on bits, one ternary-logic instruction.
            let bias = _mm512_ternarylogic_epi32::<SIGN_OR_CONSTANT>(
                _mm512_castps_si512(scaled),
                sign_mask,
                just_below_half,
            );
            let biased = _mm512_add_ps(scaled, _mm512_castsi512_ps(bias));
            *bytes = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(biased));
        }
        out[..2].copy_from_slice(&scales.d_bits[block_idx].to_le_bytes());
        store_16(out, Q8_0_QS, halves[0]);
        store_16(out, Q8_0_QS + 16, halves[1]);
    }
}

/// `clamped_low_bytes(x * id + offset)` for both halves of a block (Q4_0, Q5_0).
#[target_feature(enable = "avx512f")]
#[inline]
fn symmetric_quants(block: &Block, id: f32, offset: f32, limit: __m128i) -> [__m128i; 2] {
    let id = _mm512_set1_ps(id);
    let offset = _mm512_set1_ps(offset);
    let [first, second] = load_block(block);
    [
        clamped_low_bytes(_mm512_add_ps(_mm512_mul_ps(first, id), offset), limit),
        clamped_low_bytes(_mm512_add_ps(_mm512_mul_ps(second, id), offset), limit),
    ]
}

/// `clamped_low_bytes((x - min) * id + 0.5)` for both halves of a block (Q4_1, Q5_1).
#[target_feature(enable = "avx512f")]
#[inline]
fn affine_quants(block: &Block, min: f32, id: f32, limit: __m128i) -> [__m128i; 2] {
    let min = _mm512_set1_ps(min);
    let id = _mm512_set1_ps(id);
    let half = _mm512_set1_ps(0.5);
    let [first, second] = load_block(block);
    let first = _mm512_mul_ps(_mm512_sub_ps(first, min), id);
    let second = _mm512_mul_ps(_mm512_sub_ps(second, min), id);
    [
        clamped_low_bytes(_mm512_add_ps(first, half), limit),
        clamped_low_bytes(_mm512_add_ps(second, half), limit),
    ]
}

/// Q4_0 quants: `min(15, trunc(x * id + 8.5))`, nibble-packed.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn q4_0_quants(group: &Group, scales: &Scales, out: &mut [u8]) {
    let blocks = group.as_chunks::<QK>().0;
    let limit = _mm_set1_epi8(15);
    for (block_idx, (block, out)) in blocks.iter().zip(output_blocks::<18>(out)).enumerate() {
        let [low, high] = symmetric_quants(block, scales.ids[block_idx], 8.5, limit);
        out[..2].copy_from_slice(&scales.d_bits[block_idx].to_le_bytes());
        store_16(out, Q4_0_QS, pack_nibbles(low, high));
    }
}

/// Q5_0 quants: `min(31, trunc(x * id + 16.5))`, nibbles plus `qh`.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn q5_0_quants(group: &Group, scales: &Scales, out: &mut [u8]) {
    let blocks = group.as_chunks::<QK>().0;
    let limit = _mm_set1_epi8(31);
    for (block_idx, (block, out)) in blocks.iter().zip(output_blocks::<22>(out)).enumerate() {
        let [low, high] = symmetric_quants(block, scales.ids[block_idx], 16.5, limit);
        out[..2].copy_from_slice(&scales.d_bits[block_idx].to_le_bytes());
        out[Q5_0_QH..Q5_0_QH + 4].copy_from_slice(&fifth_bits(low, high).to_le_bytes());
        store_16(out, Q5_0_QS, pack_nibbles(low, high));
    }
}

/// Q4_1 quants: `min(15, trunc((x - min) * id + 0.5))`, nibble-packed.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn q4_1_quants(group: &Group, scales: &Scales, out: &mut [u8]) {
    let blocks = group.as_chunks::<QK>().0;
    let limit = _mm_set1_epi8(15);
    for (block_idx, (block, out)) in blocks.iter().zip(output_blocks::<20>(out)).enumerate() {
        let [low, high] = affine_quants(
            block,
            scales.minima[block_idx],
            scales.ids[block_idx],
            limit,
        );
        out[..2].copy_from_slice(&scales.d_bits[block_idx].to_le_bytes());
        out[Q4_1_M..Q4_1_M + 2].copy_from_slice(&scales.m_bits[block_idx].to_le_bytes());
        store_16(out, Q4_1_QS, pack_nibbles(low, high));
    }
}

/// Q5_1 quants: `min(31, trunc((x - min) * id + 0.5))`, nibbles plus `qh`.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn q5_1_quants(group: &Group, scales: &Scales, out: &mut [u8]) {
    let blocks = group.as_chunks::<QK>().0;
    let limit = _mm_set1_epi8(31);
    for (block_idx, (block, out)) in blocks.iter().zip(output_blocks::<24>(out)).enumerate() {
        let [low, high] = affine_quants(
            block,
            scales.minima[block_idx],
            scales.ids[block_idx],
            limit,
        );
        out[..2].copy_from_slice(&scales.d_bits[block_idx].to_le_bytes());
        out[Q5_1_M..Q5_1_M + 2].copy_from_slice(&scales.m_bits[block_idx].to_le_bytes());
        out[Q5_1_QH..Q5_1_QH + 4].copy_from_slice(&fifth_bits(low, high).to_le_bytes());
        store_16(out, Q5_1_QS, pack_nibbles(low, high));
    }
}

/// The row quantizer for `ty` (a legacy block type).
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW, and the lengths must satisfy
/// `ggml::check_row_lengths(ty, src, dst)`.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn quantize(ty: GgmlType, src: &[f32], dst: &mut [u8]) {
    let (scales_fn, quants_fn): (ScalesFn, QuantsFn) = match ty {
        GgmlType::Q8_0 => (q8_0_scales, q8_0_quants),
        GgmlType::Q4_0 => (q4_0_scales, q4_0_quants),
        GgmlType::Q4_1 => (q4_1_scales, q4_1_quants),
        GgmlType::Q5_0 => (q5_0_scales, q5_0_quants),
        GgmlType::Q5_1 => (q5_1_scales, q5_1_quants),
        GgmlType::F32 | GgmlType::F16 | GgmlType::Q4K | GgmlType::Q6K => {
            unreachable!("{ty} has no SIMD quantizer")
        }
    };
    // SAFETY: the CPU features and lengths are this function's own preconditions.
    unsafe { quantize_groups(ty, src, dst, scales_fn, quants_fn) }
}
