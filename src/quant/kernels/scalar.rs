//! Portable reference kernels. These define the results every SIMD variant must reproduce.
//!
//! They are written for clarity first; the element function `quantize_element` is also used by
//! the AVX2 and NEON kernels for their tails, so a tail can never disagree with the body.

use super::{BlockSums, ErrorStats, I8Params, Totals, STATS_BLOCK};

/// Clears the IEEE sign bit, leaving the magnitude's bit pattern. For non-negative floats the
/// bit patterns order exactly like the values, and NaNs sort above +Inf.
pub(crate) const MAGNITUDE_MASK: u32 = 0x7fff_ffff;

/// `max |x|` over bit patterns; see [`super::Kernels`] for the NaN/Inf policy.
pub fn absmax(src: &[f32]) -> f32 {
    let max_bits = src
        .iter()
        .map(|value| value.to_bits() & MAGNITUDE_MASK)
        .max()
        .unwrap_or(0);
    f32::from_bits(max_bits)
}

/// Maps an f32 bit pattern to an i32 whose integer order is IEEE 754 `totalOrder`:
/// -NaN < -Inf < ... < -0.0 < +0.0 < ... < +Inf < +NaN.
///
/// Negative floats order backwards by magnitude, so their magnitude bits are flipped. The map
/// keeps the sign bit and is its own inverse ([`from_total_order_key`]).
#[inline(always)]
pub(crate) fn total_order_key(bits: u32) -> i32 {
    let signed = bits as i32;
    signed ^ (((signed >> 31) as u32) >> 1) as i32
}

/// The float whose [`total_order_key`] is `key`.
#[inline(always)]
pub(crate) fn from_total_order_key(key: i32) -> f32 {
    f32::from_bits(total_order_key(key as u32) as u32)
}

/// `(min, max)` in IEEE total order; `(0.0, 0.0)` when empty; see [`super::Kernels`].
///
/// Comparing integer keys instead of floats makes the result exact, order-independent and
/// identical across ISAs, and lets NaN and ±Inf show: any NaN makes `min` or `max` a NaN
/// (a negative NaN sorts below -Inf, a positive one above +Inf).
pub fn min_max(src: &[f32]) -> (f32, f32) {
    let Some(&first) = src.first() else {
        return (0.0, 0.0);
    };
    let first_key = total_order_key(first.to_bits());
    let (low, high) = src
        .iter()
        .fold((first_key, first_key), |(low, high), value| {
            let key = total_order_key(value.to_bits());
            (low.min(key), high.max(key))
        });
    (from_total_order_key(low), from_total_order_key(high))
}

/// One quantized element.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Element {
    /// The stored value, `steps + zero_point`.
    pub q: i8,
    /// `q - zero_point`: whole quantization steps from zero, in `-255..=255`.
    pub steps: i32,
    /// The dequantized value, `steps * scale`.
    pub deq: f32,
}

/// Quantizes one element.
///
/// Definition: `q = clamp(round_ties_even(x * inv_scale) + zero_point, -128, 127)` and
/// `deq = (q - zero_point) as f32 * scale`.
///
/// Computed in the order the SIMD kernels vectorise, which gives the same results for every
/// non-NaN input: the scaled value `x * inv_scale` (a plain multiply: `x / scale` could round
/// differently) is first clamped to the steps that stay in range, `[-128 - zp, 127 - zp]`, then
/// rounded half to even. Clamping to integer bounds before or after rounding is the same, and
/// clamping first means ±Inf and huge values saturate without ever reaching a float-to-int
/// conversion out of range. No fused multiply-add is used, so `deq` and `err` round exactly as
/// in the SIMD kernels.
///
/// A NaN input gives an unspecified `q` (the SIMD kernels may disagree) and a NaN `deq`; callers
/// reject non-finite tensors first.
#[inline(always)]
pub(crate) fn quantize_element(x: f32, params: &I8Params) -> Element {
    let zero_point = params.zero_point as f32;
    let lowest_step = -128.0 - zero_point;
    let highest_step = 127.0 - zero_point;
    let steps = round_ties_even_small((x * params.inv_scale).clamp(lowest_step, highest_step));
    // `steps` is an integer in -255..=255 and `steps + zero_point` one in -128..=127, so both
    // casts are exact.
    Element {
        q: (steps + zero_point) as i8,
        steps: steps as i32,
        deq: steps * params.scale,
    }
}

/// `v.round_ties_even()` for |v| ≤ 2^22 (and NaN), without the libm call that
/// `f32::round_ties_even` becomes on baseline x86-64 (no SSE4.1 `roundss`).
///
/// Adding and subtracting 1.5·2^23 pushes the fraction bits out of the significand, so the
/// hardware's default round-to-nearest-even does the rounding; Rust never reassociates float
/// arithmetic, so the two operations stay. Callers clamp to ±255 first.
#[inline(always)]
pub(crate) fn round_ties_even_small(v: f32) -> f32 {
    const SHIFTER: f32 = 12_582_912.0; // 1.5 * 2^23
    (v + SHIFTER) - SHIFTER
}

/// Interleaved f32 accumulators per sum in [`quantize_run`].
///
/// The rounding error of an f32 sum grows with the number of terms added into one accumulator;
/// 1024 terms in a single one drift up to ~1e-5 (relative) from the SIMD kernels, whose lanes
/// each take 32 to 128 terms per block. Eight lanes keep the scalar sums as accurate as theirs.
const SCALAR_LANES: usize = 8;

/// Quantizes `src` into `dst` and returns the partial sums, one element at a time.
///
/// Used for whole blocks by the scalar kernel and for the remainders of the AVX2 and NEON
/// kernels, so `src` must lie within one [`STATS_BLOCK`].
#[inline(always)]
pub(crate) fn quantize_run(src: &[f32], params: &I8Params, dst: &mut [i8]) -> BlockSums {
    debug_assert!(src.len() <= STATS_BLOCK && src.len() == dst.len());
    let mut lanes = [BlockSums::default(); SCALAR_LANES];
    for (idx, (&x, out)) in src.iter().zip(dst.iter_mut()).enumerate() {
        let element = quantize_element(x, params);
        *out = element.q;
        let err = element.deq - x;
        let lane = &mut lanes[idx % SCALAR_LANES];
        lane.sum_sq_err += err * err;
        lane.sum_sq_ref += x * x;
        lane.dot += x * element.deq;
        // |steps| <= 255, so the square and the block's sum fit a u32 (see `BlockSums`).
        lane.sum_sq_steps += element.steps.unsigned_abs().pow(2);
        lane.max_abs_err = lane.max_abs_err.max(err.abs());
    }
    let mut total = BlockSums::default();
    for lane in &lanes {
        total.sum_sq_err += lane.sum_sq_err;
        total.sum_sq_ref += lane.sum_sq_ref;
        total.dot += lane.dot;
        total.sum_sq_steps += lane.sum_sq_steps;
        total.max_abs_err = total.max_abs_err.max(lane.max_abs_err);
    }
    total
}

/// Quantizes `src` into `dst` (same length, panics otherwise) and returns the error statistics.
///
/// Per element: `q = clamp(round_ties_even(x * inv_scale) + zero_point, -128, 127)` and
/// `deq = (q - zero_point) as f32 * scale` (see `quantize_element` for how it is computed
/// without float-to-int overflow). [`STATS_BLOCK`] says how the sums are accumulated.
pub fn quantize_i8(src: &[f32], params: I8Params, dst: &mut [i8]) -> ErrorStats {
    assert_eq!(src.len(), dst.len(), "quantize_i8: dst.len() != src.len()");
    params.debug_assert_valid();
    let mut totals = Totals::default();
    for (src_block, dst_block) in src.chunks(STATS_BLOCK).zip(dst.chunks_mut(STATS_BLOCK)) {
        totals.add_block(&quantize_run(src_block, &params, dst_block));
    }
    totals.finish(src.len(), params.scale)
}

/// [`quantize_i8`]; the streaming hints are ignored (the scalar loop is far from memory-bound).
pub fn quantize_i8_streaming(
    src: &[f32],
    params: I8Params,
    dst: &mut [i8],
    _prefetch: &[f32],
) -> ErrorStats {
    quantize_i8(src, params, dst)
}

#[cfg(test)]
mod rounding_tests {
    use super::round_ties_even_small;

    #[test]
    fn the_shifter_rounds_like_round_ties_even() {
        // Every quarter step in the clamped range (hits every .5 tie and .25/.75 point), plus
        // values a few ulps around each tie.
        for quarter in -1100..=1100 {
            let v = quarter as f32 * 0.25;
            assert_eq!(round_ties_even_small(v), v.round_ties_even(), "{v}");
            for ulps in [-2i32, -1, 1, 2] {
                let w = f32::from_bits((v.to_bits() as i32 + ulps) as u32);
                if w.is_nan() {
                    continue; // the bits next to ±0.0 wrap around
                }
                assert_eq!(round_ties_even_small(w), w.round_ties_even(), "{w}");
            }
        }
        for v in [0.0f32, -0.0, 1e-30, -1e-30, 254.5, -254.5, 255.0, -255.0] {
            assert_eq!(round_ties_even_small(v), v.round_ties_even(), "{v}");
        }
        assert!(round_ties_even_small(f32::NAN).is_nan());
    }
}
