//! Helpers shared by the per-row schemes (binary, ternary): shape checks and magnitude sums.

use crate::quant::int8::QuantError;

/// Checks that `[rows, cols]` describes `src_len` elements.
pub(crate) fn validate_shape(src_len: usize, rows: usize, cols: usize) -> Result<(), QuantError> {
    let expected = rows
        .checked_mul(cols)
        .ok_or_else(|| QuantError::ShapeOverflow {
            shape: vec![rows, cols],
        })?;
    if expected != src_len {
        return Err(QuantError::ShapeMismatch {
            shape: vec![rows, cols],
            expected,
            actual: src_len,
        });
    }
    Ok(())
}

/// `Σ |w|` in f64, or the offset of the first NaN or infinity.
///
/// Finite f32 magnitudes cannot overflow an f64 sum, so a non-finite sum is the finiteness
/// check. Four partial sums let consecutive additions run in parallel.
pub(crate) fn sum_of_magnitudes(row: &[f32]) -> Result<f64, usize> {
    let mut partial_sums = [0.0f64; 4];
    let mut groups = row.chunks_exact(4);
    for group in &mut groups {
        for (partial_sum, &value) in partial_sums.iter_mut().zip(group) {
            *partial_sum += f64::from(value.abs());
        }
    }
    for &value in groups.remainder() {
        partial_sums[0] += f64::from(value.abs());
    }
    let sum = (partial_sums[0] + partial_sums[1]) + (partial_sums[2] + partial_sums[3]);
    if sum.is_finite() {
        Ok(sum)
    } else {
        Err(row.iter().position(|value| !value.is_finite()).unwrap_or(0))
    }
}
