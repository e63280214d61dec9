//! NEON kernels: 4 f32 lanes, 8 elements per main-loop iteration, scalar tails.
//!
//! The same algorithm as `x86_64/avx2.rs` at half the width, without its streaming stores and
//! prefetch. FCVTNS rounds half to even and saturates, so both clamps happen on integers here.
//! Every result is defined by `kernels::scalar`; tails use the scalar element function itself.
//! Not compiled on the x86_64 development machines (no aarch64 standard library there): keep
//! it minimal and check it on an aarch64 host before relying on it.

use std::arch::aarch64::*;

use crate::quant::kernels::scalar::{self, MAGNITUDE_MASK};
use crate::quant::kernels::{ErrorStats, I8Params, Totals, STATS_BLOCK};

/// f32 lanes per vector.
const LANES: usize = 4;
/// Elements per main-loop iteration: two vectors, narrowed together into one 8-byte store.
const STEP: usize = 2 * LANES;

/// See `scalar::absmax`.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub(super) unsafe fn absmax(src: &[f32]) -> f32 {
    let magnitude_mask = vdupq_n_u32(MAGNITUDE_MASK);
    let mut maximum = vdupq_n_u32(0);
    let chunks = src.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        // SAFETY: `chunk` holds exactly LANES floats, the size of one load; f32 and u32 have the
        // same size and alignment.
        let bits = unsafe { vld1q_u32(chunk.as_ptr().cast::<u32>()) };
        maximum = vmaxq_u32(maximum, vandq_u32(bits, magnitude_mask));
    }
    let tail_max = scalar::absmax(tail).to_bits();
    f32::from_bits(vmaxvq_u32(maximum).max(tail_max))
}

/// `scalar::total_order_key` on 4 lanes of float bits.
#[target_feature(enable = "neon")]
#[inline]
fn total_order_keys(bits: int32x4_t) -> int32x4_t {
    let magnitude_flip = vshrq_n_u32::<1>(vreinterpretq_u32_s32(vshrq_n_s32::<31>(bits)));
    veorq_s32(bits, vreinterpretq_s32_u32(magnitude_flip))
}

/// See `scalar::min_max`.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub(super) unsafe fn min_max(src: &[f32]) -> (f32, f32) {
    let Some(&first) = src.first() else {
        return (0.0, 0.0);
    };
    let first_key = scalar::total_order_key(first.to_bits());
    let mut low = vdupq_n_s32(first_key);
    let mut high = low;
    let chunks = src.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        // SAFETY: `chunk` holds exactly LANES floats, the size of one load; f32 and i32 have the
        // same size and alignment.
        let bits = unsafe { vld1q_s32(chunk.as_ptr().cast::<i32>()) };
        let keys = total_order_keys(bits);
        low = vminq_s32(low, keys);
        high = vmaxq_s32(high, keys);
    }
    let tail_keys = tail
        .iter()
        .map(|value| scalar::total_order_key(value.to_bits()));
    let low_key = tail_keys.clone().fold(vminvq_s32(low), i32::min);
    let high_key = tail_keys.fold(vmaxvq_s32(high), i32::max);
    (
        scalar::from_total_order_key(low_key),
        scalar::from_total_order_key(high_key),
    )
}

/// [`I8Params`] broadcast to every lane, with the bounds of the in-range steps.
struct Broadcast {
    scale: float32x4_t,
    inv_scale: float32x4_t,
    /// `-128 - zero_point` and `127 - zero_point`: the steps that still fit an i8.
    lowest_step: int32x4_t,
    highest_step: int32x4_t,
    zero_point: int32x4_t,
    magnitude_mask: uint32x4_t,
}

/// Per-lane error sums of one block (see `STATS_BLOCK`); the maximum is kept as magnitude bit
/// patterns, which order like the values.
#[derive(Clone, Copy)]
struct LaneSums {
    sq_err: float32x4_t,
    sq_ref: float32x4_t,
    dot: float32x4_t,
    sq_steps: int32x4_t,
    max_abs_err_bits: uint32x4_t,
}

impl LaneSums {
    #[target_feature(enable = "neon")]
    fn zero() -> Self {
        let zero = vdupq_n_f32(0.0);
        LaneSums {
            sq_err: zero,
            sq_ref: zero,
            dot: zero,
            sq_steps: vdupq_n_s32(0),
            max_abs_err_bits: vdupq_n_u32(0),
        }
    }
}

/// Quantizes 4 values and returns `q` as i32 lanes, adding their error terms to `sums`.
///
/// Step for step `scalar::quantize_element`: FCVTNS rounds half to even and saturates, so both
/// clamps can happen on the integer steps (clamping to integer bounds commutes with rounding).
/// Only the sums use fused multiply-adds.
#[target_feature(enable = "neon")]
#[inline]
fn quantize_vector(x: float32x4_t, params: &Broadcast, sums: &mut LaneSums) -> int32x4_t {
    let rounded = vcvtnq_s32_f32(vmulq_f32(x, params.inv_scale));
    let steps = vminq_s32(vmaxq_s32(rounded, params.lowest_step), params.highest_step);
    let deq = vmulq_f32(vcvtq_f32_s32(steps), params.scale);
    let err = vsubq_f32(deq, x);
    // vfmaq_f32(acc, a, b) = acc + a * b; vmlaq_s32 likewise, exact (|steps| <= 255 and at
    // most 128 squares per lane and block).
    sums.sq_err = vfmaq_f32(sums.sq_err, err, err);
    sums.sq_ref = vfmaq_f32(sums.sq_ref, x, x);
    sums.dot = vfmaq_f32(sums.dot, x, deq);
    sums.sq_steps = vmlaq_s32(sums.sq_steps, steps, steps);
    let abs_err_bits = vandq_u32(vreinterpretq_u32_f32(err), params.magnitude_mask);
    sums.max_abs_err_bits = vmaxq_u32(sums.max_abs_err_bits, abs_err_bits);
    vaddq_s32(steps, params.zero_point)
}

/// Widens 4 f32 lanes to f64 and adds them to `total`.
#[target_feature(enable = "neon")]
#[inline]
fn add_widened(total: &mut float64x2_t, lanes: float32x4_t) {
    let low = vcvt_f64_f32(vget_low_f32(lanes));
    let high = vcvt_high_f64_f32(lanes);
    *total = vaddq_f64(*total, vaddq_f64(low, high));
}

/// See `scalar::quantize_i8`.
///
/// # Safety
/// The CPU must support NEON, and `dst.len() == src.len()`.
#[target_feature(enable = "neon")]
pub(super) unsafe fn quantize_i8(src: &[f32], params: I8Params, dst: &mut [i8]) -> ErrorStats {
    debug_assert_eq!(src.len(), dst.len());
    let broadcast = Broadcast {
        scale: vdupq_n_f32(params.scale),
        inv_scale: vdupq_n_f32(params.inv_scale),
        lowest_step: vdupq_n_s32(-128 - params.zero_point),
        highest_step: vdupq_n_s32(127 - params.zero_point),
        zero_point: vdupq_n_s32(params.zero_point),
        magnitude_mask: vdupq_n_u32(MAGNITUDE_MASK),
    };
    let mut sq_err_total = vdupq_n_f64(0.0);
    let mut sq_ref_total = vdupq_n_f64(0.0);
    let mut dot_total = vdupq_n_f64(0.0);
    let mut max_abs_err_bits = vdupq_n_u32(0);
    // The scalar tail's sums and the exact integer sum of squared steps.
    let mut totals = Totals::default();

    for (src_block, dst_block) in src.chunks(STATS_BLOCK).zip(dst.chunks_mut(STATS_BLOCK)) {
        let mut sums = [LaneSums::zero(), LaneSums::zero()];
        let src_chunks = src_block.chunks_exact(STEP);
        let src_tail = src_chunks.remainder();
        let mut dst_chunks = dst_block.chunks_exact_mut(STEP);
        for (src_chunk, dst_chunk) in src_chunks.zip(&mut dst_chunks) {
            // SAFETY: `src_chunk` holds STEP = 2 * LANES floats; each read is one full vector
            // inside it.
            let (x0, x1) = unsafe {
                let base = src_chunk.as_ptr();
                (vld1q_f32(base), vld1q_f32(base.add(LANES)))
            };
            let q0 = quantize_vector(x0, &broadcast, &mut sums[0]);
            let q1 = quantize_vector(x1, &broadcast, &mut sums[1]);
            // Both narrowings are exact: the values are already in -128..=127.
            let bytes = vmovn_s16(vcombine_s16(vmovn_s32(q0), vmovn_s32(q1)));
            // SAFETY: `dst_chunk` holds exactly STEP = 8 bytes, the size of one store.
            unsafe { vst1_s8(dst_chunk.as_mut_ptr(), bytes) };
        }
        let dst_tail = dst_chunks.into_remainder();
        if !src_tail.is_empty() {
            totals.add_block(&scalar::quantize_run(src_tail, &params, dst_tail));
        }
        let [first, second] = sums;
        add_widened(&mut sq_err_total, vaddq_f32(first.sq_err, second.sq_err));
        add_widened(&mut sq_ref_total, vaddq_f32(first.sq_ref, second.sq_ref));
        add_widened(&mut dot_total, vaddq_f32(first.dot, second.dot));
        // Non-negative and below 2^27 for one block, so the i32 sum is exact.
        let block_sq_steps = vaddvq_s32(vaddq_s32(first.sq_steps, second.sq_steps));
        totals.sum_sq_steps += block_sq_steps as u64;
        let block_max = vmaxq_u32(first.max_abs_err_bits, second.max_abs_err_bits);
        max_abs_err_bits = vmaxq_u32(max_abs_err_bits, block_max);
    }

    totals.sum_sq_err += vaddvq_f64(sq_err_total);
    totals.sum_sq_ref += vaddvq_f64(sq_ref_total);
    totals.dot += vaddvq_f64(dot_total);
    let lanes_max = f32::from_bits(vmaxvq_u32(max_abs_err_bits));
    totals.max_abs_err = totals.max_abs_err.max(lanes_max);
    totals.finish(src.len(), params.scale)
}
