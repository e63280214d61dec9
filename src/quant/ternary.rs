//! Ternary weights (two bits per value), TWN style: each row becomes codes in {-1, 0, +1} and
//! one scale, `w ≈ alpha · t`.
//!
//! # Reference
//!
//! Li and Liu, "Ternary Weight Networks" (2016, arXiv:1605.04711), §2: the exact threshold of the
//! L2-optimal ternary approximation has no closed form, so TWN uses the approximation
//! `delta = 0.7 · mean(|w|)` (derived for uniformly or normally distributed weights), sets
//! `t = +1` where `w > delta`, `t = -1` where `w < -delta`, `t = 0` otherwise, and takes
//! `alpha = mean(|w_i|)` over the `i` with `|w_i| > delta`, the L2-optimal scale for those codes.
//! The paper uses one `delta` and `alpha` per layer; here, as for binary weights, each row (the
//! slice of the first dimension, an output channel) gets its own.
//!
//! Arithmetic, so that other implementations can reproduce the codes exactly:
//! - `delta = 0.7 · (Σ |w| / cols)`, summed and multiplied in f64 (never rounded to f32), and
//!   compared with each value converted exactly to f64. Values exactly at `±delta` get code 0.
//! - `alpha = Σ_{|w| > delta} |w| / count` in f64, rounded once to f32; `alpha = 0` when no value
//!   exceeds `delta` (an all-zero row, where `delta = 0`).
//!
//! Because `alpha` is the L2-optimal scale for the codes, a row's squared error has the closed
//! form `Σ w² - count · alpha²` (up to the rounding of `alpha` to f32); the tests check it.
//!
//! # Layout
//!
//! - `packed`: row-major `[rows, packed_row_bytes(cols)]` bytes, four 2-bit codes per byte. Bits
//!   `2i..2i+2` (least significant first) of byte `k` of a row hold column `4k + i`:
//!   [`CODE_ZERO`] `0b00` for 0, [`CODE_PLUS`] `0b01` for `+alpha`, [`CODE_MINUS`] `0b10` for
//!   `-alpha`. `0b11` is never written and readers reject it ([`try_dequantize_ternary`]). A row
//!   whose `cols` is not a multiple of 4 ends in zero padding bits, so every row starts on a byte
//!   boundary.
//! - `scales`: `[rows]` f32, the `alpha` of each row.
//!
//! `docs/quantd-layouts.md` describes how quantd stores both in safetensors, with a numpy
//! decoder.

// Explicit paths: rustc resolves the children of a file included through `#[path]` beside that
// file rather than in `ternary/`, and these keep both ways of including this module working.
#[cfg(test)]
#[path = "ternary/tests.rs"]
mod tests;

use crate::quant::int8::QuantError;
use crate::quant::kernels::ErrorStats;
use crate::quant::metrics::compare;
use crate::quant::rows::{sum_of_magnitudes, validate_shape};

/// Values held by one packed byte.
pub const VALUES_PER_BYTE: usize = 4;
/// The code of a value that became 0.
pub const CODE_ZERO: u8 = 0b00;
/// The code of a value that became `+alpha`.
pub const CODE_PLUS: u8 = 0b01;
/// The code of a value that became `-alpha`.
pub const CODE_MINUS: u8 = 0b10;
/// The one bit pattern that is not a code; a reader that meets it has the wrong data.
pub const CODE_INVALID: u8 = 0b11;
/// TWN's `delta = 0.7 · mean(|w|)`.
pub const THRESHOLD_FACTOR: f64 = 0.7;

/// Elements quantized between two calls of `should_continue` (4 MiB of f32, as in int8). Calls
/// happen only between rows, so a row longer than this is never interrupted: two passes over
/// even a 100M-element row take a fraction of a second.
const CANCEL_CHECK_ELEMENTS: usize = 1 << 20;

/// A tensor quantized to ternary codes and one scale per row.
#[derive(Clone, Debug, PartialEq)]
pub struct TernaryTensor {
    /// Row-major `[rows, packed_row_bytes(cols)]`; see the module docs for the bit order.
    pub packed: Vec<u8>,
    /// `alpha` of each row, `[rows]`.
    pub scales: Vec<f32>,
    /// Statistics of [`dequantize_ternary`]'s output against the input.
    pub stats: ErrorStats,
}

/// Why packed ternary data cannot be decoded (see [`try_dequantize_ternary`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TernaryLayoutError {
    /// `rows · cols` does not fit in `usize`.
    #[error("shape [{rows}, {cols}] has more elements than fit in memory")]
    ShapeOverflow { rows: usize, cols: usize },
    /// `packed` is not `rows · packed_row_bytes(cols)` bytes long.
    #[error("packed ternary data holds {actual} bytes but the shape needs {expected}")]
    PackedLength { expected: usize, actual: usize },
    /// `scales` does not hold one value per row.
    #[error("ternary data has {actual} scales for {expected} rows")]
    ScaleCount { expected: usize, actual: usize },
    /// A scale is NaN or infinite; a writer never stores one.
    #[error("the scale of row {row} is not finite")]
    NonFiniteScale { row: usize },
    /// The value at this flat (row-major) index has the code `0b11`, which no writer produces.
    #[error("invalid ternary code 0b11 at flat index {index}")]
    InvalidCode { index: usize },
    /// A padding bit after the last column of a row is set; a writer stores zeros there, so
    /// this means the data was written with another row width or bit order.
    #[error("row {row} has non-zero padding bits")]
    NonZeroPadding { row: usize },
}

/// Bytes of one packed row of `cols` values: `ceil(cols / 4)`.
pub fn packed_row_bytes(cols: usize) -> usize {
    cols.div_ceil(VALUES_PER_BYTE)
}

/// The code of `value` for threshold `delta >= 0`, computed without branches: whether a value
/// clears the threshold is random from one value to the next, so a branch would mispredict often.
fn ternary_code(value: f32, delta: f64) -> u8 {
    let value = f64::from(value);
    (u8::from(value > delta) * CODE_PLUS) | (u8::from(value < -delta) * CODE_MINUS)
}

/// Writes the codes of `row` into `packed_row` and returns `alpha`, the mean magnitude of the
/// values that got a non-zero code (0 when none did).
fn pack_codes(row: &[f32], delta: f64, packed_row: &mut [u8]) -> f32 {
    let mut kept_sum = 0.0f64;
    let mut kept_count = 0usize;
    for (byte, group) in packed_row.iter_mut().zip(row.chunks(VALUES_PER_BYTE)) {
        let mut bits = 0u8;
        for (slot, &value) in group.iter().enumerate() {
            let code = ternary_code(value, delta);
            let kept = code != CODE_ZERO;
            kept_sum += if kept { f64::from(value.abs()) } else { 0.0 };
            kept_count += usize::from(kept);
            bits |= code << (2 * slot);
        }
        *byte = bits;
    }
    if kept_count == 0 {
        0.0
    } else {
        // A mean of finite magnitudes: finite, and at most the largest of them.
        (kept_sum / kept_count as f64) as f32
    }
}

/// The value of each of `out.len()` columns of one packed row, or the column of the first
/// `0b11` code. This is what every reader computes: `+scale`, `-scale` or `0.0`.
fn dequantize_row(packed_row: &[u8], scale: f32, out: &mut [f32]) -> Result<(), usize> {
    // Indexed by code; the NaN for 0b11 never escapes (the row is rejected below).
    let value_of_code = [0.0, scale, -scale, f32::NAN];
    let mut any_invalid = false;
    for (col, value) in out.iter_mut().enumerate() {
        let code = (packed_row[col / VALUES_PER_BYTE] >> (2 * (col % VALUES_PER_BYTE))) & 0b11;
        any_invalid |= code == CODE_INVALID;
        *value = value_of_code[usize::from(code)];
    }
    if any_invalid {
        // Rare (corrupt data only), so the row is searched again rather than branching above.
        let first_invalid = (0..out.len()).find(|&col| {
            (packed_row[col / VALUES_PER_BYTE] >> (2 * (col % VALUES_PER_BYTE))) & 0b11
                == CODE_INVALID
        });
        return Err(first_invalid.unwrap_or(0));
    }
    Ok(())
}

/// Quantizes `src` (row-major `[rows, cols]`) to one ternary code per value and one scale per
/// row.
///
/// Errors on a shape that does not match `src.len()` and on any NaN or infinity
/// ([`QuantError::NonFinite`] with the flat index of the first). Calls `should_continue` before
/// the first row and then between rows about every 2^20 elements, and stops with
/// [`QuantError::Cancelled`] once it returns false. Extra memory besides the output is one row
/// of f32 (the dequantized row the statistics are computed from). `cols == 0` gives no packed
/// bytes and a zero scale per row.
pub fn quantize_ternary(
    src: &[f32],
    rows: usize,
    cols: usize,
    should_continue: &dyn Fn() -> bool,
) -> Result<TernaryTensor, QuantError> {
    validate_shape(src.len(), rows, cols)?;
    let row_bytes = packed_row_bytes(cols);
    let mut tensor = TernaryTensor {
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
        let delta = THRESHOLD_FACTOR * (sum / cols as f64);
        let scale = pack_codes(src_row, delta, packed_row);
        // Statistics of exactly what a reader reconstructs from the stored bytes. The codes
        // were just written, so none is 0b11.
        dequantize_row(packed_row, scale, &mut dequantized_row)
            .expect("pack_codes writes only valid codes");
        tensor.stats.merge(&compare(src_row, &dequantized_row));
        tensor.scales.push(scale);
        elements_since_check += cols;
    }
    Ok(tensor)
}

/// Decodes `[rows, cols]` values from `packed` and `scales` as stored by [`quantize_ternary`],
/// checking the layout first: lengths, finite scales, no `0b11` code and zero padding bits.
///
/// The element count is bounded by the data itself (`packed` and `scales` must match the shape),
/// so untrusted `rows` and `cols` cannot make this allocate more than `4 · packed.len()` values.
pub fn try_dequantize_ternary(
    packed: &[u8],
    scales: &[f32],
    rows: usize,
    cols: usize,
) -> Result<Vec<f32>, TernaryLayoutError> {
    let len = rows
        .checked_mul(cols)
        .ok_or(TernaryLayoutError::ShapeOverflow { rows, cols })?;
    let row_bytes = packed_row_bytes(cols);
    // rows · row_bytes <= rows · cols, which fits.
    let expected_bytes = rows * row_bytes;
    if packed.len() != expected_bytes {
        return Err(TernaryLayoutError::PackedLength {
            expected: expected_bytes,
            actual: packed.len(),
        });
    }
    if scales.len() != rows {
        return Err(TernaryLayoutError::ScaleCount {
            expected: rows,
            actual: scales.len(),
        });
    }
    if let Some(row) = scales.iter().position(|scale| !scale.is_finite()) {
        return Err(TernaryLayoutError::NonFiniteScale { row });
    }
    let mut out = vec![0.0f32; len];
    if len == 0 {
        return Ok(out);
    }
    // Bits of the last byte of a row that hold columns; the others must be zero.
    let used_bits = 2 * (cols % VALUES_PER_BYTE);
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
            return Err(TernaryLayoutError::NonZeroPadding { row });
        }
        dequantize_row(packed_row, scale, out_row).map_err(|col| {
            TernaryLayoutError::InvalidCode {
                index: row * cols + col,
            }
        })?;
    }
    Ok(out)
}

/// Reference dequantization: `+scale`, `-scale` or `0.0` per code, in f32 exactly as the
/// statistics of [`quantize_ternary`] were computed (so it reproduces them).
///
/// # Panics
/// If the data does not have the layout [`quantize_ternary`] writes, including a `0b11` code;
/// see [`try_dequantize_ternary`] for data from outside.
pub fn dequantize_ternary(packed: &[u8], scales: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    try_dequantize_ternary(packed, scales, rows, cols)
        .unwrap_or_else(|error| panic!("dequantize_ternary: {error}"))
}
