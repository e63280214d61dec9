//! Binary weights (one bit per value), XNOR-Net style: each row becomes the signs of its values
//! and one scale, `w ≈ alpha · sign(w)`.
//!
//! # Reference
//!
//! Rastegari, Ordonez, Redmon and Farhadi, "XNOR-Net: ImageNet Classification Using Binary
//! Convolutional Neural Networks" (ECCV 2016, arXiv:1603.05279), §3.1 "Binary-Weight-Networks":
//! for a filter `W` of `n` values, the `alpha · B` with `B ∈ {-1, +1}^n` closest to `W` in L2 is
//! `B = sign(W)` and `alpha = ‖W‖₁ / n`, the mean magnitude. The paper estimates one `alpha` per
//! filter (output channel); here a filter is a row, the slice of the first dimension, so every
//! row has its own `alpha`.
//!
//! Choices the paper leaves open:
//! - `sign(0) = +1`, for `-0.0` too: a zero must take one of the two codes, and +1 makes the
//!   stored bit simply `w >= 0.0`. Optimality is unaffected: a zero adds nothing to `‖W‖₁`, and
//!   `w · sign(w) = |w|` still holds for it.
//! - `alpha` is `Σ |w|` summed in f64, divided by `cols`, rounded once to f32. It is finite and
//!   at most the row's largest magnitude; an all-zero row gets `alpha = 0`.
//!
//! Because `alpha` is the L2-optimal scale for the chosen signs, a row's squared error has the
//! closed form `Σ w² - cols · alpha²` (up to the rounding of `alpha` to f32). The tests check
//! the reported statistics against it.
//!
//! # Layout
//!
//! - `packed`: row-major `[rows, packed_row_bytes(cols)]` bytes. Bit `i` (least significant
//!   first) of byte `k` of a row holds column `8k + i`: 1 for `+alpha` (`w >= 0`), 0 for
//!   `-alpha`. A row whose `cols` is not a multiple of 8 ends in zero padding bits, so every row
//!   starts on a byte boundary; readers reject non-zero padding ([`try_dequantize_binary`]).
//! - `scales`: `[rows]` f32, the `alpha` of each row.
//!
//! `docs/quantd-layouts.md` describes how quantd stores both in safetensors, with a numpy
//! decoder.

// Explicit paths: rustc resolves the children of a file included through `#[path]` beside that
// file rather than in `binary/`, and these keep both ways of including this module working.
#[cfg(test)]
#[path = "binary/tests.rs"]
mod tests;

use crate::quant::int8::QuantError;
use crate::quant::kernels::ErrorStats;
use crate::quant::metrics::compare;
use crate::quant::rows::{sum_of_magnitudes, validate_shape};

/// Values held by one packed byte.
pub const VALUES_PER_BYTE: usize = 8;

/// Elements quantized between two calls of `should_continue` (4 MiB of f32, as in int8). Calls
/// happen only between rows, so a row longer than this is never interrupted: one pass over
/// even a 100M-element row takes a fraction of a second.
const CANCEL_CHECK_ELEMENTS: usize = 1 << 20;

/// A tensor quantized to signs and one scale per row.
#[derive(Clone, Debug, PartialEq)]
pub struct BinaryTensor {
    /// Row-major `[rows, packed_row_bytes(cols)]`; see the module docs for the bit order.
    pub packed: Vec<u8>,
    /// `alpha = mean(|w|)` of each row, `[rows]`.
    pub scales: Vec<f32>,
    /// Statistics of [`dequantize_binary`]'s output against the input.
    pub stats: ErrorStats,
}

/// Why packed binary data cannot be decoded (see [`try_dequantize_binary`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BinaryLayoutError {
    /// `rows · cols` does not fit in `usize`.
    #[error("shape [{rows}, {cols}] has more elements than fit in memory")]
    ShapeOverflow { rows: usize, cols: usize },
    /// `packed` is not `rows · packed_row_bytes(cols)` bytes long.
    #[error("packed binary data holds {actual} bytes but the shape needs {expected}")]
    PackedLength { expected: usize, actual: usize },
    /// `scales` does not hold one value per row.
    #[error("binary data has {actual} scales for {expected} rows")]
    ScaleCount { expected: usize, actual: usize },
    /// A scale is NaN or infinite; a writer never stores one.
    #[error("the scale of row {row} is not finite")]
    NonFiniteScale { row: usize },
    /// A padding bit after the last column of a row is set; a writer stores zeros there, so
    /// this means the data was written with another row width or bit order.
    #[error("row {row} has non-zero padding bits")]
    NonZeroPadding { row: usize },
}

/// Bytes of one packed row of `cols` values: `ceil(cols / 8)`.
pub fn packed_row_bytes(cols: usize) -> usize {
    cols.div_ceil(VALUES_PER_BYTE)
}

/// Writes the sign bits of `row` into `packed_row` (`packed_row_bytes(row.len())` bytes).
fn pack_signs(row: &[f32], packed_row: &mut [u8]) {
    for (byte, group) in packed_row.iter_mut().zip(row.chunks(VALUES_PER_BYTE)) {
        // `>=` makes both zeros positive: sign(0) = sign(-0) = +1.
        *byte = group
            .iter()
            .enumerate()
            .fold(0u8, |bits, (bit_idx, &value)| {
                bits | (u8::from(value >= 0.0) << bit_idx)
            });
    }
}

/// `±scale` for each of `out.len()` columns of one packed row; what every reader computes.
fn dequantize_row(packed_row: &[u8], scale: f32, out: &mut [f32]) {
    for (col, value) in out.iter_mut().enumerate() {
        let bit = (packed_row[col / VALUES_PER_BYTE] >> (col % VALUES_PER_BYTE)) & 1;
        *value = if bit == 1 { scale } else { -scale };
    }
}

/// Quantizes `src` (row-major `[rows, cols]`) to one sign bit per value and one scale per row.
///
/// Errors on a shape that does not match `src.len()` and on any NaN or infinity
/// ([`QuantError::NonFinite`] with the flat index of the first). Calls `should_continue` before
/// the first row and then between rows about every 2^20 elements, and stops with
/// [`QuantError::Cancelled`] once it returns false. Extra memory besides the output is one row
/// of f32 (the dequantized row the statistics are computed from). `cols == 0` gives no packed
/// bytes and a zero scale per row.
pub fn quantize_binary(
    src: &[f32],
    rows: usize,
    cols: usize,
    should_continue: &dyn Fn() -> bool,
) -> Result<BinaryTensor, QuantError> {
    validate_shape(src.len(), rows, cols)?;
    let row_bytes = packed_row_bytes(cols);
    let mut tensor = BinaryTensor {
        // rows · row_bytes <= rows · cols = src.len(): no overflow.
        packed: vec![0; rows * row_bytes],
        scales: Vec::with_capacity(rows),
        stats: ErrorStats::default(),
    };
    if cols == 0 {
        // Rows without columns: nothing to scale, and `chunks_exact(0)` would panic.
        tensor.scales.resize(rows, 0.0);
        return Ok(tensor);
    }
    let mut dequantized_row = vec![0.0f32; cols];
    // Starts "due", so the first row is preceded by a check.
    let mut elements_since_check = CANCEL_CHECK_ELEMENTS;
    let rows_iter = src
        .chunks_exact(cols)
        .zip(tensor.packed.chunks_exact_mut(row_bytes));
    for (row_idx, (src_row, packed_row)) in rows_iter.enumerate() {
        if elements_since_check >= CANCEL_CHECK_ELEMENTS {
            if !should_continue() {
                return Err(QuantError::Cancelled);
            }
            elements_since_check = 0;
        }
        let sum = sum_of_magnitudes(src_row).map_err(|offset| QuantError::NonFinite {
            index_hint: row_idx * cols + offset,
        })?;
        // The mean of finite magnitudes is finite and at most their maximum, so the f32 is too.
        let scale = (sum / cols as f64) as f32;
        pack_signs(src_row, packed_row);
        // Statistics of exactly what a reader reconstructs from the stored bytes.
        dequantize_row(packed_row, scale, &mut dequantized_row);
        tensor.stats.merge(&compare(src_row, &dequantized_row));
        tensor.scales.push(scale);
        elements_since_check += cols;
    }
    Ok(tensor)
}

/// Decodes `[rows, cols]` values from `packed` and `scales` as stored by [`quantize_binary`],
/// checking the layout first: lengths, finite scales and zero padding bits.
///
/// The element count is bounded by the data itself (`packed` and `scales` must match the shape),
/// so untrusted `rows` and `cols` cannot make this allocate more than `8 · packed.len()` values.
pub fn try_dequantize_binary(
    packed: &[u8],
    scales: &[f32],
    rows: usize,
    cols: usize,
) -> Result<Vec<f32>, BinaryLayoutError> {
    let len = rows
        .checked_mul(cols)
        .ok_or(BinaryLayoutError::ShapeOverflow { rows, cols })?;
    let row_bytes = packed_row_bytes(cols);
    // rows · row_bytes <= rows · cols, which fits.
    let expected_bytes = rows * row_bytes;
    if packed.len() != expected_bytes {
        return Err(BinaryLayoutError::PackedLength {
            expected: expected_bytes,
            actual: packed.len(),
        });
    }
    if scales.len() != rows {
        return Err(BinaryLayoutError::ScaleCount {
            expected: rows,
            actual: scales.len(),
        });
    }
    if let Some(row) = scales.iter().position(|scale| !scale.is_finite()) {
        return Err(BinaryLayoutError::NonFiniteScale { row });
    }
    let mut out = vec![0.0f32; len];
    if len == 0 {
        return Ok(out);
    }
    // Bits of the last byte of a row that hold columns; the others must be zero.
    let used_bits = cols % VALUES_PER_BYTE;
    let padding_mask = if used_bits == 0 {
        0
    } else {
        0xFFu8 << used_bits
    };
    let rows_iter = packed
        .chunks_exact(row_bytes)
        .zip(out.chunks_exact_mut(cols))
        .zip(scales);
    for (row, ((packed_row, out_row), &scale)) in rows_iter.enumerate() {
        if packed_row[row_bytes - 1] & padding_mask != 0 {
            return Err(BinaryLayoutError::NonZeroPadding { row });
        }
        dequantize_row(packed_row, scale, out_row);
    }
    Ok(out)
}

/// Reference dequantization: `+scale` where the bit is 1, `-scale` where it is 0, in f32 exactly
/// as the statistics of [`quantize_binary`] were computed (so it reproduces them).
///
/// # Panics
/// If the data does not have the layout [`quantize_binary`] writes; see
/// [`try_dequantize_binary`] for data from outside.
pub fn dequantize_binary(packed: &[u8], scales: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    try_dequantize_binary(packed, scales, rows, cols)
        .unwrap_or_else(|error| panic!("dequantize_binary: {error}"))
}
