//! AVX2 and AVX-512 versions of the int4 quantize-and-pack loop.
//!
//! Each vector lane computes `scalar::nibble` with the same IEEE operations in the same order
//! (divide, add the zero point, max/min, round half to even), so the words are identical to
//! the scalar ones; words left over at the end of a group go through `scalar::pack_word`.
//!
//! Safety model, as in `kernels::x86_64`: the `unsafe fn`s are compiled with
//! `#[target_feature]`, their safe wrappers sit only in the private tables below, and
//! [`table`] hands a table out only after run-time detection confirmed its features.

use std::arch::x86_64::*;

use super::{scalar, GroupParams, Int4Kernels, OFFSET, Q_MAX, Q_MIN, VALUES_PER_WORD};
use crate::quant::kernels::Isa;

/// To nearest, ties to even (`torch.round`), independent of MXCSR, without exceptions.
const ROUND_NEAREST_EVEN: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

fn avx2_supported() -> bool {
    is_x86_feature_detected!("avx2")
}

fn avx512_supported() -> bool {
    is_x86_feature_detected!("avx512f")
}

static AVX2: Int4Kernels = Int4Kernels {
    isa: Isa::Avx2,
    pack_row: avx2_pack_row,
};

static AVX512: Int4Kernels = Int4Kernels {
    isa: Isa::Avx512,
    pack_row: avx512_pack_row,
};

/// The table for `isa` if this module has one and the CPU runs it.
pub(super) fn table(isa: Isa) -> Option<&'static Int4Kernels> {
    match isa {
        Isa::Avx512 if avx512_supported() => Some(&AVX512),
        Isa::Avx2 if avx2_supported() => Some(&AVX2),
        _ => None,
    }
}

/// Checks the `PackRowFn` preconditions the unsafe code relies on; returns the group size
/// (0 for an empty row).
fn checked_group_size(src: &[f32], params: &[GroupParams], packed: &[i32]) -> usize {
    assert_eq!(
        packed.len() * VALUES_PER_WORD,
        src.len(),
        "pack_row: lengths"
    );
    if src.is_empty() {
        return 0;
    }
    let group_size = src.len() / params.len().max(1);
    assert!(
        group_size.is_multiple_of(VALUES_PER_WORD) && group_size * params.len() == src.len(),
        "pack_row: groups must be whole words"
    );
    group_size
}

fn avx2_pack_row(src: &[f32], params: &[GroupParams], packed: &mut [i32]) {
    let group_size = checked_group_size(src, params, packed);
    if group_size == 0 {
        return;
    }
    debug_assert!(avx2_supported());
    // SAFETY: only reachable through `AVX2`, which `table` returns after `avx2_supported()`;
    // the lengths were checked just above.
    unsafe { avx2_pack(src, params, packed, group_size) }
}

fn avx512_pack_row(src: &[f32], params: &[GroupParams], packed: &mut [i32]) {
    let group_size = checked_group_size(src, params, packed);
    if group_size == 0 {
        return;
    }
    debug_assert!(avx512_supported());
    // SAFETY: only reachable through `AVX512`, which `table` returns after
    // `avx512_supported()`; the lengths were checked just above.
    unsafe { avx512_pack(src, params, packed, group_size) }
}

/// `scalar::nibble` on 8 lanes, as i32.
#[target_feature(enable = "avx2")]
fn avx2_nibbles(x: __m256, scale: __m256, zero_point: __m256) -> __m256i {
    let scaled = _mm256_add_ps(_mm256_div_ps(x, scale), zero_point);
    // max/min give the same result as f32::clamp for every non-NaN value, ±Inf included.
    let clamped = _mm256_min_ps(
        _mm256_max_ps(scaled, _mm256_set1_ps(Q_MIN)),
        _mm256_set1_ps(Q_MAX),
    );
    let rounded = _mm256_round_ps::<ROUND_NEAREST_EVEN>(clamped);
    // `rounded` is an integer in -8..=7: truncation is exact.
    _mm256_add_epi32(_mm256_cvttps_epi32(rounded), _mm256_set1_epi32(OFFSET))
}

/// Values per AVX2 iteration: four vectors, narrowed into one 16-byte store of four words.
const AVX2_STEP: usize = 32;

/// # Safety
/// The CPU must support AVX2; `src.len() == 8 * packed.len() == group_size * params.len()`
/// with `group_size` a positive multiple of 8.
#[target_feature(enable = "avx2")]
unsafe fn avx2_pack(src: &[f32], params: &[GroupParams], packed: &mut [i32], group_size: usize) {
    // maddubs multiplies byte pairs by (1, 16) and adds them: `even | odd << 4`.
    let pair_weights = _mm256_set1_epi16(0x1001);
    // After the 32-to-8-bit packs the dwords of the four vectors are interleaved by lane.
    let dword_order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let groups = src
        .chunks_exact(group_size)
        .zip(packed.chunks_exact_mut(group_size / VALUES_PER_WORD))
        .zip(params);
    for ((src_group, packed_group), &group_params) in groups {
        let scale = _mm256_set1_ps(group_params.scale);
        let zero_point = _mm256_set1_ps(group_params.zero_point);
        let mut src_steps = src_group.chunks_exact(AVX2_STEP);
        let mut word_steps = packed_group.chunks_exact_mut(AVX2_STEP / VALUES_PER_WORD);
        for (values, words) in (&mut src_steps).zip(&mut word_steps) {
            let mut nibbles = [_mm256_setzero_si256(); 4];
            for (vector_idx, lane) in nibbles.iter_mut().enumerate() {
                // SAFETY: `values` holds 32 floats, so the 8 at vector_idx * 8 are in bounds;
                // loadu has no alignment requirement.
                let x = unsafe { _mm256_loadu_ps(values.as_ptr().add(vector_idx * 8)) };
                *lane = avx2_nibbles(x, scale, zero_point);
            }
            // Nibbles are 0..=15, so the saturating packs are exact.
            let low = _mm256_packs_epi32(nibbles[0], nibbles[1]);
            let high = _mm256_packs_epi32(nibbles[2], nibbles[3]);
            let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(low, high), dword_order);
            let pairs = _mm256_maddubs_epi16(bytes, pair_weights);
            // Each lane now repeats its 8 bytes; keep lane 0's and lane 1's first halves.
            let narrowed =
                _mm256_permute4x64_epi64::<0b00_00_10_00>(_mm256_packus_epi16(pairs, pairs));
            // SAFETY: `words` holds 4 i32 (16 bytes); storeu has no alignment requirement.
            unsafe {
                _mm_storeu_si128(words.as_mut_ptr().cast(), _mm256_castsi256_si128(narrowed))
            };
        }
        let leftover = src_steps.remainder().chunks_exact(VALUES_PER_WORD);
        for (word, values) in word_steps.into_remainder().iter_mut().zip(leftover) {
            *word = scalar::pack_word(values, group_params);
        }
    }
}

/// `scalar::nibble` on 16 lanes, as i32.
#[target_feature(enable = "avx512f")]
fn avx512_nibbles(x: __m512, scale: __m512, zero_point: __m512) -> __m512i {
    let scaled = _mm512_add_ps(_mm512_div_ps(x, scale), zero_point);
    let clamped = _mm512_min_ps(
        _mm512_max_ps(scaled, _mm512_set1_ps(Q_MIN)),
        _mm512_set1_ps(Q_MAX),
    );
    let steps = _mm512_cvt_roundps_epi32::<ROUND_NEAREST_EVEN>(clamped);
    _mm512_add_epi32(steps, _mm512_set1_epi32(OFFSET))
}

/// Values per AVX-512 iteration: one vector, two words.
const AVX512_STEP: usize = 16;

/// # Safety
/// The CPU must support AVX-512F; same slice preconditions as `avx2_pack`.
#[target_feature(enable = "avx512f")]
unsafe fn avx512_pack(src: &[f32], params: &[GroupParams], packed: &mut [i32], group_size: usize) {
    // Shift counts (0, 4) per pair of i32 lanes: the odd value of each pair moves to bits 4..8.
    let odd_shift = _mm512_set1_epi64(4 << 32);
    let groups = src
        .chunks_exact(group_size)
        .zip(packed.chunks_exact_mut(group_size / VALUES_PER_WORD))
        .zip(params);
    for ((src_group, packed_group), &group_params) in groups {
        let scale = _mm512_set1_ps(group_params.scale);
        let zero_point = _mm512_set1_ps(group_params.zero_point);
        let mut src_steps = src_group.chunks_exact(AVX512_STEP);
        let mut word_steps = packed_group.chunks_exact_mut(AVX512_STEP / VALUES_PER_WORD);
        for (values, words) in (&mut src_steps).zip(&mut word_steps) {
            // SAFETY: `values` holds 16 floats; loadu has no alignment requirement.
            let x = unsafe { _mm512_loadu_ps(values.as_ptr()) };
            let shifted = _mm512_sllv_epi32(avx512_nibbles(x, scale, zero_point), odd_shift);
            // Low dword of each qword: `even | odd << 4`; the qword-to-byte narrowing keeps it.
            let pairs = _mm512_or_si512(shifted, _mm512_srli_epi64::<32>(shifted));
            let bytes = _mm512_cvtepi64_epi8(pairs);
            // SAFETY: `words` holds 2 i32 (8 bytes), exactly what storel writes.
            unsafe { _mm_storel_epi64(words.as_mut_ptr().cast(), bytes) };
        }
        let leftover = src_steps.remainder().chunks_exact(VALUES_PER_WORD);
        for (word, values) in word_steps.into_remainder().iter_mut().zip(leftover) {
            *word = scalar::pack_word(values, group_params);
        }
    }
}
