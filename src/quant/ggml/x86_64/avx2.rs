//! AVX2 (+F16C) quantizers: 8 f32 lanes, groups of 8 blocks.
//!
//! The same two-pass algorithm as `avx512.rs` (read that file's docs first) at half the width:
//! a block is four vectors, the transposing reduction turns 8 per-block vectors into one
//! vector of 8 block extremes, and the scales of a group are divided and converted to f16 at
//! once. Narrowing to bytes keeps the low byte of each 32-bit lane by masking before the
//! saturating packs, which is the scalar `truncated_low_byte`.

use std::arch::x86_64::*;

use crate::quant::ggml::blocks::{
    Q4_0_QS, Q4_1_M, Q4_1_QS, Q5_0_QH, Q5_0_QS, Q5_1_M, Q5_1_QH, Q5_1_QS, Q8_0_QS, QK,
};
use crate::quant::ggml::{scalar, GgmlType};

/// f32 lanes per vector.
const LANES: usize = 8;
/// Vectors per block.
const VECTORS: usize = QK / LANES;
/// Blocks per group: the reduction leaves one block per lane.
const GROUP: usize = LANES;
/// Floats per group.
const GROUP_ELEMENTS: usize = GROUP * QK;
/// Bytes of the largest block type (Q8_0), for the padded tail's output buffer.
const MAX_TYPE_SIZE: usize = 34;

type Group = [f32; GROUP_ELEMENTS];
type Block = [f32; QK];

/// Per-block scales of one group: the result of the first pass (see `avx512::Scales`).
#[derive(Clone, Copy)]
struct Scales {
    ids: [f32; GROUP],
    minima: [f32; GROUP],
    d_bits: [u16; GROUP],
    m_bits: [u16; GROUP],
}

/// The first pass over one group.
///
/// # Safety
/// The CPU must support AVX2 and F16C.
type ScalesFn = unsafe fn(&Group) -> Scales;

/// The second pass over one group: writes exactly `GROUP` blocks of the type into `out`.
///
/// # Safety
/// The CPU must support AVX2 and F16C.
type QuantsFn = unsafe fn(&Group, &Scales, &mut [u8]);

/// See `avx512::JUST_BELOW_HALF`: the largest f32 below 0.5, for round-half-away.
const JUST_BELOW_HALF: f32 = 0.499_999_97;

/// Runs both passes over every full group of `src`, then over a zero-padded copy of the
/// last, partial group; software-pipelined as `avx512::quantize_groups` explains.
///
/// # Safety
/// The CPU must support AVX2 and F16C, and `dst.len()` must be
/// `src.len() / QK * ty.type_size()` with `src.len() % QK == 0` (checked by the caller; the
/// slicing below would panic rather than misbehave otherwise).
#[target_feature(enable = "avx2,f16c")]
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

/// The 32 floats of one block as four vectors.
#[target_feature(enable = "avx2")]
#[inline]
fn load_block(block: &Block) -> [__m256; VECTORS] {
    // Plain loops, not closures, in this file: a closure would not inherit the target features
    // and would be compiled as an out-of-line call per vector.
    let mut vectors = [_mm256_setzero_ps(); VECTORS];
    for (vector_idx, vector) in vectors.iter_mut().enumerate() {
        // SAFETY: a block holds VECTORS * LANES floats, so this read of LANES floats at
        // vector_idx * LANES is in bounds; loadu has no alignment requirement.
        *vector = unsafe { _mm256_loadu_ps(block.as_ptr().add(vector_idx * LANES)) };
    }
    vectors
}

/// Lane-wise max (`MAX`) or min of two vectors.
#[target_feature(enable = "avx2")]
#[inline]
fn combine<const MAX: bool>(a: __m256, b: __m256) -> __m256 {
    if MAX {
        _mm256_max_ps(a, b)
    } else {
        _mm256_min_ps(a, b)
    }
}

/// A block's four vectors folded into one (lane-wise max or min).
#[target_feature(enable = "avx2")]
#[inline]
fn fold_block<const MAX: bool>(vectors: [__m256; VECTORS]) -> __m256 {
    combine::<MAX>(
        combine::<MAX>(vectors[0], vectors[1]),
        combine::<MAX>(vectors[2], vectors[3]),
    )
}

/// Horizontal max (or min) of each of 8 vectors, returned as lane `b` = result of vector `b`:
/// unpacks within 128-bit halves, 64-bit unpacks, then one swap of halves (21 instructions).
#[target_feature(enable = "avx2")]
#[inline]
fn reduce_per_vector<const MAX: bool>(vectors: &[__m256; GROUP]) -> __m256 {
    // Per half: [a0|a2, b0|b2, a1|a3, b1|b3] for the pair (a, b).
    let mut pairs = [_mm256_setzero_ps(); 4];
    for (idx, pair) in pairs.iter_mut().enumerate() {
        let (a, b) = (vectors[2 * idx], vectors[2 * idx + 1]);
        *pair = combine::<MAX>(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
    }
    // Per half: [a, b, c, d] partials of four consecutive vectors.
    let mut quads = [_mm256_setzero_ps(); 2];
    for (idx, quad) in quads.iter_mut().enumerate() {
        let (a, b) = (
            _mm256_castps_pd(pairs[2 * idx]),
            _mm256_castps_pd(pairs[2 * idx + 1]),
        );
        *quad = combine::<MAX>(
            _mm256_castpd_ps(_mm256_unpacklo_pd(a, b)),
            _mm256_castpd_ps(_mm256_unpackhi_pd(a, b)),
        );
    }
    combine::<MAX>(
        _mm256_permute2f128_ps::<0x20>(quads[0], quads[1]),
        _mm256_permute2f128_ps::<0x31>(quads[0], quads[1]),
    )
}

/// The 8 lanes of a vector.
#[target_feature(enable = "avx2")]
#[inline]
fn to_array(vector: __m256) -> [f32; LANES] {
    // SAFETY: both types are 32 bytes and every bit pattern is a valid f32.
    unsafe { std::mem::transmute::<__m256, [f32; LANES]>(vector) }
}

/// The 8 lanes of an array as a vector.
#[target_feature(enable = "avx2")]
#[inline]
fn from_array(values: &[f32; LANES]) -> __m256 {
    // SAFETY: the array holds exactly LANES floats.
    unsafe { _mm256_loadu_ps(values.as_ptr()) }
}

/// `scalar::inverse_or_zero` on every lane: `1 / d`, or 0 where `d == 0`.
#[target_feature(enable = "avx2")]
#[inline]
fn inverse_or_zero(d: __m256) -> __m256 {
    let zero = _mm256_cmp_ps::<_CMP_EQ_OQ>(d, _mm256_setzero_ps());
    _mm256_andnot_ps(zero, _mm256_div_ps(_mm256_set1_ps(1.0), d))
}

/// f32 → f16 bits on every lane, nearest even (`scalar::f16_bits`).
#[target_feature(enable = "avx2,f16c")]
#[inline]
fn f16_bits(values: __m256) -> [u16; LANES] {
    let halves = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(values);
    // SAFETY: both types are 16 bytes and every bit pattern is a valid u16.
    unsafe { std::mem::transmute::<__m128i, [u16; LANES]>(halves) }
}

/// Per-block vectors of maxima and minima of a group.
#[target_feature(enable = "avx2")]
#[inline]
fn block_extremes(blocks: &[Block]) -> (__m256, __m256) {
    let mut highs = [_mm256_setzero_ps(); GROUP];
    let mut lows = [_mm256_setzero_ps(); GROUP];
    for ((high, low), block) in highs.iter_mut().zip(&mut lows).zip(blocks) {
        let vectors = load_block(block);
        *high = fold_block::<true>(vectors);
        *low = fold_block::<false>(vectors);
    }
    (
        reduce_per_vector::<true>(&highs),
        reduce_per_vector::<false>(&lows),
    )
}

/// Per block: the element of largest magnitude with its sign (`scalar::signed_absmax`); ties
/// of `max` and `-min` (all-zero blocks, `+a` and `-a` both present) go to the scalar helper,
/// as in `avx512::signed_maxima`.
#[target_feature(enable = "avx2")]
fn signed_maxima(blocks: &[Block]) -> [f32; GROUP] {
    let (high, low) = block_extremes(blocks);
    let negated_low = _mm256_sub_ps(_mm256_setzero_ps(), low);
    let low_wins = _mm256_cmp_ps::<_CMP_LT_OQ>(high, negated_low);
    let ties = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(high, negated_low));
    let mut maxima = to_array(_mm256_blendv_ps(high, low, low_wins));
    if ties != 0 {
        resolve_signed_maxima(blocks, ties as u32, &mut maxima);
    }
    maxima
}

/// Per block: `(min, max)` as `scalar::block_min_max` gives them; blocks with a ±0 minimum
/// are redone by the scalar helper, as in `avx512::minima_maxima`.
#[target_feature(enable = "avx2")]
fn minima_maxima(blocks: &[Block]) -> ([f32; GROUP], [f32; GROUP]) {
    let (high, low) = block_extremes(blocks);
    let zero_minima = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(low, _mm256_setzero_ps()));
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

/// `truncated_low_byte` of 32 lanes, in element order: cvttps2dq gives i32::MIN for NaN and
/// out-of-range lanes; masking keeps the low byte, so the saturating packs cannot clamp.
#[target_feature(enable = "avx2")]
#[inline]
fn low_bytes(values: [__m256; VECTORS]) -> __m256i {
    let byte_mask = _mm256_set1_epi32(0xff);
    let mut integers = [_mm256_setzero_si256(); VECTORS];
    for (integer, &lane) in integers.iter_mut().zip(&values) {
        *integer = _mm256_and_si256(_mm256_cvttps_epi32(lane), byte_mask);
    }
    let [a, b, c, d] = integers;
    // Packs work per 128-bit half: the bytes come out as dwords [a0-3, b0-3, c0-3, d0-3 |
    // a4-7, b4-7, c4-7, d4-7], which the permutation puts back in element order.
    let words_ab = _mm256_packus_epi32(a, b);
    let words_cd = _mm256_packus_epi32(c, d);
    let bytes = _mm256_packus_epi16(words_ab, words_cd);
    _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// ggml's nibble packing of 32 4-bit quants: byte `j` = `q[j] | q[j + 16] << 4`.
#[target_feature(enable = "avx2")]
#[inline]
fn pack_nibbles(quants: __m256i) -> __m128i {
    let nibble_mask = _mm_set1_epi8(0x0f);
    let low_half = _mm_and_si128(_mm256_castsi256_si128(quants), nibble_mask);
    let high_half = _mm_and_si128(_mm256_extracti128_si256::<1>(quants), nibble_mask);
    // A 16-bit shift is fine: each byte holds at most 4 bits after the mask.
    _mm_or_si128(low_half, _mm_slli_epi16::<4>(high_half))
}

/// The fifth bit of each of 32 5-bit quants, bit `j` for element `j` (ggml's `qh`): bit 4 of
/// every byte moved to bit 7 for movemask (bits crossing bytes land below bit 7).
#[target_feature(enable = "avx2")]
#[inline]
fn fifth_bits(quants: __m256i) -> u32 {
    _mm256_movemask_epi8(_mm256_slli_epi16::<3>(quants)) as u32
}

/// Stores 16 bytes at `out[offset..offset + 16]`.
#[target_feature(enable = "avx2")]
#[inline]
fn store_16(out: &mut [u8], offset: usize, bytes: __m128i) {
    let target = &mut out[offset..offset + 16];
    // SAFETY: `target` is exactly 16 bytes; storeu has no alignment requirement.
    unsafe { _mm_storeu_si128(target.as_mut_ptr().cast(), bytes) }
}

/// Stores 32 bytes at `out[offset..offset + 32]`.
#[target_feature(enable = "avx2")]
#[inline]
fn store_32(out: &mut [u8], offset: usize, bytes: __m256i) {
    let target = &mut out[offset..offset + 32];
    // SAFETY: `target` is exactly 32 bytes; storeu has no alignment requirement.
    unsafe { _mm256_storeu_si256(target.as_mut_ptr().cast(), bytes) }
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
#[target_feature(enable = "avx2,f16c")]
#[inline]
fn symmetric_scales(d: __m256) -> Scales {
    Scales {
        ids: to_array(inverse_or_zero(d)),
        minima: [0.0; GROUP],
        d_bits: f16_bits(d),
        m_bits: [0; GROUP],
    }
}

/// Scales of the affine types: `d = (max - min) / steps`, `m = min`.
#[target_feature(enable = "avx2,f16c")]
#[inline]
fn affine_scales(blocks: &[Block], steps: f32) -> Scales {
    let (minima, maxima) = minima_maxima(blocks);
    let low = from_array(&minima);
    let d = _mm256_div_ps(
        _mm256_sub_ps(from_array(&maxima), low),
        _mm256_set1_ps(steps),
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
/// The CPU must support AVX2 and F16C.
#[target_feature(enable = "avx2,f16c")]
unsafe fn q8_0_scales(group: &Group) -> Scales {
    let blocks = group.as_chunks::<QK>().0;
    let sign_mask = _mm256_set1_ps(-0.0);
    let mut magnitudes = [_mm256_setzero_ps(); GROUP];
    for (magnitude, block) in magnitudes.iter_mut().zip(blocks) {
        let mut vectors = load_block(block);
        for values in &mut vectors {
            *values = _mm256_andnot_ps(sign_mask, *values);
        }
        *magnitude = fold_block::<true>(vectors);
    }
    let absmax = reduce_per_vector::<true>(&magnitudes);
    symmetric_scales(_mm256_div_ps(absmax, _mm256_set1_ps(127.0)))
}

/// Q4_0 scales: `d = max / -8`.
///
/// # Safety
/// The CPU must support AVX2 and F16C.
#[target_feature(enable = "avx2,f16c")]
unsafe fn q4_0_scales(group: &Group) -> Scales {
    let maxima = signed_maxima(group.as_chunks::<QK>().0);
    symmetric_scales(_mm256_div_ps(from_array(&maxima), _mm256_set1_ps(-8.0)))
}

/// Q5_0 scales: `d = max / -16`.
///
/// # Safety
/// The CPU must support AVX2 and F16C.
#[target_feature(enable = "avx2,f16c")]
unsafe fn q5_0_scales(group: &Group) -> Scales {
    let maxima = signed_maxima(group.as_chunks::<QK>().0);
    symmetric_scales(_mm256_div_ps(from_array(&maxima), _mm256_set1_ps(-16.0)))
}

/// Q4_1 scales: `d = (max - min) / 15`.
///
/// # Safety
/// The CPU must support AVX2 and F16C.
#[target_feature(enable = "avx2,f16c")]
unsafe fn q4_1_scales(group: &Group) -> Scales {
    affine_scales(group.as_chunks::<QK>().0, 15.0)
}

/// Q5_1 scales: `d = (max - min) / 31`.
///
/// # Safety
/// The CPU must support AVX2 and F16C.
#[target_feature(enable = "avx2,f16c")]
unsafe fn q5_1_scales(group: &Group) -> Scales {
    affine_scales(group.as_chunks::<QK>().0, 31.0)
}

/// Q8_0 quants: `round_half_away(x * id)`.
///
/// # Safety
/// The CPU must support AVX2 and F16C.
#[target_feature(enable = "avx2,f16c")]
unsafe fn q8_0_quants(group: &Group, scales: &Scales, out: &mut [u8]) {
    let blocks = group.as_chunks::<QK>().0;
    let sign_mask = _mm256_set1_ps(-0.0);
    let just_below_half = _mm256_set1_ps(JUST_BELOW_HALF);
    for (block_idx, (block, out)) in blocks.iter().zip(output_blocks::<34>(out)).enumerate() {
        let id = _mm256_set1_ps(scales.ids[block_idx]);
        let mut rounded = load_block(block);
        for values in &mut rounded {
            let scaled = _mm256_mul_ps(*values, id);
            // round_half_away: add 0.49999997 with the sign of `scaled`, then truncate.
            let bias = _mm256_or_ps(_mm256_and_ps(scaled, sign_mask), just_below_half);
            *values = _mm256_add_ps(scaled, bias);
        }
        out[..2].copy_from_slice(&scales.d_bits[block_idx].to_le_bytes());
        store_32(out, Q8_0_QS, low_bytes(rounded));
    }
}

/// `min(limit, truncated_low_byte(x * id + offset))` for a block (Q4_0, Q5_0).
#[target_feature(enable = "avx2")]
#[inline]
fn symmetric_quants(block: &Block, id: f32, offset: f32, limit: __m256i) -> __m256i {
    let id = _mm256_set1_ps(id);
    let offset = _mm256_set1_ps(offset);
    let mut shifted = load_block(block);
    for values in &mut shifted {
        *values = _mm256_add_ps(_mm256_mul_ps(*values, id), offset);
    }
    _mm256_min_epu8(low_bytes(shifted), limit)
}

/// `min(limit, truncated_low_byte((x - min) * id + 0.5))` for a block (Q4_1, Q5_1).
#[target_feature(enable = "avx2")]
#[inline]
fn affine_quants(block: &Block, min: f32, id: f32, limit: __m256i) -> __m256i {
    let min = _mm256_set1_ps(min);
    let id = _mm256_set1_ps(id);
    let half = _mm256_set1_ps(0.5);
    let mut shifted = load_block(block);
    for values in &mut shifted {
        *values = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(*values, min), id), half);
    }
    _mm256_min_epu8(low_bytes(shifted), limit)
}

/// Q4_0 quants: `min(15, trunc(x * id + 8.5))`, nibble-packed.
///
/// # Safety
/// The CPU must support AVX2 and F16C.
#[target_feature(enable = "avx2,f16c")]
unsafe fn q4_0_quants(group: &Group, scales: &Scales, out: &mut [u8]) {
    let blocks = group.as_chunks::<QK>().0;
    let limit = _mm256_set1_epi8(15);
    for (block_idx, (block, out)) in blocks.iter().zip(output_blocks::<18>(out)).enumerate() {
        let quants = symmetric_quants(block, scales.ids[block_idx], 8.5, limit);
        out[..2].copy_from_slice(&scales.d_bits[block_idx].to_le_bytes());
        store_16(out, Q4_0_QS, pack_nibbles(quants));
    }
}

/// Q5_0 quants: `min(31, trunc(x * id + 16.5))`, nibbles plus `qh`.
///
/// # Safety
/// The CPU must support AVX2 and F16C.
#[target_feature(enable = "avx2,f16c")]
unsafe fn q5_0_quants(group: &Group, scales: &Scales, out: &mut [u8]) {
    let blocks = group.as_chunks::<QK>().0;
    let limit = _mm256_set1_epi8(31);
    for (block_idx, (block, out)) in blocks.iter().zip(output_blocks::<22>(out)).enumerate() {
        let quants = symmetric_quants(block, scales.ids[block_idx], 16.5, limit);
        out[..2].copy_from_slice(&scales.d_bits[block_idx].to_le_bytes());
        out[Q5_0_QH..Q5_0_QH + 4].copy_from_slice(&fifth_bits(quants).to_le_bytes());
        store_16(out, Q5_0_QS, pack_nibbles(quants));
    }
}

/// Q4_1 quants: `min(15, trunc((x - min) * id + 0.5))`, nibble-packed.
///
/// # Safety
/// The CPU must support AVX2 and F16C.
#[target_feature(enable = "avx2,f16c")]
unsafe fn q4_1_quants(group: &Group, scales: &Scales, out: &mut [u8]) {
    let blocks = group.as_chunks::<QK>().0;
    let limit = _mm256_set1_epi8(15);
    for (block_idx, (block, out)) in blocks.iter().zip(output_blocks::<20>(out)).enumerate() {
        let min = scales.minima[block_idx];
        let quants = affine_quants(block, min, scales.ids[block_idx], limit);
        out[..2].copy_from_slice(&scales.d_bits[block_idx].to_le_bytes());
        out[Q4_1_M..Q4_1_M + 2].copy_from_slice(&scales.m_bits[block_idx].to_le_bytes());
        store_16(out, Q4_1_QS, pack_nibbles(quants));
    }
}

/// Q5_1 quants: `min(31, trunc((x - min) * id + 0.5))`, nibbles plus `qh`.
///
/// # Safety
/// The CPU must support AVX2 and F16C.
#[target_feature(enable = "avx2,f16c")]
unsafe fn q5_1_quants(group: &Group, scales: &Scales, out: &mut [u8]) {
    let blocks = group.as_chunks::<QK>().0;
    let limit = _mm256_set1_epi8(31);
    for (block_idx, (block, out)) in blocks.iter().zip(output_blocks::<24>(out)).enumerate() {
        let min = scales.minima[block_idx];
        let quants = affine_quants(block, min, scales.ids[block_idx], limit);
        out[..2].copy_from_slice(&scales.d_bits[block_idx].to_le_bytes());
        out[Q5_1_M..Q5_1_M + 2].copy_from_slice(&scales.m_bits[block_idx].to_le_bytes());
        out[Q5_1_QH..Q5_1_QH + 4].copy_from_slice(&fifth_bits(quants).to_le_bytes());
        store_16(out, Q5_1_QS, pack_nibbles(quants));
    }
}

/// The row quantizer for `ty` (a legacy block type).
///
/// # Safety
/// The CPU must support AVX2 and F16C, and the lengths must satisfy
/// `ggml::check_row_lengths(ty, src, dst)`.
#[target_feature(enable = "avx2,f16c")]
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
