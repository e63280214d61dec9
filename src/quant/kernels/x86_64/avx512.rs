//! AVX-512 (F + BW + DQ) kernels: 16 f32 lanes, 64 elements per main-loop iteration, masked
//! heads and tails, streaming stores.
//!
//! Every result is defined by `kernels::scalar`; the comments say which scalar step each
//! vector instruction reproduces. Masked loads read zeros (or a fill value) into disabled lanes,
//! and masked loads and stores never touch the memory of disabled lanes, so short heads and
//! tails need no scalar code at all.

use std::arch::x86_64::*;

use super::{prefetch_block, prefetch_lines};
use crate::quant::kernels::scalar::{from_total_order_key, MAGNITUDE_MASK};
use crate::quant::kernels::{ErrorStats, I8Params, Totals, STATS_BLOCK};

/// f32 lanes per vector.
const LANES: usize = 16;
/// Elements per main-loop iteration: four vectors, enough independent work to hide latencies
/// and exactly one 64-byte store of quantized bytes.
const STEP: usize = 4 * LANES;

/// Alignment, in bytes, that `_mm512_stream_si512` requires; one main-loop store.
const STREAM_ALIGN: usize = 64;

/// `range_ps` control: the operand of larger magnitude, with its sign bit cleared, i.e.
/// `max(|a|, |b|)` in one instruction.
const ABSOLUTE_MAX: i32 = 0b1011;

/// Embedded rounding for the float-to-int conversion: to nearest, ties to even (what
/// `f32::round_ties_even` does), independent of MXCSR, without raising exceptions.
const ROUND_NEAREST_EVEN: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

/// A mask enabling the first `len` lanes (`len <= 16`).
fn first_lanes(len: usize) -> __mmask16 {
    debug_assert!(len <= LANES);
    ((1u32 << len) - 1) as __mmask16
}

/// See `scalar::absmax`.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn absmax(src: &[f32]) -> f32 {
    let magnitude_mask = _mm512_set1_epi32(MAGNITUDE_MASK as i32);
    let mut maxima = [_mm512_setzero_si512(); 4];
    let chunks = src.chunks_exact(STEP);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (vector_idx, maximum) in maxima.iter_mut().enumerate() {
            // SAFETY: `chunk` holds STEP = 4 * LANES floats, so this full-vector read at offset
            // vector_idx * LANES is in bounds; loadu has no alignment requirement.
            let bits = unsafe { _mm512_loadu_si512(chunk.as_ptr().add(vector_idx * LANES).cast()) };
            // Integer max over magnitude bit patterns, exactly as the scalar version.
            *maximum = _mm512_max_epu32(*maximum, _mm512_and_si512(bits, magnitude_mask));
        }
    }
    for part in tail.chunks(LANES) {
        // SAFETY: only the first part.len() lanes are read and they are in bounds; disabled
        // lanes are zero-filled, which cannot raise the maximum, and never fault.
        let bits =
            unsafe { _mm512_maskz_loadu_epi32(first_lanes(part.len()), part.as_ptr().cast()) };
        maxima[0] = _mm512_max_epu32(maxima[0], _mm512_and_si512(bits, magnitude_mask));
    }
    let combined = _mm512_max_epu32(
        _mm512_max_epu32(maxima[0], maxima[1]),
        _mm512_max_epu32(maxima[2], maxima[3]),
    );
    f32::from_bits(_mm512_reduce_max_epu32(combined))
}

/// `scalar::total_order_key` on 16 lanes of float bits.
#[target_feature(enable = "avx512f")]
#[inline]
fn total_order_keys(bits: __m512i) -> __m512i {
    _mm512_xor_si512(bits, _mm512_srli_epi32::<1>(_mm512_srai_epi32::<31>(bits)))
}

/// See `scalar::min_max`.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn min_max(src: &[f32]) -> (f32, f32) {
    let Some(&first) = src.first() else {
        return (0.0, 0.0);
    };
    // Starting from (and filling masked lanes with) an element of the slice keeps the answer
    // inside the slice without special cases.
    let fill_bits = _mm512_set1_epi32(first.to_bits() as i32);
    let fill = total_order_keys(fill_bits);
    let mut lows = [fill; 4];
    let mut highs = [fill; 4];
    let chunks = src.chunks_exact(STEP);
    let tail = chunks.remainder();
    for chunk in chunks {
        for vector_idx in 0..4 {
            // SAFETY: `chunk` holds 4 * LANES floats, so this read is in bounds.
            let bits = unsafe { _mm512_loadu_si512(chunk.as_ptr().add(vector_idx * LANES).cast()) };
            let keys = total_order_keys(bits);
            lows[vector_idx] = _mm512_min_epi32(lows[vector_idx], keys);
            highs[vector_idx] = _mm512_max_epi32(highs[vector_idx], keys);
        }
    }
    for part in tail.chunks(LANES) {
        let enabled = first_lanes(part.len());
        // SAFETY: only the first part.len() lanes are read and they are in bounds; disabled
        // lanes take `first` and never fault.
        let bits = unsafe { _mm512_mask_loadu_epi32(fill_bits, enabled, part.as_ptr().cast()) };
        let keys = total_order_keys(bits);
        lows[0] = _mm512_min_epi32(lows[0], keys);
        highs[0] = _mm512_max_epi32(highs[0], keys);
    }
    let low = _mm512_min_epi32(
        _mm512_min_epi32(lows[0], lows[1]),
        _mm512_min_epi32(lows[2], lows[3]),
    );
    let high = _mm512_max_epi32(
        _mm512_max_epi32(highs[0], highs[1]),
        _mm512_max_epi32(highs[2], highs[3]),
    );
    (
        from_total_order_key(_mm512_reduce_min_epi32(low)),
        from_total_order_key(_mm512_reduce_max_epi32(high)),
    )
}

/// [`I8Params`] broadcast to every lane, with the bounds of the in-range steps.
struct Broadcast {
    scale: __m512,
    inv_scale: __m512,
    /// `127 - zero_point`, the highest step that still fits an i8.
    highest_step: __m512,
    /// `-128 - zero_point`, the lowest one.
    lowest_step: __m512i,
    zero_point: __m512i,
    zero_point_words: __m512i,
}

/// Per-lane error sums of one block (see `STATS_BLOCK`).
#[derive(Clone, Copy)]
struct LaneSums {
    sq_err: __m512,
    sq_ref: __m512,
    dot: __m512,
    max_abs_err: __m512,
}

impl LaneSums {
    #[target_feature(enable = "avx512f")]
    fn zero() -> Self {
        let zero = _mm512_setzero_ps();
        LaneSums {
            sq_err: zero,
            sq_ref: zero,
            dot: zero,
            max_abs_err: zero,
        }
    }
}

/// Quantizes 16 values to steps (`q - zero_point`, as i32 lanes) and adds their error terms to
/// `sums`.
///
/// Step for step `scalar::quantize_element`: multiply by `inv_scale`, clamp (the upper bound in
/// f32, which also tames +Inf and huge values; the lower bound after the conversion, where -Inf
/// and huge negative values have become `i32::MIN`), round half to even. Clamping to integer
/// bounds commutes with rounding, so this equals the scalar clamp-then-round. `deq` and `err`
/// use no fused multiply-add, so they are bit-identical to the scalar ones; only the sums use
/// FMA. Most of the work avoids the FMA/multiply ports, which bound this loop.
#[target_feature(enable = "avx512f,avx512dq")]
#[inline]
fn quantize_steps(x: __m512, params: &Broadcast, sums: &mut LaneSums) -> __m512i {
    let scaled = _mm512_min_ps(_mm512_mul_ps(x, params.inv_scale), params.highest_step);
    let rounded = _mm512_cvt_roundps_epi32::<ROUND_NEAREST_EVEN>(scaled);
    let steps = _mm512_max_epi32(rounded, params.lowest_step);
    let deq = _mm512_mul_ps(_mm512_cvtepi32_ps(steps), params.scale);
    let err = _mm512_sub_ps(deq, x);
    sums.sq_err = _mm512_fmadd_ps(err, err, sums.sq_err);
    sums.sq_ref = _mm512_fmadd_ps(x, x, sums.sq_ref);
    sums.dot = _mm512_fmadd_ps(x, deq, sums.dot);
    // Exact for non-NaN input, like the scalar `max(|err|)`.
    sums.max_abs_err = _mm512_range_ps::<ABSOLUTE_MAX>(sums.max_abs_err, err);
    steps
}

/// Narrows two vectors of steps to 16-bit lanes (exact: |steps| <= 255) and adds their squares
/// to `sq_steps`. The lane order is the packs' interleaved one; sums do not care.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn pack_steps(steps_a: __m512i, steps_b: __m512i, sq_steps: &mut __m512i) -> __m512i {
    let words = _mm512_packs_epi32(steps_a, steps_b);
    *sq_steps = _mm512_add_epi32(*sq_steps, _mm512_madd_epi16(words, words));
    words
}

/// Turns four vectors' worth of 16-bit steps into 64 bytes of `q` in element order.
///
/// Adding the zero point gives `q` in -128..=127, so the byte pack never saturates. The packs
/// work within 128-bit lanes, leaving 32-bit group `4 * lane + vector` holding elements
/// `4 * lane .. 4 * lane + 4` of `vector`; the permutation puts group `4 * vector + lane` there
/// instead.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn pack_bytes(steps_01: __m512i, steps_23: __m512i, zero_point_words: __m512i) -> __m512i {
    let q_01 = _mm512_add_epi16(steps_01, zero_point_words);
    let q_23 = _mm512_add_epi16(steps_23, zero_point_words);
    let bytes = _mm512_packs_epi16(q_01, q_23);
    let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    _mm512_permutexvar_epi32(order, bytes)
}

/// Widens 16 f32 lanes to f64 and adds them to two f64 accumulators (low and high half).
#[target_feature(enable = "avx512f")]
#[inline]
fn add_widened(total: &mut [__m512d; 2], lanes: __m512) {
    let low = _mm512_castps512_ps256(lanes);
    let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(lanes)));
    total[0] = _mm512_add_pd(total[0], _mm512_cvtps_pd(low));
    total[1] = _mm512_add_pd(total[1], _mm512_cvtps_pd(high));
}

/// Sum of both f64 accumulators' lanes.
#[target_feature(enable = "avx512f")]
#[inline]
fn reduce_widened(total: [__m512d; 2]) -> f64 {
    _mm512_reduce_add_pd(_mm512_add_pd(total[0], total[1]))
}

/// Quantizes a run shorter than STEP (a block's unaligned head or its tail) 16 lanes at a time
/// with masked loads and stores.
#[target_feature(enable = "avx512f,avx512bw,avx512dq")]
#[inline]
fn quantize_short(
    src: &[f32],
    dst: &mut [i8],
    params: &Broadcast,
    sums: &mut LaneSums,
    sq_steps: &mut __m512i,
) {
    for (src_part, dst_part) in src.chunks(LANES).zip(dst.chunks_mut(LANES)) {
        let enabled = first_lanes(src_part.len());
        // SAFETY: only the first src_part.len() lanes are read and they are in bounds.
        // Disabled lanes read as 0.0, which is 0 steps and dequantizes to exactly 0.0, so they
        // add nothing to any sum or maximum.
        let x = unsafe { _mm512_maskz_loadu_ps(enabled, src_part.as_ptr()) };
        let steps = quantize_steps(x, params, sums);
        *sq_steps = _mm512_add_epi32(*sq_steps, _mm512_mullo_epi32(steps, steps));
        let q = _mm512_add_epi32(steps, params.zero_point);
        // SAFETY: the store writes only the first dst_part.len() (== src_part.len()) bytes, all
        // inside `dst_part`; `q` is in -128..=127 so truncation to i8 is exact.
        unsafe { _mm512_mask_cvtepi32_storeu_epi8(dst_part.as_mut_ptr(), enabled, q) };
    }
}

/// See `scalar::quantize_i8`. With `STREAMING` (see `Kernels::quantize_i8_streaming`), the
/// lines of `prefetch` are hinted into cache, one per line of `src`, and the quantized bytes
/// are written with non-temporal stores: a normal store first reads every destination line
/// from memory, a sixth of this loop's memory traffic when the output is too large to stay
/// cached (and streaming stores are slower when it would). They need 64-byte alignment, so
/// each block starts with a short head up to the next aligned byte.
///
/// # Safety
/// The CPU must support AVX-512F, AVX-512BW and AVX-512DQ, and `dst.len() == src.len()`.
#[target_feature(enable = "avx512f,avx512bw,avx512dq")]
pub(super) unsafe fn quantize_i8<const STREAMING: bool>(
    src: &[f32],
    params: I8Params,
    dst: &mut [i8],
    prefetch: &[f32],
) -> ErrorStats {
    debug_assert_eq!(src.len(), dst.len());
    let broadcast = Broadcast {
        scale: _mm512_set1_ps(params.scale),
        inv_scale: _mm512_set1_ps(params.inv_scale),
        highest_step: _mm512_set1_ps((127 - params.zero_point) as f32),
        lowest_step: _mm512_set1_epi32(-128 - params.zero_point),
        zero_point: _mm512_set1_epi32(params.zero_point),
        zero_point_words: _mm512_set1_epi16(params.zero_point as i16),
    };
    let zero_pd = _mm512_setzero_pd();
    // f64 totals of the three float sums, each as two 8-lane halves; reduced once at the end.
    let mut sq_err_total = [zero_pd; 2];
    let mut sq_ref_total = [zero_pd; 2];
    let mut dot_total = [zero_pd; 2];
    let mut sq_steps_total = 0u64;
    let mut max_abs_err = _mm512_setzero_ps();

    let blocks = src.chunks(STATS_BLOCK).zip(dst.chunks_mut(STATS_BLOCK));
    for (block_idx, (src_block, dst_block)) in blocks.enumerate() {
        // Two sets of lane sums so consecutive vectors do not wait on each other's FMAs. The
        // squared steps of one block stay far below i32::MAX per lane (32 pairs of <= 255²).
        let mut sums = [LaneSums::zero(), LaneSums::zero()];
        let mut sq_steps = _mm512_setzero_si512();
        // Streaming stores need aligned addresses: a short head first, up to the next one.
        let head_len = if STREAMING {
            dst_block
                .as_ptr()
                .align_offset(STREAM_ALIGN)
                .min(dst_block.len())
        } else {
            0
        };
        let (src_head, src_body) = src_block.split_at(head_len);
        let (dst_head, dst_body) = dst_block.split_at_mut(head_len);
        quantize_short(src_head, dst_head, &broadcast, &mut sums[0], &mut sq_steps);

        let src_chunks = src_body.chunks_exact(STEP);
        let src_tail = src_chunks.remainder();
        let mut dst_chunks = dst_body.chunks_exact_mut(STEP);
        let mut prefetch_chunks = prefetch_block(prefetch, block_idx).chunks(STEP);
        for (src_chunk, dst_chunk) in src_chunks.zip(&mut dst_chunks) {
            if let Some(ahead) = prefetch_chunks.next() {
                prefetch_lines(ahead);
            }
            let base = src_chunk.as_ptr();
            // SAFETY: `src_chunk` holds STEP = 4 * LANES floats; each read is one full vector
            // inside it.
            let x = unsafe {
                [
                    _mm512_loadu_ps(base),
                    _mm512_loadu_ps(base.add(LANES)),
                    _mm512_loadu_ps(base.add(2 * LANES)),
                    _mm512_loadu_ps(base.add(3 * LANES)),
                ]
            };
            let steps_0 = quantize_steps(x[0], &broadcast, &mut sums[0]);
            let steps_1 = quantize_steps(x[1], &broadcast, &mut sums[1]);
            let steps_2 = quantize_steps(x[2], &broadcast, &mut sums[0]);
            let steps_3 = quantize_steps(x[3], &broadcast, &mut sums[1]);
            let steps_01 = pack_steps(steps_0, steps_1, &mut sq_steps);
            let steps_23 = pack_steps(steps_2, steps_3, &mut sq_steps);
            let bytes = pack_bytes(steps_01, steps_23, broadcast.zero_point_words);
            let out = dst_chunk.as_mut_ptr().cast();
            if STREAMING {
                // SAFETY: `dst_chunk` holds exactly STEP = 64 bytes, the size of one store, and
                // starts 64-byte aligned: the head above ended on an aligned byte.
                unsafe { _mm512_stream_si512(out, bytes) };
            } else {
                // SAFETY: `dst_chunk` holds exactly STEP = 64 bytes, the size of one store.
                unsafe { _mm512_storeu_si512(out, bytes) };
            }
        }
        let dst_tail = dst_chunks.into_remainder();
        quantize_short(src_tail, dst_tail, &broadcast, &mut sums[0], &mut sq_steps);

        // Fold the block's f32 lanes into the f64 totals (see `STATS_BLOCK`).
        let [first, second] = sums;
        add_widened(
            &mut sq_err_total,
            _mm512_add_ps(first.sq_err, second.sq_err),
        );
        add_widened(
            &mut sq_ref_total,
            _mm512_add_ps(first.sq_ref, second.sq_ref),
        );
        add_widened(&mut dot_total, _mm512_add_ps(first.dot, second.dot));
        // Non-negative and below 2^27 for one block, so the i32 sum is exact.
        sq_steps_total += _mm512_reduce_add_epi32(sq_steps) as u64;
        let block_max = _mm512_max_ps(first.max_abs_err, second.max_abs_err);
        max_abs_err = _mm512_max_ps(max_abs_err, block_max);
    }
    if STREAMING {
        // Streaming stores are weakly ordered; fence them before the caller hands `dst` on.
        _mm_sfence();
    }

    let totals = Totals {
        sum_sq_err: reduce_widened(sq_err_total),
        sum_sq_ref: reduce_widened(sq_ref_total),
        dot: reduce_widened(dot_total),
        sum_sq_steps: sq_steps_total,
        max_abs_err: _mm512_reduce_max_ps(max_abs_err),
    };
    totals.finish(src.len(), params.scale)
}
