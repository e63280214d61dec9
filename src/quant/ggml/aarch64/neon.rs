//! NEON quantizers: 4 f32 lanes, one block (8 vectors) at a time.
//!
//! Every result is defined by `ggml::scalar`. Unlike x86_64, aarch64 reduces a vector to its
//! maximum or minimum in one instruction (`fmaxv`, `fminv`), so blocks are handled one by one
//! with no grouping. The conversions differ from x86's and are corrected to the scalar
//! `truncated_low_byte`: `fcvtzs` (truncate) and `fcvtas` (round half away from zero, the
//! scalar `round_half_away`) saturate out-of-range lanes and give 0 for NaN, while the scalar
//! definition gives `i32::MIN` for both, so lanes whose magnitude is not below 2^31 are
//! replaced by `i32::MIN` before narrowing; the narrowing moves (`xtn`) keep the low byte.

use std::arch::aarch64::*;

use crate::quant::ggml::blocks::{
    Q4_0_QS, Q4_1_M, Q4_1_QS, Q5_0_QH, Q5_0_QS, Q5_1_M, Q5_1_QH, Q5_1_QS, Q8_0_QS, QK,
};
use crate::quant::ggml::{scalar, GgmlType};

/// f32 lanes per vector.
const LANES: usize = 4;
/// Vectors per block.
const VECTORS: usize = QK / LANES;

type Block = [f32; QK];

/// The 32 floats of one block as eight vectors.
#[target_feature(enable = "neon")]
#[inline]
fn load_block(block: &Block) -> [float32x4_t; VECTORS] {
    let mut vectors = [vdupq_n_f32(0.0); VECTORS];
    for (vector_idx, vector) in vectors.iter_mut().enumerate() {
        // SAFETY: a block holds VECTORS * LANES floats, so this read of LANES floats at
        // vector_idx * LANES is in bounds; vld1q has no alignment requirement beyond f32's.
        *vector = unsafe { vld1q_f32(block.as_ptr().add(vector_idx * LANES)) };
    }
    vectors
}

/// `(min, max)` of a block from the vector reductions (exact; the sign of a zero extreme is
/// settled by the callers).
#[target_feature(enable = "neon")]
#[inline]
fn block_extremes(vectors: &[float32x4_t; VECTORS]) -> (f32, f32) {
    let mut low = vectors[0];
    let mut high = vectors[0];
    for &vector in &vectors[1..] {
        low = vminq_f32(low, vector);
        high = vmaxq_f32(high, vector);
    }
    (vminvq_f32(low), vmaxvq_f32(high))
}

/// `scalar::signed_absmax`: unambiguous unless `max == -min` (an all-zero block, or `+a` and
/// `-a` both present, where the first one counts), which the scalar helper settles.
#[target_feature(enable = "neon")]
#[inline]
fn signed_absmax(block: &Block, vectors: &[float32x4_t; VECTORS]) -> f32 {
    let (low, high) = block_extremes(vectors);
    if high > -low {
        high
    } else if high < -low {
        low
    } else {
        scalar::signed_absmax(block)
    }
}

/// `scalar::block_min_max`: the vector result unless the minimum is ±0, whose sign (and the
/// sign of `d` in an all-zero block) only the first-occurrence rule decides.
#[target_feature(enable = "neon")]
#[inline]
fn min_max(block: &Block, vectors: &[float32x4_t; VECTORS]) -> (f32, f32) {
    let (low, high) = block_extremes(vectors);
    if low == 0.0 {
        scalar::block_min_max(block)
    } else {
        (low, high)
    }
}

/// Replaces lanes whose magnitude is not below 2^31 (and NaN lanes) by `i32::MIN`, as x86's
/// conversion and the scalar `truncated_low_byte` do.
#[target_feature(enable = "neon")]
#[inline]
fn indefinite_outside_i32(values: float32x4_t, converted: int32x4_t) -> int32x4_t {
    let in_range = vcaltq_f32(values, vdupq_n_f32(2_147_483_648.0));
    vbslq_s32(in_range, converted, vdupq_n_s32(i32::MIN))
}

/// The low bytes of eight vectors of i32 lanes, in element order (32 bytes).
#[target_feature(enable = "neon")]
#[inline]
fn low_bytes(integers: &[int32x4_t; VECTORS]) -> [uint8x16_t; 2] {
    let mut halves = [vdupq_n_u8(0); 2];
    for (half, quarter) in halves.iter_mut().zip(integers.chunks_exact(4)) {
        let first = vcombine_s16(vmovn_s32(quarter[0]), vmovn_s32(quarter[1]));
        let second = vcombine_s16(vmovn_s32(quarter[2]), vmovn_s32(quarter[3]));
        *half = vreinterpretq_u8_s8(vcombine_s8(vmovn_s16(first), vmovn_s16(second)));
    }
    halves
}

/// `min(limit, truncated_low_byte(value))` of each lane of eight vectors.
#[target_feature(enable = "neon")]
#[inline]
fn clamped_quants(values: &[float32x4_t; VECTORS], limit: u8) -> [uint8x16_t; 2] {
    let mut integers = [vdupq_n_s32(0); VECTORS];
    for (integer, &value) in integers.iter_mut().zip(values) {
        *integer = indefinite_outside_i32(value, vcvtq_s32_f32(value));
    }
    let [low, high] = low_bytes(&integers);
    [
        vminq_u8(low, vdupq_n_u8(limit)),
        vminq_u8(high, vdupq_n_u8(limit)),
    ]
}

/// ggml's nibble packing: byte `j` = `q[j] | q[j + 16] << 4`.
#[target_feature(enable = "neon")]
#[inline]
fn pack_nibbles(quants: [uint8x16_t; 2]) -> uint8x16_t {
    let nibble_mask = vdupq_n_u8(0x0f);
    let low = vandq_u8(quants[0], nibble_mask);
    let high = vandq_u8(quants[1], nibble_mask);
    vorrq_u8(low, vshlq_n_u8::<4>(high))
}

/// The fifth bit of each of 32 quants, bit `j` for element `j` (ggml's `qh`): each byte's bit
/// 4, weighted by its position within 8 bytes and summed per 8 bytes.
#[target_feature(enable = "neon")]
#[inline]
fn fifth_bits(quants: [uint8x16_t; 2]) -> u32 {
    const WEIGHTS: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    // SAFETY: WEIGHTS holds exactly 16 bytes.
    let weights = unsafe { vld1q_u8(WEIGHTS.as_ptr()) };
    let mut qh = 0u32;
    for (half_idx, &half) in quants.iter().enumerate() {
        let bits = vandq_u8(vshrq_n_u8::<4>(half), vdupq_n_u8(1));
        let weighted = vmulq_u8(bits, weights);
        let low = u32::from(vaddv_u8(vget_low_u8(weighted)));
        let high = u32::from(vaddv_u8(vget_high_u8(weighted)));
        qh |= (low | high << 8) << (16 * half_idx);
    }
    qh
}

/// Stores 16 bytes at `out[offset..offset + 16]`.
#[target_feature(enable = "neon")]
#[inline]
fn store_16(out: &mut [u8], offset: usize, bytes: uint8x16_t) {
    let target = &mut out[offset..offset + 16];
    // SAFETY: `target` is exactly 16 bytes; vst1q has no alignment requirement for bytes.
    unsafe { vst1q_u8(target.as_mut_ptr(), bytes) }
}

/// One Q8_0 block: `round_half_away(x * id)` with `fcvtas`.
#[target_feature(enable = "neon")]
fn q8_0_block(block: &Block, out: &mut [u8; 34]) {
    let vectors = load_block(block);
    let mut magnitudes = vabsq_f32(vectors[0]);
    for &vector in &vectors[1..] {
        magnitudes = vmaxq_f32(magnitudes, vabsq_f32(vector));
    }
    let d = vmaxvq_f32(magnitudes) / 127.0;
    let id = vdupq_n_f32(scalar::inverse_or_zero(d));
    let mut integers = [vdupq_n_s32(0); VECTORS];
    for (integer, &vector) in integers.iter_mut().zip(&vectors) {
        let scaled = vmulq_f32(vector, id);
        *integer = indefinite_outside_i32(scaled, vcvtaq_s32_f32(scaled));
    }
    let [low, high] = low_bytes(&integers);
    out[..2].copy_from_slice(&scalar::f16_bits(d).to_le_bytes());
    store_16(out, Q8_0_QS, low);
    store_16(out, Q8_0_QS + 16, high);
}

/// `min(limit, trunc(x * id + offset))` for a symmetric block with divisor `divisor`; returns
/// the f32 `d` and the quants.
#[target_feature(enable = "neon")]
#[inline]
fn symmetric_quants(block: &Block, divisor: f32, offset: f32, limit: u8) -> (f32, [uint8x16_t; 2]) {
    let mut vectors = load_block(block);
    let d = signed_absmax(block, &vectors) / divisor;
    let id = vdupq_n_f32(scalar::inverse_or_zero(d));
    for vector in &mut vectors {
        // Two roundings, never fused: the scalar `x * id + offset`.
        *vector = vaddq_f32(vmulq_f32(*vector, id), vdupq_n_f32(offset));
    }
    (d, clamped_quants(&vectors, limit))
}

/// `min(limit, trunc((x - min) * id + 0.5))` for an affine block with `steps` steps; returns
/// `d`, `min` and the quants.
#[target_feature(enable = "neon")]
#[inline]
fn affine_quants(block: &Block, steps: f32, limit: u8) -> (f32, f32, [uint8x16_t; 2]) {
    let mut vectors = load_block(block);
    let (min, max) = min_max(block, &vectors);
    let d = (max - min) / steps;
    let id = vdupq_n_f32(scalar::inverse_or_zero(d));
    for vector in &mut vectors {
        let shifted = vsubq_f32(*vector, vdupq_n_f32(min));
        *vector = vaddq_f32(vmulq_f32(shifted, id), vdupq_n_f32(0.5));
    }
    (d, min, clamped_quants(&vectors, limit))
}

#[target_feature(enable = "neon")]
fn q4_0_block(block: &Block, out: &mut [u8; 18]) {
    let (d, quants) = symmetric_quants(block, -8.0, 8.5, 15);
    out[..2].copy_from_slice(&scalar::f16_bits(d).to_le_bytes());
    store_16(out, Q4_0_QS, pack_nibbles(quants));
}

#[target_feature(enable = "neon")]
fn q5_0_block(block: &Block, out: &mut [u8; 22]) {
    let (d, quants) = symmetric_quants(block, -16.0, 16.5, 31);
    out[..2].copy_from_slice(&scalar::f16_bits(d).to_le_bytes());
    out[Q5_0_QH..Q5_0_QH + 4].copy_from_slice(&fifth_bits(quants).to_le_bytes());
    store_16(out, Q5_0_QS, pack_nibbles(quants));
}

#[target_feature(enable = "neon")]
fn q4_1_block(block: &Block, out: &mut [u8; 20]) {
    let (d, min, quants) = affine_quants(block, 15.0, 15);
    out[..2].copy_from_slice(&scalar::f16_bits(d).to_le_bytes());
    out[Q4_1_M..Q4_1_M + 2].copy_from_slice(&scalar::f16_bits(min).to_le_bytes());
    store_16(out, Q4_1_QS, pack_nibbles(quants));
}

#[target_feature(enable = "neon")]
fn q5_1_block(block: &Block, out: &mut [u8; 24]) {
    let (d, min, quants) = affine_quants(block, 31.0, 31);
    out[..2].copy_from_slice(&scalar::f16_bits(d).to_le_bytes());
    out[Q5_1_M..Q5_1_M + 2].copy_from_slice(&scalar::f16_bits(min).to_le_bytes());
    out[Q5_1_QH..Q5_1_QH + 4].copy_from_slice(&fifth_bits(quants).to_le_bytes());
    store_16(out, Q5_1_QS, pack_nibbles(quants));
}

/// Runs a per-block function over every block of `src` and its `N`-byte slot of `dst` (a
/// macro rather than a function taking a closure: closures would not inherit the target
/// feature, and would be called out of line).
macro_rules! for_each_block {
    ($src:ident, $dst:ident, $block_bytes:literal, $block_fn:ident) => {{
        let (blocks, _) = $src.as_chunks::<QK>();
        let (outs, _) = $dst.as_chunks_mut::<$block_bytes>();
        for (block, out) in blocks.iter().zip(outs) {
            $block_fn(block, out);
        }
    }};
}

/// The row quantizer for `ty` (a legacy block type).
///
/// # Safety
/// The CPU must support NEON, and the lengths must satisfy
/// `ggml::check_row_lengths(ty, src, dst)`.
#[target_feature(enable = "neon")]
pub(super) unsafe fn quantize(ty: GgmlType, src: &[f32], dst: &mut [u8]) {
    match ty {
        GgmlType::Q8_0 => for_each_block!(src, dst, 34, q8_0_block),
        GgmlType::Q4_0 => for_each_block!(src, dst, 18, q4_0_block),
        GgmlType::Q4_1 => for_each_block!(src, dst, 20, q4_1_block),
        GgmlType::Q5_0 => for_each_block!(src, dst, 22, q5_0_block),
        GgmlType::Q5_1 => for_each_block!(src, dst, 24, q5_1_block),
        GgmlType::F32 | GgmlType::F16 | GgmlType::Q4K | GgmlType::Q6K => {
            unreachable!("{ty} has no SIMD quantizer")
        }
    }
}
