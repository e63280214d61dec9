//! The two passes over the whole tensor: assign-and-total (one per Lloyd iteration) and the
//! final encode. Both are generic over the index width so the nearest-centroid search unrolls;
//! [`assign_and_total`] and [`encode`] pick the instance for a run-time `bits`.

use super::nearest::NearestCentroid;
use super::{packed_bytes, unpack_values, CHUNK_ELEMENTS};
use crate::quant::int8::QuantError;
use crate::quant::kernels::ErrorStats;
use crate::quant::metrics::compare;

/// Independent sets of accumulators in the assignment loop. Consecutive values often fall in
/// the same cluster; with one set, each addition to that cluster's sum would wait for the
/// previous one to reach memory and come back. Four sets let four values be in flight.
const LANES: usize = 4;

/// Per-cluster totals of one assignment pass, indexed by rank (see `NearestCentroid`).
pub(super) struct PassTotals {
    /// `Σ (x - centroid)` over the values assigned to each rank. Summing residuals rather than
    /// the values keeps the sums small, and so accurate, once clusters are tight.
    pub residual_sums: [f64; 256],
    /// Values assigned to each rank.
    pub counts: [u64; 256],
    /// `Σ (x - centroid)²` over the whole tensor.
    pub squared_error: f64,
}

/// Calls `$function::<BITS>($args)` for a run-time `bits` in 2..=8.
macro_rules! with_bits {
    ($bits:expr, $function:ident($($args:expr),*)) => {
        match $bits {
            2 => $function::<2>($($args),*),
            3 => $function::<3>($($args),*),
            4 => $function::<4>($($args),*),
            5 => $function::<5>($($args),*),
            6 => $function::<6>($($args),*),
            7 => $function::<7>($($args),*),
            8 => $function::<8>($($args),*),
            other => unreachable!("bits {other} passed validation"),
        }
    };
}

/// Assigns every value of `src` to its nearest centroid in `table` (built from a codebook of
/// `2^bits` entries) and totals each cluster. Calls `should_continue` before every chunk of
/// `CHUNK_ELEMENTS`.
pub(super) fn assign_and_total(
    src: &[f32],
    table: &NearestCentroid,
    bits: u32,
    should_continue: &dyn Fn() -> bool,
) -> Result<PassTotals, QuantError> {
    with_bits!(bits, assign_and_total_with(src, table, should_continue))
}

fn assign_and_total_with<const BITS: u32>(
    src: &[f32],
    table: &NearestCentroid,
    should_continue: &dyn Fn() -> bool,
) -> Result<PassTotals, QuantError> {
    let mut residual_sums = [[0.0f64; 256]; LANES];
    let mut counts = [[0u64; 256]; LANES];
    let mut squared_errors = [0.0f64; LANES];
    // One value into lane `lane`'s accumulators.
    let mut add = |lane: usize, value: f32| {
        // `rank < 256`; the mask only spares the bounds checks.
        let rank = table.rank::<BITS>(value) % 256;
        // Exact for all but extreme spreads: two f32 differ by less than 2^29 of their ulps.
        let residual = f64::from(value) - f64::from(table.value(rank));
        residual_sums[lane][rank] += residual;
        counts[lane][rank] += 1;
        squared_errors[lane] += residual * residual;
    };
    for chunk in src.chunks(CHUNK_ELEMENTS) {
        if !should_continue() {
            return Err(QuantError::Cancelled);
        }
        let mut groups = chunk.chunks_exact(LANES);
        for group in &mut groups {
            for (lane, &value) in group.iter().enumerate() {
                add(lane, value);
            }
        }
        for &value in groups.remainder() {
            add(0, value);
        }
    }
    let mut totals = PassTotals {
        residual_sums: [0.0; 256],
        counts: [0; 256],
        squared_error: squared_errors.iter().sum(),
    };
    for lane in 0..LANES {
        for rank in 0..256 {
            totals.residual_sums[rank] += residual_sums[lane][rank];
            totals.counts[rank] += counts[lane][rank];
        }
    }
    Ok(totals)
}

/// Packs the index of the nearest entry of `codebook` (sorted, `2^bits` entries) for every
/// value of `src`, and measures what a reader decodes from those bytes against `src`. Calls
/// `should_continue` before every chunk of `CHUNK_ELEMENTS`; extra memory is one chunk of f32.
pub(super) fn encode(
    src: &[f32],
    codebook: &[f32],
    bits: u32,
    should_continue: &dyn Fn() -> bool,
) -> Result<(Vec<u8>, ErrorStats), QuantError> {
    with_bits!(bits, encode_with(src, codebook, should_continue))
}

fn encode_with<const BITS: u32>(
    src: &[f32],
    codebook: &[f32],
    should_continue: &dyn Fn() -> bool,
) -> Result<(Vec<u8>, ErrorStats), QuantError> {
    let table = NearestCentroid::new(codebook);
    let mut packed = vec![0u8; packed_bytes(src.len(), BITS as u8)];
    let mut stats = ErrorStats::default();
    let mut dequantized = vec![0.0f32; CHUNK_ELEMENTS.min(src.len())];
    // CHUNK_ELEMENTS is a multiple of 8, so every chunk starts on a byte of the stream.
    let chunk_bytes = CHUNK_ELEMENTS / 8 * BITS as usize;
    for (src_chunk, packed_chunk) in src
        .chunks(CHUNK_ELEMENTS)
        .zip(packed.chunks_mut(chunk_bytes))
    {
        if !should_continue() {
            return Err(QuantError::Cancelled);
        }
        pack_chunk::<BITS>(src_chunk, &table, packed_chunk);
        // Statistics of exactly what a reader reconstructs from the stored bytes.
        let dequantized_chunk = &mut dequantized[..src_chunk.len()];
        unpack_values(packed_chunk, BITS, codebook, dequantized_chunk);
        stats.merge(&compare(src_chunk, dequantized_chunk));
    }
    Ok((packed, stats))
}

/// Writes the indices of `src` as a little-endian bit stream of `BITS` bits per value:
/// eight values fill exactly `BITS` bytes, so each group of eight is assembled in a `u64` (value
/// `i` at bits `i · BITS`) and stored as its `BITS` low bytes. A last group of fewer than eight
/// values is zero-padded to a whole byte.
fn pack_chunk<const BITS: u32>(src: &[f32], table: &NearestCentroid, packed: &mut [u8]) {
    let index_of = |value: f32| u64::from(table.codebook_index(table.rank::<BITS>(value)));
    let group_of = |values: &[f32]| {
        values
            .iter()
            .enumerate()
            .fold(0u64, |word, (slot, &value)| {
                word | (index_of(value) << (slot as u32 * BITS))
            })
    };
    // Split by whole groups: the tail of a chunk can take as many bytes as a whole group
    // (5 values of 2 bits need 2 bytes), so `chunks_exact_mut` would misplace it.
    let full_groups = src.len() / 8;
    let (group_bytes, tail_bytes) = packed.split_at_mut(full_groups * BITS as usize);
    let (grouped_values, tail_values) = src.split_at(full_groups * 8);
    for (values, bytes) in grouped_values
        .chunks_exact(8)
        .zip(group_bytes.chunks_exact_mut(BITS as usize))
    {
        bytes.copy_from_slice(&group_of(values).to_le_bytes()[..BITS as usize]);
    }
    if !tail_values.is_empty() {
        let word = group_of(tail_values).to_le_bytes();
        tail_bytes.copy_from_slice(&word[..tail_bytes.len()]);
    }
}
