//! int8 per-channel / per-tensor, symmetric or asymmetric, in compressed-tensors'
//! `int-quantized` layout: `<name>` i8, `<name>_scale` f32 (`[out, 1]` or `[1]`), and
//! `<name>_zero_point` i8 of the same shape when asymmetric.

use super::{side_name, SCALE, ZERO_POINT};
use crate::formats::compressed_tensors::int_weight_args;
use crate::formats::safetensors::{Dtype, TensorInfo};
use crate::quant::int8::{quantize_int8_into, Granularity, Int8Options};
use crate::quant::kernels::ErrorStats;
use crate::quant::metrics::compare;

use super::source::{float_side, Recognized};
use super::{
    dequantized_output, grow, i8_as_bytes, push_f16_le, push_f32_le, rows_and_cols, DecodeError,
    Description, Emitter, EncodeContext, EncodeError, Held, OutputFormat, OutputTensor,
    SchemeLayout, StoredAs, TensorSource,
};

pub(super) struct Int8Layout(pub Int8Options);

impl SchemeLayout for Int8Layout {
    fn declare(&self, tensor: &TensorInfo, format: OutputFormat) -> Vec<OutputTensor> {
        if let Some(dequantized) = dequantized_output(tensor, format) {
            return dequantized;
        }
        let scale_shape = match self.0.granularity {
            Granularity::Channel => vec![tensor.shape[0], 1],
            Granularity::Tensor => vec![1],
        };
        let name = &tensor.name;
        let mut outputs = vec![
            OutputTensor::same(tensor, StoredAs::Safetensors(Dtype::I8), 1),
            OutputTensor::side(name, SCALE, Dtype::F32, scale_shape.clone()),
        ];
        if !self.0.symmetric {
            outputs.push(OutputTensor::side(name, ZERO_POINT, Dtype::I8, scale_shape));
        }
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
        let q = grow(&mut cx.q_buffer, values.len());
        let quantized = quantize_int8_into(
            cx.kernels,
            values,
            &tensor.shape,
            options,
            q,
            cx.should_continue,
        )?;
        let q = &cx.q_buffer[..values.len()];
        let OutputFormat::Dequantized { f16 } = format else {
            out.emit(&tensor.name, i8_as_bytes(q))?;
            cx.byte_buffer.clear();
            push_f32_le(&quantized.scales, &mut cx.byte_buffer);
            out.emit(&side_name(&tensor.name, SCALE), &cx.byte_buffer)?;
            if !options.symmetric {
                out.emit(
                    &side_name(&tensor.name, ZERO_POINT),
                    i8_as_bytes(&quantized.zero_points),
                )?;
            }
            return Ok(quantized.stats);
        };
        let (rows, cols) = rows_and_cols(&tensor.shape);
        let dequantized = grow(&mut cx.f32_buffer, values.len());
        for row in 0..rows {
            let index = if quantized.scales.len() == 1 { 0 } else { row };
            let scale = quantized.scales[index];
            let zero = quantized
                .zero_points
                .get(index)
                .map_or(0.0, |&z| f32::from(z));
            for col in 0..cols {
                let at = row * cols + col;
                dequantized[at] = (f32::from(q[at]) - zero) * scale;
            }
        }
        cx.byte_buffer.clear();
        if f16 {
            push_f16_le(dequantized, &mut cx.byte_buffer);
            out.emit(&tensor.name, &cx.byte_buffer)?;
            return Ok(compare(values, dequantized));
        }
        push_f32_le(dequantized, &mut cx.byte_buffer);
        out.emit(&tensor.name, &cx.byte_buffer)?;
        Ok(quantized.stats)
    }

    fn decode<'a>(
        &self,
        source: &dyn TensorSource<'a>,
        name: &str,
        shape: &[usize],
    ) -> Result<Held<'a>, DecodeError> {
        let invalid = |why: String| DecodeError::Invalid(why);
        let stored = source
            .tensor(name)
            .ok_or_else(|| invalid(format!("missing tensor '{name}'")))?;
        let scales = float_side(source, &side_name(name, SCALE))
            .ok_or_else(|| invalid(format!("'{name}' is int8 without '{name}_scale'")))?;
        let zero_points: Vec<i8> = source
            .tensor(&side_name(name, ZERO_POINT))
            .map(|t| t.bytes.iter().map(|&v| v as i8).collect())
            .unwrap_or_default();
        let (rows, _) = rows_and_cols(shape);
        if scales.len() != 1 && scales.len() != rows {
            return Err(invalid(format!(
                "'{name}_scale' has {} values for {rows} rows",
                scales.len()
            )));
        }
        if !zero_points.is_empty() && zero_points.len() != scales.len() {
            return Err(invalid(format!(
                "'{name}_zero_point' has {} values for {} scales",
                zero_points.len(),
                scales.len()
            )));
        }
        if stored.bytes.len() != shape.iter().product::<usize>() {
            return Err(invalid(format!(
                "'{name}' does not hold {shape:?} int8 values"
            )));
        }
        Ok(Held::Int8 {
            q: stored.bytes.iter().map(|&v| v as i8).collect(),
            scales,
            zero_points,
        })
    }

    fn description(&self) -> Description {
        let strategy = match self.0.granularity {
            Granularity::Channel => "channel",
            Granularity::Tensor => "tensor",
        };
        Description::CompressedTensors {
            format: "int-quantized",
            weights: int_weight_args(8, self.0.symmetric, strategy, None),
        }
    }
}

/// An I8 tensor with a `_scale` beside it.
pub(super) fn recognize(
    source: &dyn TensorSource<'_>,
    name: &str,
) -> Option<Result<Recognized, DecodeError>> {
    let stored = source.tensor(name)?;
    if stored.stored_as != StoredAs::Safetensors(Dtype::I8) {
        return None;
    }
    let scales = source.tensor(&side_name(name, SCALE))?;
    let options = Int8Options {
        granularity: if scales.shape.iter().product::<usize>() == 1 {
            Granularity::Tensor
        } else {
            Granularity::Channel
        },
        symmetric: source.tensor(&side_name(name, ZERO_POINT)).is_none(),
    };
    Some(Ok(Recognized {
        layout: Box::new(Int8Layout(options)),
        shape: stored.shape,
    }))
}
