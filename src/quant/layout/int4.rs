//! Group-wise int4 in compressed-tensors' `pack-quantized` layout: `<name>_packed` i32
//! `[rows, cols / 8]` (8 values per word, low bits first), `<name>_scale` f32
//! `[rows, cols / group]`, `<name>_zero_point` i32 packed along rows when asymmetric, and
//! `<name>_shape` i64 `[2]`.

use super::{side_name, PACKED, SCALE, SHAPE, ZERO_POINT};
use crate::formats::compressed_tensors::int_weight_args;
use crate::formats::safetensors::{Dtype, TensorInfo};
use crate::quant::int4::{dequantize_int4, quantize_int4, Int4Error, Int4Options};
use crate::quant::kernels::ErrorStats;

use super::source::{float_side, Recognized};
use super::{
    dequantized_output, push_f32_le, rows_and_cols, DecodeError, Description, Emitter,
    EncodeContext, EncodeError, Held, OutputFormat, OutputTensor, SchemeLayout, StoredAs,
    TensorSource,
};

pub(super) struct Int4Layout(pub Int4Options);

impl SchemeLayout for Int4Layout {
    fn declare(&self, tensor: &TensorInfo, format: OutputFormat) -> Vec<OutputTensor> {
        if let Some(dequantized) = dequantized_output(tensor, format) {
            return dequantized;
        }
        let (rows, cols) = rows_and_cols(&tensor.shape);
        let groups = cols / self.0.group_size;
        let name = &tensor.name;
        let mut outputs = vec![
            OutputTensor::side(name, PACKED, Dtype::I32, vec![rows, cols / 8]),
            OutputTensor::side(name, SCALE, Dtype::F32, vec![rows, groups]),
        ];
        if !self.0.symmetric {
            let packed_rows = rows.div_ceil(8);
            outputs.push(OutputTensor::side(
                name,
                ZERO_POINT,
                Dtype::I32,
                vec![packed_rows, groups],
            ));
        }
        outputs.push(OutputTensor::side(name, SHAPE, Dtype::I64, vec![2]));
        outputs
    }

    fn encode(
        &self,
        cx: &mut EncodeContext<'_>,
        tensor: &TensorInfo,
        values: &[f32],
        format: OutputFormat,
        out: &mut Emitter<'_>,
    ) -> Result<ErrorStats, EncodeError> {
        let options = self.0;
        let (rows, cols) = rows_and_cols(&tensor.shape);
        let quantized =
            quantize_int4(cx.kernels, values, rows, cols, options).map_err(|e| match e {
                Int4Error::Quant(q) => EncodeError::from(q),
                other => EncodeError::Unquantizable(other.to_string()),
            })?;
        if let OutputFormat::Dequantized { f16 } = format {
            let mut dequantized = dequantize_int4(&quantized, options);
            return cx.emit_dequantized(
                tensor,
                values,
                &mut dequantized,
                f16,
                quantized.stats,
                out,
            );
        }
        let mut bytes = Vec::with_capacity(quantized.weight_packed.len() * 4);
        for word in &quantized.weight_packed {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        out.emit(&side_name(&tensor.name, PACKED), &bytes)?;
        bytes.clear();
        push_f32_le(&quantized.weight_scale, &mut bytes);
        out.emit(&side_name(&tensor.name, SCALE), &bytes)?;
        if !options.symmetric {
            bytes.clear();
            for word in &quantized.weight_zero_point {
                bytes.extend_from_slice(&word.to_le_bytes());
            }
            out.emit(&side_name(&tensor.name, ZERO_POINT), &bytes)?;
        }
        bytes.clear();
        for dim in quantized.weight_shape {
            bytes.extend_from_slice(&dim.to_le_bytes());
        }
        out.emit(&side_name(&tensor.name, SHAPE), &bytes)?;
        Ok(quantized.stats)
    }

    fn decode<'a>(
        &self,
        source: &dyn TensorSource<'a>,
        name: &str,
        shape: &[usize],
    ) -> Result<Held<'a>, DecodeError> {
        let invalid = |why: String| DecodeError::Invalid(why);
        let (out, inp) = rows_and_cols(shape);
        let packed = source
            .tensor(&side_name(name, PACKED))
            .ok_or_else(|| invalid(format!("missing tensor '{name}_packed'")))?;
        if packed.stored_as != StoredAs::Safetensors(Dtype::I32)
            || packed.shape != [out, inp / 8]
            || !inp.is_multiple_of(8)
        {
            return Err(invalid(format!(
                "'{name}_packed' has shape {:?}, expected [{out}, {}] I32",
                packed.shape,
                inp / 8
            )));
        }
        let scales = float_side(source, &side_name(name, SCALE))
            .ok_or_else(|| invalid(format!("'{name}_packed' has no '{name}_scale'")))?;
        if scales.is_empty() || !(out * inp).is_multiple_of(scales.len()) {
            return Err(invalid(format!("'{name}_scale' does not fit {out}x{inp}")));
        }
        let group = out * inp / scales.len();
        if group == 0 || !inp.is_multiple_of(group) {
            return Err(invalid(format!(
                "'{name}_scale' has {} values, not a whole number of groups per row of {inp}",
                scales.len()
            )));
        }
        let groups = inp / group;
        let zero_points = match source.tensor(&side_name(name, ZERO_POINT)) {
            Some(stored) => {
                if stored.stored_as != StoredAs::Safetensors(Dtype::I32)
                    || stored.bytes.len() != out.div_ceil(8) * groups * 4
                {
                    return Err(invalid(format!(
                        "'{name}_zero_point' does not fit {out}x{inp} with groups of {group}"
                    )));
                }
                unpack_zero_points(stored.bytes, out, groups)
            }
            None => Vec::new(),
        };
        Ok(Held::Int4 {
            packed: packed.bytes,
            scales,
            zero_points,
            group,
        })
    }

    fn description(&self) -> Description {
        Description::CompressedTensors {
            format: "pack-quantized",
            weights: int_weight_args(4, self.0.symmetric, "group", Some(self.0.group_size)),
        }
    }
}

/// `weight_zero_point` (`[ceil(rows / 8), groups]` i32, row `r` at bits `4 · (r % 8)`, offset
/// by 8) unpacked to `[rows, groups]` in `-8..=7`.
fn unpack_zero_points(bytes: &[u8], rows: usize, groups: usize) -> Vec<i8> {
    let words: Vec<u32> = bytes
        .chunks_exact(4)
        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
        .collect();
    let mut zero_points = Vec::with_capacity(rows * groups);
    for row in 0..rows {
        for group in 0..groups {
            let word = words[(row / 8) * groups + group];
            zero_points.push(((word >> (4 * (row % 8))) & 0xF) as i8 - 8);
        }
    }
    zero_points
}

/// `<name>_packed` beside a missing `<name>`.
pub(super) fn recognize(
    source: &dyn TensorSource<'_>,
    name: &str,
) -> Option<Result<Recognized, DecodeError>> {
    let packed = source.tensor(&side_name(name, PACKED))?;
    let (rows, words) = match packed.shape.as_slice() {
        [rows, words] => (*rows, *words),
        _ => {
            return Some(Err(DecodeError::Invalid(format!(
                "'{name}_packed' has shape {:?}, expected 2-D",
                packed.shape
            ))))
        }
    };
    let scales = float_side(source, &side_name(name, SCALE)).unwrap_or_default();
    let cols = words * 8;
    let group_size = if scales.is_empty() {
        cols
    } else {
        (rows * cols / scales.len()).max(1)
    };
    let options = Int4Options {
        group_size,
        symmetric: source.tensor(&side_name(name, ZERO_POINT)).is_none(),
        restricted_range: false,
    };
    Some(Ok(Recognized {
        layout: Box::new(Int4Layout(options)),
        shape: vec![rows, cols],
    }))
}
