//! AVX2 and AVX-512 versions of the NF4 block encoder.
//!
//! Each lane makes the scalar path's IEEE operations in the same order: the absmax as a max over
//! magnitude bit patterns, one f32 reciprocal per block (`block_reciprocal`: of the absmax
//! clamped to 1e-38, as bitsandbytes does), one multiply per value, and ordered
//! `x > threshold` tests (false for NaN) against [`NF4_THRESHOLDS`]; so the bytes and absmax
//! values are identical to `encode_block`'s. AVX-512 finds the number of thresholds exceeded by
//! a binary search over the sorted thresholds (the `dQuantizeNF4` tree), AVX2 by counting.
//!
//! Safety model, as in `kernels::x86_64`: the `unsafe fn`s are compiled with
//! `#[target_feature]`, their safe wrappers sit only in the private tables below, and
//! [`table`] hands a table out only after run-time detection confirmed its features.

use std::arch::x86_64::*;

use super::{block_reciprocal, check_block_lengths, Nf4Kernels, BLOCK_SIZE, NF4_THRESHOLDS};
use crate::quant::kernels::Isa;

/// Clears the sign bit of an f32's bit pattern.
const MAGNITUDE: i32 = 0x7FFF_FFFF;

fn avx2_supported() -> bool {
    is_x86_feature_detected!("avx2")
}

fn avx512_supported() -> bool {
    is_x86_feature_detected!("avx512f")
}

static AVX2: Nf4Kernels = Nf4Kernels {
    isa: Isa::Avx2,
    encode_blocks: avx2_encode_blocks,
};

static AVX512: Nf4Kernels = Nf4Kernels {
    isa: Isa::Avx512,
    encode_blocks: avx512_encode_blocks,
};

/// The table for `isa` if this module has one and the CPU runs it.
pub(super) fn table(isa: Isa) -> Option<&'static Nf4Kernels> {
    match isa {
        Isa::Avx512 if avx512_supported() => Some(&AVX512),
        Isa::Avx2 if avx2_supported() => Some(&AVX2),
        _ => None,
    }
}

fn avx2_encode_blocks(src: &[f32], packed: &mut [u8], absmax: &mut [f32]) {
    check_block_lengths(src, packed, absmax);
    debug_assert!(avx2_supported());
    // SAFETY: only reachable through `AVX2`, which `table` returns after `avx2_supported()`;
    // the lengths were checked just above.
    unsafe { avx2_encode(src, packed, absmax) }
}

fn avx512_encode_blocks(src: &[f32], packed: &mut [u8], absmax: &mut [f32]) {
    check_block_lengths(src, packed, absmax);
    debug_assert!(avx512_supported());
    // SAFETY: only reachable through `AVX512`, which `table` returns after
    // `avx512_supported()`; the lengths were checked just above.
    unsafe { avx512_encode(src, packed, absmax) }
}

/// Floats per AVX2 vector.
const AVX2_LANES: usize = 8;

/// # Safety
/// The CPU must support AVX2; `src.len() == 2 * packed.len() == 64 * absmax.len()`.
#[target_feature(enable = "avx2")]
unsafe fn avx2_encode(src: &[f32], packed: &mut [u8], absmax: &mut [f32]) {
    let magnitude = _mm256_set1_epi32(MAGNITUDE);
    // maddubs multiplies byte pairs by (16, 1) and adds them: `first << 4 | second`.
    let pair_weights = _mm256_set1_epi16(0x0110);
    // After the 32-to-8-bit packs the dwords of the four vectors are interleaved by lane.
    let dword_order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let mut thresholds = [_mm256_setzero_ps(); NF4_THRESHOLDS.len()];
    for (vector, &threshold) in thresholds.iter_mut().zip(&NF4_THRESHOLDS) {
        *vector = _mm256_set1_ps(threshold);
    }
    let blocks = src
        .chunks_exact(BLOCK_SIZE)
        .zip(packed.chunks_exact_mut(BLOCK_SIZE / 2));
    for ((block, bytes), block_max) in blocks.zip(absmax) {
        let mut values = [_mm256_setzero_ps(); BLOCK_SIZE / AVX2_LANES];
        let mut max_bits = _mm256_setzero_si256();
        for (vector_idx, value) in values.iter_mut().enumerate() {
            // SAFETY: `block` holds 64 floats, so the 8 at vector_idx * 8 are in bounds; loadu
            // has no alignment requirement.
            *value = unsafe { _mm256_loadu_ps(block.as_ptr().add(vector_idx * AVX2_LANES)) };
            let bits = _mm256_and_si256(_mm256_castps_si256(*value), magnitude);
            max_bits = _mm256_max_epu32(max_bits, bits);
        }
        let mut lanes = [0u32; AVX2_LANES];
        // SAFETY: `lanes` is 32 bytes, what storeu writes; no alignment requirement.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), max_bits) };
        let max = f32::from_bits(lanes.into_iter().max().unwrap_or(0));
        *block_max = max;
        if !max.is_finite() {
            continue;
        }
        let reciprocal = _mm256_set1_ps(block_reciprocal(max));
        // Two halves of 32 values, four vectors each, narrowed into one 16-byte store.
        for (half, quad) in values.chunks_exact(4).enumerate() {
            let mut codes = [_mm256_setzero_si256(); 4];
            for (code, &value) in codes.iter_mut().zip(quad) {
                let x = _mm256_mul_ps(value, reciprocal);
                for &threshold in &thresholds {
                    // All ones (-1) where x > threshold, ordered: NaN never counts.
                    let exceeds = _mm256_cmp_ps::<_CMP_GT_OQ>(x, threshold);
                    *code = _mm256_sub_epi32(*code, _mm256_castps_si256(exceeds));
                }
            }
            // Codes are 0..=15, so the saturating packs are exact.
            let low = _mm256_packs_epi32(codes[0], codes[1]);
            let high = _mm256_packs_epi32(codes[2], codes[3]);
            let ordered = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(low, high), dword_order);
            let pairs = _mm256_maddubs_epi16(ordered, pair_weights);
            // Each lane now repeats its 8 bytes; keep lane 0's and lane 1's first halves.
            let narrowed =
                _mm256_permute4x64_epi64::<0b00_00_10_00>(_mm256_packus_epi16(pairs, pairs));
            // SAFETY: `bytes` holds 32 bytes, so the 16 at half * 16 are in bounds; storeu has
            // no alignment requirement.
            unsafe {
                _mm_storeu_si128(
                    bytes.as_mut_ptr().add(half * 16).cast(),
                    _mm256_castsi256_si128(narrowed),
                )
            };
        }
    }
}

/// Floats per AVX-512 vector.
const AVX512_LANES: usize = 16;

/// The number of thresholds each lane of `x` strictly exceeds (0 for NaN), by a binary search:
/// `thresholds` holds [`NF4_THRESHOLDS`] in lanes 0..15 (lane 15 is never read).
#[target_feature(enable = "avx512f")]
fn avx512_codes(x: __m512, thresholds: __m512) -> __m512i {
    let mut code = _mm512_setzero_si512();
    for step in [8, 4, 2, 1] {
        // Codes below `code` are ruled out; `x > thresholds[code + step - 1]` (ordered, so
        // false for NaN) rules out those below `code + step` too.
        let probe = _mm512_add_epi32(code, _mm512_set1_epi32(step - 1));
        let threshold = _mm512_permutexvar_ps(probe, thresholds);
        let exceeds = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, threshold);
        code = _mm512_mask_add_epi32(code, exceeds, code, _mm512_set1_epi32(step));
    }
    code
}

/// # Safety
/// The CPU must support AVX-512F; same slice preconditions as `avx2_encode`.
#[target_feature(enable = "avx512f")]
unsafe fn avx512_encode(src: &[f32], packed: &mut [u8], absmax: &mut [f32]) {
    let magnitude = _mm512_set1_epi32(MAGNITUDE);
    let mut padded = [f32::INFINITY; AVX512_LANES];
    padded[..NF4_THRESHOLDS.len()].copy_from_slice(&NF4_THRESHOLDS);
    // SAFETY: `padded` holds 16 floats; loadu has no alignment requirement.
    let thresholds = unsafe { _mm512_loadu_ps(padded.as_ptr()) };
    let blocks = src
        .chunks_exact(BLOCK_SIZE)
        .zip(packed.chunks_exact_mut(BLOCK_SIZE / 2));
    for ((block, bytes), block_max) in blocks.zip(absmax) {
        let mut values = [_mm512_setzero_ps(); BLOCK_SIZE / AVX512_LANES];
        let mut max_bits = _mm512_setzero_si512();
        for (vector_idx, value) in values.iter_mut().enumerate() {
            // SAFETY: `block` holds 64 floats, so the 16 at vector_idx * 16 are in bounds;
            // loadu has no alignment requirement.
            *value = unsafe { _mm512_loadu_ps(block.as_ptr().add(vector_idx * AVX512_LANES)) };
            let bits = _mm512_and_si512(_mm512_castps_si512(*value), magnitude);
            max_bits = _mm512_max_epu32(max_bits, bits);
        }
        let max = f32::from_bits(_mm512_reduce_max_epu32(max_bits));
        *block_max = max;
        if !max.is_finite() {
            continue;
        }
        let reciprocal = _mm512_set1_ps(block_reciprocal(max));
        for (vector_idx, &value) in values.iter().enumerate() {
            let codes = avx512_codes(_mm512_mul_ps(value, reciprocal), thresholds);
            // Low dword of each qword: `first << 4 | second` (codes are 0..=15); the
            // qword-to-byte narrowing keeps its low byte.
            let pairs = _mm512_or_si512(
                _mm512_slli_epi32::<4>(codes),
                _mm512_srli_epi64::<32>(codes),
            );
            let narrowed = _mm512_cvtepi64_epi8(pairs);
            // SAFETY: `bytes` holds 32 bytes, so the 8 at vector_idx * 8 are in bounds;
            // storel writes exactly 8 bytes and has no alignment requirement.
            unsafe { _mm_storel_epi64(bytes.as_mut_ptr().add(vector_idx * 8).cast(), narrowed) };
        }
    }
}
