//! AVX2 + FMA kernels: 8 f32 lanes, 32 elements per main-loop iteration, streaming stores.
//!
//! Every result is defined by `kernels::scalar`. AVX2 has no masked byte stores, so the last
//! few (fewer than 8) elements of a block's head or tail go through the scalar element function
//! itself, which cannot disagree with the scalar kernel.

use std::arch::x86_64::*;

use super::{prefetch_block, prefetch_lines};
use crate::quant::kernels::scalar::{self, MAGNITUDE_MASK};
use crate::quant::kernels::{ErrorStats, I8Params, Totals, STATS_BLOCK};

/// f32 lanes per vector.
const LANES: usize = 8;
/// Elements per main-loop iteration: four vectors, narrowed together into one 32-byte store.
const STEP: usize = 4 * LANES;

/// Bytes per cache line: streaming stores are issued for whole lines only.
const CACHE_LINE: usize = 64;

/// The lanes of a vector as an array, for horizontal reductions outside the hot loops.
#[target_feature(enable = "avx2")]
fn u32_lanes(vector: __m256i) -> [u32; 8] {
    // SAFETY: `__m256i` and `[u32; 8]` have the same size and every bit pattern is valid for
    // both.
    unsafe { std::mem::transmute::<__m256i, [u32; 8]>(vector) }
}

#[target_feature(enable = "avx2")]
fn f64_lanes(vector: __m256d) -> [f64; 4] {
    // SAFETY: `__m256d` and `[f64; 4]` have the same size and every bit pattern is valid.
    unsafe { std::mem::transmute::<__m256d, [f64; 4]>(vector) }
}

/// See `scalar::absmax`.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn absmax(src: &[f32]) -> f32 {
    let magnitude_mask = _mm256_set1_epi32(MAGNITUDE_MASK as i32);
    let mut maxima = [_mm256_setzero_si256(); 4];
    let chunks = src.chunks_exact(STEP);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (vector_idx, maximum) in maxima.iter_mut().enumerate() {
            // SAFETY: `chunk` holds STEP = 4 * LANES floats, so this full-vector read at offset
            // vector_idx * LANES is in bounds; loadu has no alignment requirement.
            let bits = unsafe { _mm256_loadu_si256(chunk.as_ptr().add(vector_idx * LANES).cast()) };
            // Integer max over magnitude bit patterns, exactly as the scalar version.
            *maximum = _mm256_max_epu32(*maximum, _mm256_and_si256(bits, magnitude_mask));
        }
    }
    let combined = _mm256_max_epu32(
        _mm256_max_epu32(maxima[0], maxima[1]),
        _mm256_max_epu32(maxima[2], maxima[3]),
    );
    let vector_max = u32_lanes(combined).into_iter().max().unwrap_or(0);
    let tail_max = scalar::absmax(tail).to_bits();
    f32::from_bits(vector_max.max(tail_max))
}

/// `scalar::total_order_key` on 8 lanes of float bits.
#[target_feature(enable = "avx2")]
#[inline]
fn total_order_keys(bits: __m256i) -> __m256i {
    _mm256_xor_si256(bits, _mm256_srli_epi32::<1>(_mm256_srai_epi32::<31>(bits)))
}

#[target_feature(enable = "avx2")]
fn i32_lanes(vector: __m256i) -> [i32; 8] {
    // SAFETY: `__m256i` and `[i32; 8]` have the same size and every bit pattern is valid.
    unsafe { std::mem::transmute::<__m256i, [i32; 8]>(vector) }
}

/// See `scalar::min_max`.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn min_max(src: &[f32]) -> (f32, f32) {
    let Some(&first) = src.first() else {
        return (0.0, 0.0);
    };
    let first_key = scalar::total_order_key(first.to_bits());
    let fill = _mm256_set1_epi32(first_key);
    let mut lows = [fill; 4];
    let mut highs = [fill; 4];
    let chunks = src.chunks_exact(STEP);
    let tail = chunks.remainder();
    for chunk in chunks {
        for vector_idx in 0..4 {
            // SAFETY: `chunk` holds 4 * LANES floats, so this read is in bounds.
            let bits = unsafe { _mm256_loadu_si256(chunk.as_ptr().add(vector_idx * LANES).cast()) };
            let keys = total_order_keys(bits);
            lows[vector_idx] = _mm256_min_epi32(lows[vector_idx], keys);
            highs[vector_idx] = _mm256_max_epi32(highs[vector_idx], keys);
        }
    }
    let low = _mm256_min_epi32(
        _mm256_min_epi32(lows[0], lows[1]),
        _mm256_min_epi32(lows[2], lows[3]),
    );
    let high = _mm256_max_epi32(
        _mm256_max_epi32(highs[0], highs[1]),
        _mm256_max_epi32(highs[2], highs[3]),
    );
    // The tail goes through the same keys one element at a time.
    let tail_keys = tail
        .iter()
        .map(|value| scalar::total_order_key(value.to_bits()));
    let low_key = i32_lanes(low).into_iter().chain(tail_keys.clone()).min();
    let high_key = i32_lanes(high).into_iter().chain(tail_keys).max();
    (
        scalar::from_total_order_key(low_key.unwrap_or(first_key)),
        scalar::from_total_order_key(high_key.unwrap_or(first_key)),
    )
}

/// [`I8Params`] broadcast to every lane, with the bounds of the in-range steps.
struct Broadcast {
    scale: __m256,
    inv_scale: __m256,
    /// `127 - zero_point`, the highest step that still fits an i8.
    highest_step: __m256,
    /// `-128 - zero_point`, the lowest one.
    lowest_step: __m256i,
    zero_point: __m256i,
    zero_point_words: __m256i,
    magnitude_mask: __m256i,
}

/// Per-lane error sums of one block (see `STATS_BLOCK`); the maximum is kept as magnitude bit
/// patterns, which order like the values.
#[derive(Clone, Copy)]
struct LaneSums {
    sq_err: __m256,
    sq_ref: __m256,
    dot: __m256,
    max_abs_err_bits: __m256i,
}

impl LaneSums {
    #[target_feature(enable = "avx2")]
    fn zero() -> Self {
        let zero = _mm256_setzero_ps();
        LaneSums {
            sq_err: zero,
            sq_ref: zero,
            dot: zero,
            max_abs_err_bits: _mm256_setzero_si256(),
        }
    }
}

/// Quantizes 8 values to steps (`q - zero_point`, as i32 lanes) and adds their error terms to
/// `sums`.
///
/// Step for step `scalar::quantize_element`: multiply by `inv_scale`, clamp (the upper bound in
/// f32, which also tames +Inf and huge values; the lower bound after the conversion, where -Inf
/// and huge negative values have become `i32::MIN`), round half to even. `cvtps_epi32` rounds
/// by MXCSR, which Rust code always runs with its default, round-to-nearest-even. Clamping to
/// integer bounds commutes with rounding, so this equals the scalar clamp-then-round. `deq` and
/// `err` use no fused multiply-add, so they are bit-identical to the scalar ones; only the sums
/// use FMA.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn quantize_steps(x: __m256, params: &Broadcast, sums: &mut LaneSums) -> __m256i {
    let scaled = _mm256_min_ps(_mm256_mul_ps(x, params.inv_scale), params.highest_step);
    let steps = _mm256_max_epi32(_mm256_cvtps_epi32(scaled), params.lowest_step);
    let deq = _mm256_mul_ps(_mm256_cvtepi32_ps(steps), params.scale);
    let err = _mm256_sub_ps(deq, x);
    sums.sq_err = _mm256_fmadd_ps(err, err, sums.sq_err);
    sums.sq_ref = _mm256_fmadd_ps(x, x, sums.sq_ref);
    sums.dot = _mm256_fmadd_ps(x, deq, sums.dot);
    let abs_err_bits = _mm256_and_si256(_mm256_castps_si256(err), params.magnitude_mask);
    sums.max_abs_err_bits = _mm256_max_epu32(sums.max_abs_err_bits, abs_err_bits);
    steps
}

/// Narrows two vectors of steps to 16-bit lanes (exact: |steps| <= 255) and adds their squares
/// to `sq_steps`. The lane order is the packs' interleaved one; sums do not care.
#[target_feature(enable = "avx2")]
#[inline]
fn pack_steps(steps_a: __m256i, steps_b: __m256i, sq_steps: &mut __m256i) -> __m256i {
    let words = _mm256_packs_epi32(steps_a, steps_b);
    *sq_steps = _mm256_add_epi32(*sq_steps, _mm256_madd_epi16(words, words));
    words
}

/// Turns four vectors' worth of 16-bit steps into 32 bytes of `q` in element order.
///
/// Adding the zero point gives `q` in -128..=127, so the byte pack never saturates. The packs
/// work within 128-bit lanes, leaving 32-bit group `4 * lane + vector` holding elements
/// `4 * lane .. 4 * lane + 4` of `vector`; the permutation puts group `2 * vector + lane` there
/// instead.
#[target_feature(enable = "avx2")]
#[inline]
fn pack_bytes(steps_01: __m256i, steps_23: __m256i, zero_point_words: __m256i) -> __m256i {
    let q_01 = _mm256_add_epi16(steps_01, zero_point_words);
    let q_23 = _mm256_add_epi16(steps_23, zero_point_words);
    let bytes = _mm256_packs_epi16(q_01, q_23);
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    _mm256_permutevar8x32_epi32(bytes, order)
}

/// Widens 8 f32 lanes to f64 and adds them to two f64 accumulators (low and high half).
#[target_feature(enable = "avx2")]
#[inline]
fn add_widened(total: &mut [__m256d; 2], lanes: __m256) {
    let low = _mm256_castps256_ps128(lanes);
    let high = _mm256_extractf128_ps::<1>(lanes);
    total[0] = _mm256_add_pd(total[0], _mm256_cvtps_pd(low));
    total[1] = _mm256_add_pd(total[1], _mm256_cvtps_pd(high));
}

/// Sum of both f64 accumulators' lanes.
#[target_feature(enable = "avx2")]
#[inline]
fn reduce_widened(total: [__m256d; 2]) -> f64 {
    f64_lanes(_mm256_add_pd(total[0], total[1])).iter().sum()
}

/// Quantizes a run shorter than STEP (the end of a span): 8 lanes at a time with 8-byte stores,
/// the last few elements with the scalar element function.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn quantize_short(
    src: &[f32],
    dst: &mut [i8],
    params: &I8Params,
    broadcast: &Broadcast,
    sums: &mut LaneSums,
    sq_steps: &mut __m256i,
    totals: &mut Totals,
) {
    let src_vectors = src.chunks_exact(LANES);
    let src_rest = src_vectors.remainder();
    let mut dst_vectors = dst.chunks_exact_mut(LANES);
    // After the two packs, bytes 0..4 of each 128-bit lane hold elements 4 * lane .. + 4.
    let low_groups = _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0);
    for (src_part, dst_part) in src_vectors.zip(&mut dst_vectors) {
        // SAFETY: `src_part` holds exactly LANES floats, one vector.
        let x = unsafe { _mm256_loadu_ps(src_part.as_ptr()) };
        let steps = quantize_steps(x, broadcast, sums);
        *sq_steps = _mm256_add_epi32(*sq_steps, _mm256_mullo_epi32(steps, steps));
        let q = _mm256_add_epi32(steps, broadcast.zero_point);
        let words = _mm256_packs_epi32(q, q);
        let bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(words, words), low_groups);
        // SAFETY: `dst_part` holds exactly LANES = 8 bytes, the size of this store.
        unsafe { _mm_storel_epi64(dst_part.as_mut_ptr().cast(), _mm256_castsi256_si128(bytes)) };
    }
    let dst_rest = dst_vectors.into_remainder();
    if !src_rest.is_empty() {
        totals.add_block(&scalar::quantize_run(src_rest, params, dst_rest));
    }
}

/// Running state of one block: the lane sums, the squared steps and the scalar remainders.
struct BlockState {
    sums: LaneSums,
    sq_steps: __m256i,
}

/// Quantizes a span of one block: STEP-element chunks with plain or (`STREAMING`) non-temporal
/// 32-byte stores, then the remainder with `quantize_short`. `prefetch` lines are hinted one
/// per line of `src`.
///
/// # Safety
/// `dst.len() == src.len()`, and with `STREAMING` `dst` must start 32-byte aligned.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn quantize_span<const STREAMING: bool>(
    src: &[f32],
    dst: &mut [i8],
    prefetch: &[f32],
    params: &I8Params,
    broadcast: &Broadcast,
    state: &mut BlockState,
    totals: &mut Totals,
) {
    let src_chunks = src.chunks_exact(STEP);
    let src_rest = src_chunks.remainder();
    let mut dst_chunks = dst.chunks_exact_mut(STEP);
    let mut prefetch_chunks = prefetch.chunks(STEP);
    for (src_chunk, dst_chunk) in src_chunks.zip(&mut dst_chunks) {
        if let Some(ahead) = prefetch_chunks.next() {
            prefetch_lines(ahead);
        }
        let base = src_chunk.as_ptr();
        // SAFETY: `src_chunk` holds STEP = 4 * LANES floats; each read is one full vector
        // inside it.
        let x = unsafe {
            [
                _mm256_loadu_ps(base),
                _mm256_loadu_ps(base.add(LANES)),
                _mm256_loadu_ps(base.add(2 * LANES)),
                _mm256_loadu_ps(base.add(3 * LANES)),
            ]
        };
        let steps_0 = quantize_steps(x[0], broadcast, &mut state.sums);
        let steps_1 = quantize_steps(x[1], broadcast, &mut state.sums);
        let steps_01 = pack_steps(steps_0, steps_1, &mut state.sq_steps);
        let steps_2 = quantize_steps(x[2], broadcast, &mut state.sums);
        let steps_3 = quantize_steps(x[3], broadcast, &mut state.sums);
        let steps_23 = pack_steps(steps_2, steps_3, &mut state.sq_steps);
        let bytes = pack_bytes(steps_01, steps_23, broadcast.zero_point_words);
        let out = dst_chunk.as_mut_ptr().cast();
        if STREAMING {
            // SAFETY: `dst_chunk` holds exactly STEP = 32 bytes, the size of one store, and is
            // 32-byte aligned: `dst` starts aligned (caller) and every chunk is 32 bytes.
            unsafe { _mm256_stream_si256(out, bytes) };
        } else {
            // SAFETY: `dst_chunk` holds exactly STEP = 32 bytes, the size of one store.
            unsafe { _mm256_storeu_si256(out, bytes) };
        }
    }
    let dst_rest = dst_chunks.into_remainder();
    quantize_short(
        src_rest,
        dst_rest,
        params,
        broadcast,
        &mut state.sums,
        &mut state.sq_steps,
        totals,
    );
}

/// See `scalar::quantize_i8`. With `STREAMING` (see `Kernels::quantize_i8_streaming`), the
/// lines of `prefetch` are hinted into cache, one per line of `src`, and the quantized bytes
/// are written with non-temporal stores: a normal store first reads every destination line
/// from memory, a sixth of this loop's memory traffic when the output is too large to stay
/// cached (and streaming stores are slower when it would).
///
/// Streaming stores must cover whole cache lines: a line written partly by normal stores is
/// pulled into cache, and a streaming store into it then evicts it again. So each block streams
/// only its 64-byte-aligned middle; its head and tail use normal stores.
///
/// # Safety
/// The CPU must support AVX2 and FMA, and `dst.len() == src.len()`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn quantize_i8<const STREAMING: bool>(
    src: &[f32],
    params: I8Params,
    dst: &mut [i8],
    prefetch: &[f32],
) -> ErrorStats {
    debug_assert_eq!(src.len(), dst.len());
    let broadcast = Broadcast {
        scale: _mm256_set1_ps(params.scale),
        inv_scale: _mm256_set1_ps(params.inv_scale),
        highest_step: _mm256_set1_ps((127 - params.zero_point) as f32),
        lowest_step: _mm256_set1_epi32(-128 - params.zero_point),
        zero_point: _mm256_set1_epi32(params.zero_point),
        zero_point_words: _mm256_set1_epi16(params.zero_point as i16),
        magnitude_mask: _mm256_set1_epi32(MAGNITUDE_MASK as i32),
    };
    let zero_pd = _mm256_setzero_pd();
    // f64 totals of the three float sums, each as two 4-lane halves; reduced once at the end.
    let mut sq_err_total = [zero_pd; 2];
    let mut sq_ref_total = [zero_pd; 2];
    let mut dot_total = [zero_pd; 2];
    let mut max_abs_err_bits = _mm256_setzero_si256();
    // The scalar remainders' sums and the exact integer sum of squared steps.
    let mut totals = Totals::default();

    let blocks = src.chunks(STATS_BLOCK).zip(dst.chunks_mut(STATS_BLOCK));
    for (block_idx, (src_block, dst_block)) in blocks.enumerate() {
        // One set of lane sums: AVX2 has only 16 vector registers, and a second set would be
        // spilled to the stack every iteration. The squared steps of one block stay far below
        // i32::MAX per lane (64 pairs of <= 255²).
        let mut state = BlockState {
            sums: LaneSums::zero(),
            sq_steps: _mm256_setzero_si256(),
        };
        // Without streaming the whole block is one span; with it, the whole cache lines in the
        // middle are streamed and the partial lines at either end are not.
        let (head_len, body_len) = if STREAMING {
            let head_len = dst_block
                .as_ptr()
                .align_offset(CACHE_LINE)
                .min(dst_block.len());
            let body_len = (dst_block.len() - head_len) / CACHE_LINE * CACHE_LINE;
            (head_len, body_len)
        } else {
            (0, dst_block.len())
        };
        let (src_head, src_rest) = src_block.split_at(head_len);
        let (src_body, src_tail) = src_rest.split_at(body_len);
        let (dst_head, dst_rest) = dst_block.split_at_mut(head_len);
        let (dst_body, dst_tail) = dst_rest.split_at_mut(body_len);
        let prefetch = prefetch_block(prefetch, block_idx);
        let state = &mut state;
        let totals = &mut totals;
        // SAFETY: for all three calls, `src` and `dst` spans have equal lengths by construction,
        // and the body, the only span that may stream, starts on a cache line (32-byte aligned).
        unsafe {
            quantize_span::<false>(src_head, dst_head, &[], &params, &broadcast, state, totals);
            quantize_span::<STREAMING>(
                src_body, dst_body, prefetch, &params, &broadcast, state, totals,
            );
            quantize_span::<false>(src_tail, dst_tail, &[], &params, &broadcast, state, totals);
        }

        let sums = &state.sums;
        add_widened(&mut sq_err_total, sums.sq_err);
        add_widened(&mut sq_ref_total, sums.sq_ref);
        add_widened(&mut dot_total, sums.dot);
        // Non-negative and below 2^27 for one block, so the sum is exact.
        let block_sq_steps: u64 = u32_lanes(state.sq_steps)
            .iter()
            .map(|&lane| u64::from(lane))
            .sum();
        totals.sum_sq_steps += block_sq_steps;
        max_abs_err_bits = _mm256_max_epu32(max_abs_err_bits, sums.max_abs_err_bits);
    }
    if STREAMING {
        // Streaming stores are weakly ordered; fence them before the caller hands `dst` on.
        _mm_sfence();
    }

    totals.sum_sq_err += reduce_widened(sq_err_total);
    totals.sum_sq_ref += reduce_widened(sq_ref_total);
    totals.dot += reduce_widened(dot_total);
    let lanes_max = u32_lanes(max_abs_err_bits).into_iter().max().unwrap_or(0);
    totals.max_abs_err = totals.max_abs_err.max(f32::from_bits(lanes_max));
    totals.finish(src.len(), params.scale)
}
