//! Group-wise int4 weights in compressed-tensors' `pack-quantized` format.
//!
//! The last dimension of a `[rows, cols]` weight (an N-D tensor is `rows = product of the
//! leading dimensions`) is cut into groups of `group_size` columns; each group gets one scale
//! (and, asymmetric, one zero point) and each value becomes a 4-bit integer `q` in `-8..=7`.
//!
//! # Reference
//!
//! compressed-tensors (neuralmagic/compressed-tensors), matched bit for bit for f32 input:
//! - parameters, `quantization/utils/helpers.py::calculate_qparams` with
//!   `calculate_range(num_bits = 4, type = int) = (-8, 7)`, so `bit_range = 15`:
//!   - symmetric: `scale = absmax / 7.5` (`max_val_pos / (bit_range / 2)`), zero point 0. The
//!     largest magnitude lands on `±7.5`: `-absmax` rounds to `-8`, `+absmax` clamps to `7`.
//!   - asymmetric: the range is widened to include 0 (`lo = min(min, 0)`, `hi = max(max, 0)`),
//!     `scale = (hi - lo) / 15`, `zero_point = round(clamp(-8 - lo / scale, -8, 7))`; so `q`
//!     stays in `-8..=7` and the zero point is a signed int4 too (not the unsigned `0..=15`
//!     convention of GPTQ).
//!   - a zero scale (all-zero group) becomes `f32::EPSILON`, as the current `calculate_qparams`
//!     does ("update any 0s with small values"); older releases clamped every scale below
//!     epsilon, which only changes groups whose whole range is below ~1e-6. An all-zero
//!     asymmetric group gets zero point -8 (from the epsilon scale, as older releases computed
//!     it); the current release derives it from `0 / 0` before the epsilon swap and its int8 cast
//!     of NaN gives 0 on x86. Either way every value of such a group reconstructs to 0.
//! - values, `quantization/lifecycle/forward.py::_quantize`:
//!   `q = round(clamp(x / scale + zero_point, -8, 7))` with `torch.round` (half to even), in f32,
//!   dividing (not multiplying by a reciprocal) and adding the zero point *before* rounding;
//!   `_dequantize`: `x ≈ (q - zero_point) · scale`.
//! - packing, `compressors/quantized_compressors/pack_quantized.py::pack_to_int32`: values are
//!   stored offset-binary (`q + 8`, so `0..=15`), eight per int32, lowest bits first: column
//!   `c` of a row sits in word `c / 8` at bits `4 · (c % 8)`. Read as little-endian bytes, each
//!   byte holds two columns, the even one in the low nibble. Zero points use the same function
//!   with `packed_dim = 0`: eight *rows* of one group column per int32, zero-padded.
//!
//! # What a writer stores (Linear weight `[out, in]`, prefix `<layer>.`)
//!
//! | tensor | dtype | shape | source |
//! |---|---|---|---|
//! | `weight_packed` | I32 | `[out, in / 8]` | [`Int4Output::weight_packed`] |
//! | `weight_scale` | F32 (or the model's dtype) | `[out, in / group_size]` | [`Int4Output::weight_scale`] |
//! | `weight_zero_point` | I32 | `[ceil(out / 8), in / group_size]` | [`Int4Output::weight_zero_point`], asymmetric only |
//! | `weight_shape` | I64 | `[2]` | [`Int4Output::weight_shape`] (`torch.tensor(weight.shape)` is int64) |
//!
//! with `quantization_config = { quant_method: "compressed-tensors", format: "pack-quantized",
//! config_groups.group_0.weights = { num_bits: 4, type: "int", symmetric, strategy: "group",
//! group_size } }`. For an N-D weight the caller writes its own `weight_shape`.
//!
//! # Kernels
//!
//! The quantize-and-pack loop runs through a small table of function pointers chosen from the
//! caller's [`Kernels`] ISA (scalar, AVX2, AVX-512); every variant produces the same words as
//! the scalar one (`int4/scalar.rs`), which defines them.

// Explicit paths: rustc resolves the children of a file included through `#[path]` beside that
// file rather than in `int4/`, and these keep both ways of including this module working.
#[path = "int4/scalar.rs"]
mod scalar;
#[cfg(test)]
#[path = "int4/tests.rs"]
mod tests;
#[cfg(target_arch = "x86_64")]
#[path = "int4/x86_64.rs"]
mod x86_64;

use crate::quant::int8::QuantError;
use crate::quant::kernels::{ErrorStats, Isa, Kernels};
use crate::quant::metrics::compare;

/// Smallest stored integer (`calculate_range` for 4-bit ints).
const Q_MIN: f32 = -8.0;
/// Largest stored integer.
const Q_MAX: f32 = 7.0;
/// `q + OFFSET` is the unsigned nibble `pack_to_int32` stores.
const OFFSET: i32 = 8;
/// Values (or zero-point rows) per packed int32.
pub const VALUES_PER_WORD: usize = 8;
/// The group sizes compressed-tensors' int4 presets and vLLM's kernels use.
pub const SUPPORTED_GROUP_SIZES: [usize; 3] = [32, 64, 128];

/// The variant of the int4 scheme to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Int4Options {
    /// Columns per scale: one of [`SUPPORTED_GROUP_SIZES`]; must divide `cols`.
    pub group_size: usize,
    /// `true`: zero point 0, `scale = absmax / 7.5`. `false`: a zero point per group.
    pub symmetric: bool,
    /// Symmetric only: `scale = absmax / 7` so values stay in `-7..=7` (the convention of
    /// restricted-range int4 and of the independent numpy table quantd is checked against)
    /// instead of compressed-tensors' observer default `absmax / 7.5`, which also uses `-8` and
    /// has slightly lower error. Both load identically: readers only use the stored scale.
    pub restricted_range: bool,
}

/// The tensors compressed-tensors' `pack-quantized` format stores for one weight.
#[derive(Clone, Debug, PartialEq)]
pub struct Int4Output {
    /// `weight_packed`, row-major `[rows, cols / 8]`.
    pub weight_packed: Vec<i32>,
    /// `weight_scale`, row-major `[rows, cols / group_size]`.
    pub weight_scale: Vec<f32>,
    /// `weight_zero_point` packed along rows, row-major `[ceil(rows / 8), cols / group_size]`;
    /// empty when symmetric.
    pub weight_zero_point: Vec<i32>,
    /// The same zero points unpacked, `[rows, cols / group_size]` in `-8..=7`; empty when
    /// symmetric.
    pub zero_points: Vec<i8>,
    /// `weight_shape`: `[rows, cols]`.
    pub weight_shape: [i64; 2],
    /// Statistics of [`dequantize_int4`]'s output against the input.
    pub stats: ErrorStats,
}

/// Why a weight could not be quantized to int4.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Int4Error {
    /// Shape mismatch, overflow or a non-finite value (see [`QuantError`]).
    #[error(transparent)]
    Quant(#[from] QuantError),
    /// `group_size` is not one of [`SUPPORTED_GROUP_SIZES`].
    #[error("int4 group size {group_size} is not one of 32, 64, 128")]
    UnsupportedGroupSize { group_size: usize },
    /// The last dimension is not a whole number of groups; the caller decides how to handle
    /// such tensors (skip them, or pad).
    #[error("{cols} columns are not a multiple of the int4 group size {group_size}")]
    ColumnsNotDivisible { cols: usize, group_size: usize },
}

/// Scale and zero point of one group. `zero_point` is an integer in `-8..=7` held as f32,
/// because the reference adds it to `x / scale` in floating point before rounding.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct GroupParams {
    pub scale: f32,
    pub zero_point: f32,
}

/// Quantizes and packs one row: `src.len()` is a whole number of groups of
/// `src.len() / params.len()` values, that group size a multiple of 8, and
/// `packed.len() == src.len() / 8`. See `scalar::pack_row` for the definition.
type PackRowFn = fn(src: &[f32], params: &[GroupParams], packed: &mut [i32]);

/// The int4 kernels of one ISA.
struct Int4Kernels {
    isa: Isa,
    pack_row: PackRowFn,
}

static SCALAR: Int4Kernels = Int4Kernels {
    isa: Isa::Scalar,
    pack_row: scalar::pack_row,
};

/// The int4 table matching the ISA of `kernels`, scalar where this module has no version for
/// it (NEON for now).
fn int4_kernels(kernels: &Kernels) -> &'static Int4Kernels {
    match kernels.isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx2 => x86_64::table(kernels.isa).unwrap_or(&SCALAR),
        _ => &SCALAR,
    }
}

/// The ISA the int4 quantize-and-pack loop runs on when given `kernels` (for logs and reports):
/// the same as `kernels.isa` where this module has a version for it, scalar otherwise.
pub fn int4_isa(kernels: &Kernels) -> Isa {
    int4_kernels(kernels).isa
}

/// Symmetric parameters of a group with finite `absmax` (`calculate_qparams`, symmetric).
pub(crate) fn symmetric_params(absmax: f32, restricted_range: bool) -> GroupParams {
    let scale = if restricted_range {
        absmax / 7.0
    } else {
        absmax / 7.5
    };
    GroupParams {
        scale: nonzero_scale(scale),
        zero_point: 0.0,
    }
}

/// Asymmetric parameters of a group with finite `min <= max` (`calculate_qparams`,
/// asymmetric), computed in f32 as torch does.
pub(crate) fn asymmetric_params(min: f32, max: f32) -> GroupParams {
    let low = min.min(0.0);
    let high = max.max(0.0);
    let range = high - low;
    let scale = if range.is_finite() {
        nonzero_scale(range / 15.0)
    } else {
        // A range beyond f32::MAX, where torch's scale would be infinite (and its dequantized
        // values NaN): the range over 15 fits an f32 again when computed in f64.
        ((f64::from(high) - f64::from(low)) / 15.0) as f32
    };
    // `low <= 0 < scale`, so `-low / scale` is in [0, 15] up to rounding: finite.
    let zero_point = (Q_MIN - low / scale).clamp(Q_MIN, Q_MAX).round_ties_even();
    GroupParams { scale, zero_point }
}

/// A zero scale (all-zero group) would divide 0 by 0; compressed-tensors uses epsilon.
fn nonzero_scale(scale: f32) -> f32 {
    if scale == 0.0 {
        f32::EPSILON
    } else {
        scale
    }
}

/// Checks the shape and options; returns the number of groups per row.
fn validate(
    src_len: usize,
    rows: usize,
    cols: usize,
    options: Int4Options,
) -> Result<usize, Int4Error> {
    if !SUPPORTED_GROUP_SIZES.contains(&options.group_size) {
        return Err(Int4Error::UnsupportedGroupSize {
            group_size: options.group_size,
        });
    }
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
        }
        .into());
    }
    if !cols.is_multiple_of(options.group_size) {
        return Err(Int4Error::ColumnsNotDivisible {
            cols,
            group_size: options.group_size,
        });
    }
    Ok(cols / options.group_size)
}

/// Parameters of one group, or the offset of its first non-finite value. The `absmax` and
/// `min_max` kernels let NaN and ±Inf through, so their result doubles as the check.
fn group_params(
    kernels: &Kernels,
    group: &[f32],
    symmetric: bool,
    restricted_range: bool,
) -> Result<GroupParams, usize> {
    let first_non_finite = || group.iter().position(|v| !v.is_finite()).unwrap_or(0);
    if symmetric {
        let absmax = (kernels.absmax)(group);
        if !absmax.is_finite() {
            return Err(first_non_finite());
        }
        Ok(symmetric_params(absmax, restricted_range))
    } else {
        let (min, max) = (kernels.min_max)(group);
        if !(min.is_finite() && max.is_finite()) {
            return Err(first_non_finite());
        }
        Ok(asymmetric_params(min, max))
    }
}

/// Quantizes `src` (row-major `[rows, cols]`) group-wise to int4 and packs it the way
/// compressed-tensors' `pack-quantized` compressor does (see the module docs).
///
/// `kernels` picks the ISA of the quantize-and-pack loop; the result is the same for every
/// ISA. Errors on an unsupported group size, a `cols` that is not a multiple of it, a shape that
/// does not match `src.len()`, and any NaN or infinity.
pub fn quantize_int4(
    kernels: &Kernels,
    src: &[f32],
    rows: usize,
    cols: usize,
    options: Int4Options,
) -> Result<Int4Output, Int4Error> {
    let n_groups = validate(src.len(), rows, cols, options)?;
    let table = int4_kernels(kernels);
    let words_per_row = cols / VALUES_PER_WORD;
    let mut output = Int4Output {
        weight_packed: vec![0; rows * words_per_row],
        weight_scale: Vec::with_capacity(rows * n_groups),
        weight_zero_point: Vec::new(),
        zero_points: Vec::new(),
        weight_shape: [rows as i64, cols as i64],
        stats: ErrorStats::default(),
    };
    if src.is_empty() {
        return Ok(output);
    }
    let mut params = Vec::with_capacity(n_groups);
    let mut dequantized = vec![0.0f32; cols];
    let rows_iter = src
        .chunks_exact(cols)
        .zip(output.weight_packed.chunks_exact_mut(words_per_row));
    for (row_idx, (src_row, packed_row)) in rows_iter.enumerate() {
        params.clear();
        for (group_idx, group) in src_row.chunks_exact(options.group_size).enumerate() {
            let group_params =
                group_params(kernels, group, options.symmetric, options.restricted_range).map_err(
                    |offset| QuantError::NonFinite {
                        index_hint: row_idx * cols + group_idx * options.group_size + offset,
                    },
                )?;
            params.push(group_params);
        }
        (table.pack_row)(src_row, &params, packed_row);
        // Statistics of exactly what a reader reconstructs from the packed words.
        dequantize_row(packed_row, &params, &mut dequantized);
        output.stats.merge(&compare(src_row, &dequantized));
        output.weight_scale.extend(params.iter().map(|p| p.scale));
        if !options.symmetric {
            // `asymmetric_params` clamps to -8..=7, so the cast is exact.
            output
                .zero_points
                .extend(params.iter().map(|p| p.zero_point as i8));
        }
    }
    if !options.symmetric {
        output.weight_zero_point = pack_zero_points(&output.zero_points, rows, n_groups);
    }
    Ok(output)
}

/// Packs zero points `[rows, n_groups]` (each in `-8..=7`) along the rows, as
/// `pack_to_int32(zero_point, 4, packed_dim=0)`: word `[r / 8][g]` holds `zp[r][g] + 8` at bits
/// `4 · (r % 8)`; a last partial word is padded with zero bits.
///
/// # Panics
/// If `zero_points.len() != rows * n_groups`.
pub fn pack_zero_points(zero_points: &[i8], rows: usize, n_groups: usize) -> Vec<i32> {
    assert_eq!(zero_points.len(), rows * n_groups, "zero points shape");
    let packed_rows = rows.div_ceil(VALUES_PER_WORD);
    let mut packed = vec![0u32; packed_rows * n_groups];
    for (row_idx, row) in zero_points.chunks_exact(n_groups.max(1)).enumerate() {
        let shift = 4 * (row_idx % VALUES_PER_WORD);
        let packed_row = &mut packed[(row_idx / VALUES_PER_WORD) * n_groups..][..n_groups];
        for (word, &zero_point) in packed_row.iter_mut().zip(row) {
            *word |= ((i32::from(zero_point) + OFFSET) as u32 & 0xF) << shift;
        }
    }
    packed.into_iter().map(|word| word as i32).collect()
}

/// The zero point of row `row_idx`, group `group_idx` from the packed `weight_zero_point`
/// (`unpack_from_int32(..., packed_dim=0)`).
fn unpacked_zero_point(packed: &[i32], n_groups: usize, row_idx: usize, group_idx: usize) -> f32 {
    let word = packed[(row_idx / VALUES_PER_WORD) * n_groups + group_idx] as u32;
    let nibble = (word >> (4 * (row_idx % VALUES_PER_WORD))) & 0xF;
    (nibble as i32 - OFFSET) as f32
}

/// `x = (q - zero_point) · scale` for one packed row, in f32 as `_dequantize` computes it.
fn dequantize_row(packed_row: &[i32], params: &[GroupParams], out: &mut [f32]) {
    let group_size = out.len() / params.len();
    let groups = out
        .chunks_exact_mut(group_size)
        .zip(packed_row.chunks_exact(group_size / VALUES_PER_WORD))
        .zip(params);
    for ((out_group, words), &GroupParams { scale, zero_point }) in groups {
        for (values, &word) in out_group.chunks_exact_mut(VALUES_PER_WORD).zip(words) {
            for (idx, value) in values.iter_mut().enumerate() {
                let nibble = (word as u32 >> (4 * idx)) & 0xF;
                let q = (nibble as i32 - OFFSET) as f32;
                *value = (q - zero_point) * scale;
            }
        }
    }
}

/// Reference dequantization from the stored tensors alone (`weight_packed`, `weight_scale`,
/// packed `weight_zero_point`, `weight_shape`), as compressed-tensors' `decompress_weight`
/// computes it; reproduces `stats` exactly.
///
/// # Panics
/// If the tensors' lengths do not match `weight_shape` and `options`.
pub fn dequantize_int4(output: &Int4Output, options: Int4Options) -> Vec<f32> {
    let [rows, cols] = output.weight_shape.map(|dim| dim as usize);
    let n_groups = cols / options.group_size;
    let words_per_row = cols / VALUES_PER_WORD;
    assert_eq!(output.weight_packed.len(), rows * words_per_row, "packed");
    assert_eq!(output.weight_scale.len(), rows * n_groups, "scales");
    if !options.symmetric {
        assert_eq!(
            output.weight_zero_point.len(),
            rows.div_ceil(VALUES_PER_WORD) * n_groups,
            "packed zero points"
        );
    }
    let mut out = vec![0.0f32; rows * cols];
    if out.is_empty() {
        return out;
    }
    let mut params = Vec::with_capacity(n_groups);
    for (row_idx, (packed_row, out_row)) in output
        .weight_packed
        .chunks_exact(words_per_row)
        .zip(out.chunks_exact_mut(cols))
        .enumerate()
    {
        params.clear();
        params.extend((0..n_groups).map(|group_idx| GroupParams {
            scale: output.weight_scale[row_idx * n_groups + group_idx],
            zero_point: if options.symmetric {
                0.0
            } else {
                unpacked_zero_point(&output.weight_zero_point, n_groups, row_idx, group_idx)
            },
        }));
        dequantize_row(packed_row, &params, out_row);
    }
    out
}
