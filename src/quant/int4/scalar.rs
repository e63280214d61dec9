//! Portable reference for the int4 quantize-and-pack loop; defines what every SIMD variant
//! must produce, and handles their leftover words.

use super::{GroupParams, OFFSET, Q_MAX, Q_MIN, VALUES_PER_WORD};

/// The stored nibble of one value: `round_ties_even(clamp(x / scale + zero_point, -8, 7)) + 8`.
///
/// Clamping before rounding (as compressed-tensors' `round_to_quantized_type` does) equals
/// rounding first, since the bounds are integers, and keeps ±Inf (a huge `x / scale`) away
/// from the float-to-int conversion. The SIMD kernels compute the same four IEEE operations
/// in the same order (divide, add, max/min, round), so they agree for every finite input.
#[inline(always)]
pub(super) fn nibble(x: f32, params: GroupParams) -> u32 {
    let steps = (x / params.scale + params.zero_point)
        .clamp(Q_MIN, Q_MAX)
        .round_ties_even();
    // `steps` is an integer in -8..=7, so the cast is exact and the sum is in 0..=15.
    (steps as i32 + OFFSET) as u32
}

/// Eight consecutive values of one group as one word, the first in the lowest bits.
#[inline(always)]
pub(super) fn pack_word(values: &[f32], params: GroupParams) -> i32 {
    debug_assert_eq!(values.len(), VALUES_PER_WORD);
    let word = values.iter().enumerate().fold(0u32, |word, (idx, &x)| {
        word | nibble(x, params) << (4 * idx)
    });
    word as i32
}

/// Quantizes and packs one row (see `PackRowFn` for the preconditions).
pub(super) fn pack_row(src: &[f32], params: &[GroupParams], packed: &mut [i32]) {
    assert_eq!(
        packed.len() * VALUES_PER_WORD,
        src.len(),
        "pack_row: lengths"
    );
    if src.is_empty() {
        return;
    }
    let group_size = src.len() / params.len().max(1);
    assert!(
        group_size.is_multiple_of(VALUES_PER_WORD) && group_size * params.len() == src.len(),
        "pack_row: groups must be whole words"
    );
    let words_per_group = group_size / VALUES_PER_WORD;
    let groups = src
        .chunks_exact(group_size)
        .zip(packed.chunks_exact_mut(words_per_group))
        .zip(params);
    for ((src_group, packed_group), &group_params) in groups {
        for (word, values) in packed_group
            .iter_mut()
            .zip(src_group.chunks_exact(VALUES_PER_WORD))
        {
            *word = pack_word(values, group_params);
        }
    }
}
