//! The int8 scheme over one tensor: scales (and zero points) per channel or per tensor, then the
//! fused quantize-and-measure kernel.
//!
//! # Reference
//!
//! The mapping follows compressed-tensors' int8 (`num_bits = 8`, `type = int`):
//! `src/compressed_tensors/quantization/utils/helpers.py::calculate_qparams` for the scale and
//! zero point, and `src/compressed_tensors/quantization/lifecycle/forward.py::_quantize` /
//! `_dequantize` for `q = clamp(round(x / scale) + zp, -128, 127)` and `x ≈ (q - zp) · scale`.
//! Differences, all of which a compressed-tensors reader dequantizes with the same formula:
//! - symmetric scale is `absmax / 127` (calculate_qparams divides by 127.5): the largest
//!   magnitude maps to exactly ±127 and -128 stays unused, so the grid is symmetric;
//! - we multiply by `1 / scale` rather than divide, which can move a value sitting within an
//!   ulp of a rounding boundary to the neighbouring integer;
//! - zero scales are avoided as described under [`symmetric_params`] and
//!   [`asymmetric_params`] instead of being replaced by the dtype's epsilon.
//!
//! # Layout
//!
//! `Channel` granularity takes the first dimension as the channel axis: `shape[0]` channels,
//! each a contiguous row of `product(shape[1..])` elements (a 2-D weight's rows, an N-D tensor's
//! first-dimension slices; a 0-d tensor is one channel of one element). `Tensor` granularity
//! uses one scale for everything. `q` keeps the input's element order.

use crate::quant::kernels::{ErrorStats, I8Params, Kernels, STATS_BLOCK};

/// How many elements share one scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granularity {
    /// One scale (and zero point) per slice of the first dimension.
    Channel,
    /// One scale (and zero point) for the whole tensor.
    Tensor,
}

/// The variant of the int8 scheme to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Int8Options {
    pub granularity: Granularity,
    /// `true`: zero point 0, `scale = absmax / 127`. `false`: a zero point per scale and the
    /// full 256-level range spread over `[min(min, 0), max(max, 0)]`.
    pub symmetric: bool,
}

/// A quantized tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Int8Tensor {
    /// Quantized values, same length and order as the input.
    pub q: Vec<i8>,
    /// One scale per channel (`Channel`) or exactly one (`Tensor`); empty for an empty tensor.
    pub scales: Vec<f32>,
    /// Parallel to `scales` when asymmetric; empty when symmetric (every zero point is 0).
    pub zero_points: Vec<i8>,
    /// Error statistics of the dequantized tensor against the input.
    pub stats: ErrorStats,
}

/// Why a tensor could not be quantized.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    /// The shape's element count differs from the data's length.
    #[error("shape {shape:?} describes {expected} elements but the data holds {actual}")]
    ShapeMismatch {
        shape: Vec<usize>,
        expected: usize,
        actual: usize,
    },
    /// The product of the dimensions does not fit in `usize`.
    #[error("shape {shape:?} has more elements than fit in memory")]
    ShapeOverflow { shape: Vec<usize> },
    /// A NaN or infinity: no finite scale can represent it.
    #[error("tensor contains a non-finite value (NaN or infinity) at flat index {index_hint}")]
    NonFinite {
        /// Flat (row-major) index of the first non-finite element.
        index_hint: usize,
    },
    /// `should_continue` returned false.
    #[error("quantization was cancelled")]
    Cancelled,
}

/// Elements per kernel call, and roughly how often cancellation is checked (4 MiB of f32).
///
/// A multiple of [`STATS_BLOCK`], so splitting a long row into calls starts every call on a
/// block boundary: the statistics keep the blocks one call would use and differ from its only
/// by summation order.
const CHUNK_ELEMENTS: usize = 1024 * STATS_BLOCK;

/// Tensors from this many elements on (4 MiB of f32, 1 MiB of output) are quantized with
/// `Kernels::quantize_i8_streaming`: their output will not stay in cache, so writing it around
/// the cache and prefetching the next row pays. Smaller ones use the plain kernel.
const STREAMING_MIN_ELEMENTS: usize = 1 << 20;

/// Scale used for a channel with nothing to represent (all zeros): any positive value
/// dequantizes `q = 0` to exactly 0.0, and 1.0 keeps `1 / scale` exact.
const ZERO_CHANNEL_SCALE: f32 = 1.0;

/// Parameters that map an all-zero channel to `q = 0` and back to exactly 0.0.
fn zero_channel_params() -> I8Params {
    I8Params {
        scale: ZERO_CHANNEL_SCALE,
        inv_scale: 1.0 / ZERO_CHANNEL_SCALE,
        zero_point: 0,
    }
}

/// Raises a positive scale to at least `f32::MIN_POSITIVE` so `1 / scale` stays finite (it is
/// then at most ~8.5e37) and pairs it with its inverse.
fn with_inverse(scale: f32, zero_point: i32) -> I8Params {
    // Below MIN_POSITIVE the inverse can overflow to +Inf and `x * inv_scale` turn into NaN for
    // x = 0. Such channels hold only values within ~127 · 1.2e-38 of zero; one grid step of
    // MIN_POSITIVE still reconstructs them to within MIN_POSITIVE / 2.
    let scale = scale.max(f32::MIN_POSITIVE);
    I8Params {
        scale,
        inv_scale: 1.0 / scale,
        zero_point,
    }
}

/// Symmetric parameters for a finite `absmax`: `scale = absmax / 127`, zero point 0.
///
/// `absmax == 0` gives the all-zero parameters (scale 1.0); tiny scales are raised to
/// `f32::MIN_POSITIVE` (see `with_inverse`), so the result never contains 0, NaN or Inf.
pub fn symmetric_params(absmax: f32) -> I8Params {
    debug_assert!(absmax.is_finite() && absmax >= 0.0);
    if absmax == 0.0 {
        return zero_channel_params();
    }
    with_inverse(absmax / 127.0, 0)
}

/// Asymmetric parameters for a finite range `[min, max]`.
///
/// The range is widened to include 0 (`lo = min(min, 0)`, `hi = max(max, 0)`) so zero is exactly
/// representable; `scale = (hi - lo) / 255` (computed in f64, since `hi - lo` can exceed
/// `f32::MAX`) and `zero_point = clamp(round_ties_even(-128 - lo / scale), -128, 127)` with the
/// stored f32 scale. An all-zero range gives scale 1.0 and zero point 0; tiny scales are raised
/// to `f32::MIN_POSITIVE`.
pub fn asymmetric_params(min: f32, max: f32) -> I8Params {
    debug_assert!(min.is_finite() && max.is_finite());
    let low = min.min(0.0);
    let high = max.max(0.0);
    if low == high {
        return zero_channel_params();
    }
    let scale = ((f64::from(high) - f64::from(low)) / 255.0) as f32;
    let mut params = with_inverse(scale, 0);
    // |low| / scale <= 255 (up to rounding), so this is finite and within a hair of -128..=127.
    let zero_point = (-128.0 - low / params.scale).round_ties_even();
    params.zero_point = zero_point.clamp(-128.0, 127.0) as i32;
    params
}

/// Elements per channel and number of channels, after validating `shape` against `len`.
/// `Ok(None)` for a tensor without elements.
fn channel_layout(
    shape: &[usize],
    len: usize,
    granularity: Granularity,
) -> Result<Option<(usize, usize)>, QuantError> {
    let expected = shape
        .iter()
        .try_fold(1usize, |product, &dim| product.checked_mul(dim))
        .ok_or_else(|| QuantError::ShapeOverflow {
            shape: shape.to_vec(),
        })?;
    if expected != len {
        return Err(QuantError::ShapeMismatch {
            shape: shape.to_vec(),
            expected,
            actual: len,
        });
    }
    if len == 0 {
        return Ok(None);
    }
    let n_channels = match granularity {
        Granularity::Channel => shape.first().copied().unwrap_or(1),
        Granularity::Tensor => 1,
    };
    // `len > 0`, so no dimension is zero and the division is exact.
    Ok(Some((n_channels, len / n_channels)))
}

/// Chooses the parameters of one channel, or returns the offset (within `row`) of its first
/// non-finite value.
///
/// One pass over the row: `absmax` for the symmetric variant, `min_max` for the asymmetric one;
/// both kernels let NaN and ±Inf through to their result, which is then the finiteness check.
fn channel_params(kernels: &Kernels, row: &[f32], symmetric: bool) -> Result<I8Params, usize> {
    let first_non_finite = || row.iter().position(|value| !value.is_finite()).unwrap_or(0);
    if symmetric {
        let absmax = (kernels.absmax)(row);
        if !absmax.is_finite() {
            return Err(first_non_finite());
        }
        Ok(symmetric_params(absmax))
    } else {
        let (min, max) = (kernels.min_max)(row);
        if !(min.is_finite() && max.is_finite()) {
            return Err(first_non_finite());
        }
        Ok(asymmetric_params(min, max))
    }
}

/// Scales, zero points and statistics of a tensor quantized into a caller's buffer (see
/// [`quantize_int8_into`]); the fields mean what they mean in [`Int8Tensor`].
#[derive(Clone, Debug, PartialEq)]
pub struct Int8Scales {
    pub scales: Vec<f32>,
    pub zero_points: Vec<i8>,
    pub stats: ErrorStats,
}

/// Quantizes `src` (row-major, `shape`) with `kernels`.
///
/// Errors on a shape that does not match `src.len()` and on any NaN or infinity. A shape with a
/// zero dimension gives an empty tensor (no scales) without error.
pub fn quantize_int8(
    kernels: &Kernels,
    src: &[f32],
    shape: &[usize],
    options: Int8Options,
) -> Result<Int8Tensor, QuantError> {
    quantize_int8_cancellable(kernels, src, shape, options, &|| true)
}

/// [`quantize_int8`] that calls `should_continue` before starting and then about every 2^20
/// elements (4 MiB of f32; between channels, and between chunks of one long channel), and
/// stops with [`QuantError::Cancelled`] once it returns false.
pub fn quantize_int8_cancellable(
    kernels: &Kernels,
    src: &[f32],
    shape: &[usize],
    options: Int8Options,
    should_continue: &dyn Fn() -> bool,
) -> Result<Int8Tensor, QuantError> {
    // Validate before allocating: the shape comes from an untrusted file.
    channel_layout(shape, src.len(), options.granularity)?;
    let mut q = vec![0; src.len()];
    let Int8Scales {
        scales,
        zero_points,
        stats,
    } = quantize_int8_into(kernels, src, shape, options, &mut q, should_continue)?;
    Ok(Int8Tensor {
        q,
        scales,
        zero_points,
        stats,
    })
}

/// [`quantize_int8_cancellable`] writing the quantized values into `q` instead of a new vector,
/// so a caller can reuse one buffer across tensors (or write into a mapped output file).
///
/// Fresh memory costs a page fault per 4 KiB on first write, which in a VM can cost more than
/// quantizing the page; reusing `q` avoids that. On error, `q` holds an unspecified prefix of
/// the result.
///
/// # Panics
/// If `q.len() != src.len()`.
pub fn quantize_int8_into(
    kernels: &Kernels,
    src: &[f32],
    shape: &[usize],
    options: Int8Options,
    q: &mut [i8],
    should_continue: &dyn Fn() -> bool,
) -> Result<Int8Scales, QuantError> {
    assert_eq!(
        q.len(),
        src.len(),
        "quantize_int8_into: q.len() != src.len()"
    );
    let mut result = Int8Scales {
        scales: Vec::new(),
        zero_points: Vec::new(),
        stats: ErrorStats::default(),
    };
    let Some((n_channels, row_len)) = channel_layout(shape, src.len(), options.granularity)? else {
        return Ok(result);
    };
    if !should_continue() {
        return Err(QuantError::Cancelled);
    }
    result.scales.reserve_exact(n_channels);
    if !options.symmetric {
        result.zero_points.reserve_exact(n_channels);
    }

    let streaming = src.len() >= STREAMING_MIN_ELEMENTS;
    let mut elements_since_check = 0usize;
    let rows = src.chunks_exact(row_len).zip(q.chunks_exact_mut(row_len));
    for (channel_idx, (src_row, dst_row)) in rows.enumerate() {
        let params = channel_params(kernels, src_row, options.symmetric).map_err(|offset| {
            QuantError::NonFinite {
                index_hint: channel_idx * row_len + offset,
            }
        })?;
        // Each row is read twice: once from memory for its scale, then from cache to quantize.
        // Prefetching the next row during the second, compute-bound pass keeps memory busy.
        // Rows longer than a chunk do not fit in cache anyway; the hardware streams those.
        let next_row_start = (channel_idx + 1) * row_len;
        let next_row = match src.get(next_row_start..next_row_start + row_len) {
            Some(next_row) if row_len <= CHUNK_ELEMENTS => next_row,
            _ => &[],
        };
        for (src_chunk, dst_chunk) in src_row
            .chunks(CHUNK_ELEMENTS)
            .zip(dst_row.chunks_mut(CHUNK_ELEMENTS))
        {
            if elements_since_check >= CHUNK_ELEMENTS {
                if !should_continue() {
                    return Err(QuantError::Cancelled);
                }
                elements_since_check = 0;
            }
            let chunk_stats = if streaming {
                (kernels.quantize_i8_streaming)(src_chunk, params, dst_chunk, next_row)
            } else {
                (kernels.quantize_i8)(src_chunk, params, dst_chunk)
            };
            result.stats.merge(&chunk_stats);
            elements_since_check += src_chunk.len();
        }
        result.scales.push(params.scale);
        if !options.symmetric {
            // `asymmetric_params` clamps the zero point to -128..=127.
            result.zero_points.push(params.zero_point as i8);
        }
    }
    Ok(result)
}

/// Reference dequantization, `x = (q - zero_point) · scale` per channel, computed in f32 exactly
/// as the kernels compute `deq` (so it reproduces `stats.max_abs_err` bit for bit).
///
/// # Panics
/// If `shape` and `options` do not describe `tensor` (as `quantize_int8` produced it).
pub fn dequantize_int8(tensor: &Int8Tensor, shape: &[usize], options: Int8Options) -> Vec<f32> {
    let layout = channel_layout(shape, tensor.q.len(), options.granularity)
        .expect("dequantize_int8: shape does not match the quantized data");
    let Some((n_channels, row_len)) = layout else {
        return Vec::new();
    };
    assert_eq!(tensor.scales.len(), n_channels, "one scale per channel");
    if !options.symmetric {
        assert_eq!(
            tensor.zero_points.len(),
            n_channels,
            "one zero point per channel"
        );
    }
    let mut out = Vec::with_capacity(tensor.q.len());
    for (channel_idx, row) in tensor.q.chunks_exact(row_len).enumerate() {
        let scale = tensor.scales[channel_idx];
        let zero_point = if options.symmetric {
            0.0
        } else {
            f32::from(tensor.zero_points[channel_idx])
        };
        out.extend(row.iter().map(|&q| (f32::from(q) - zero_point) * scale));
    }
    out
}

#[cfg(test)]
mod tests;
