//! FP8 (E4M3 / E5M2) in compressed-tensors' `float-quantized` layout: `<name>` as F8 codes and
//! `<name>_scale` f32 (`[out, 1]` per channel, `[1]` per tensor). Serving dequantizes at load.

use super::{side_name, SCALE};
use crate::formats::compressed_tensors::float_weight_args;
use crate::formats::safetensors::{Dtype, TensorInfo};
use crate::quant::fp8::{dequantize_fp8, quantize_fp8, Fp8Format};
use crate::quant::kernels::ErrorStats;

use super::source::{float_side, Recognized};
use super::{
    dequantized_output, push_f32_le, rows_and_cols, DecodeError, Description, Emitter,
    EncodeContext, EncodeError, Held, OutputFormat, OutputTensor, SchemeLayout, StoredAs,
    TensorSource,
};

pub(super) struct Fp8Layout {
    pub format: Fp8Format,
    pub per_channel: bool,
}

fn dtype_of(format: Fp8Format) -> Dtype {
    match format {
        Fp8Format::E4M3 => Dtype::F8_E4M3,
        Fp8Format::E5M2 => Dtype::F8_E5M2,
    }
}

impl SchemeLayout for Fp8Layout {
    fn declare(&self, tensor: &TensorInfo, format: OutputFormat) -> Vec<OutputTensor> {
        if let Some(dequantized) = dequantized_output(tensor, format) {
            return dequantized;
        }
        let scale_shape = if self.per_channel {
            vec![tensor.shape[0], 1]
        } else {
            vec![1]
        };
        vec![
            OutputTensor::same(tensor, StoredAs::Safetensors(dtype_of(self.format)), 1),
            OutputTensor::side(&tensor.name, SCALE, Dtype::F32, scale_shape),
        ]
    }

    fn encode(
        &self,
        cx: &mut EncodeContext<'_>,
        tensor: &TensorInfo,
        values: &[f32],
        format: OutputFormat,
        out: &mut Emitter<'_>,
    ) -> Result<ErrorStats, EncodeError> {
        let (rows, cols) = rows_and_cols(&tensor.shape);
        let quantized = quantize_fp8(
            cx.kernels,
            values,
            rows,
            cols,
            self.format,
            self.per_channel,
        )?;
        if let OutputFormat::Dequantized { f16 } = format {
            let mut dequantized =
                dequantize_fp8(&quantized.bytes, &quantized.scales, rows, cols, self.format);
            return cx.emit_dequantized(
                tensor,
                values,
                &mut dequantized,
                f16,
                quantized.stats,
                out,
            );
        }
        out.emit(&tensor.name, &quantized.bytes)?;
        cx.byte_buffer.clear();
        push_f32_le(&quantized.scales, &mut cx.byte_buffer);
        out.emit(&side_name(&tensor.name, SCALE), &cx.byte_buffer)?;
        Ok(quantized.stats)
    }

    fn decode<'a>(
        &self,
        source: &dyn TensorSource<'a>,
        name: &str,
        shape: &[usize],
    ) -> Result<Held<'a>, DecodeError> {
        let invalid = |why: String| DecodeError::Invalid(why);
        let (rows, cols) = rows_and_cols(shape);
        let stored = source
            .tensor(name)
            .ok_or_else(|| invalid(format!("missing tensor '{name}'")))?;
        let scales = float_side(source, &side_name(name, SCALE))
            .ok_or_else(|| invalid(format!("'{name}' is fp8 without '{name}_scale'")))?;
        if scales.len() != 1 && scales.len() != rows {
            return Err(invalid(format!(
                "'{name}_scale' has {} values for {rows} rows",
                scales.len()
            )));
        }
        if stored.bytes.len() != rows * cols {
            return Err(invalid(format!(
                "'{name}' does not hold {shape:?} fp8 values"
            )));
        }
        Ok(Held::Dequantized {
            scheme: "fp8",
            values: dequantize_fp8(stored.bytes, &scales, rows, cols, self.format),
        })
    }

    fn description(&self) -> Description {
        Description::CompressedTensors {
            format: "float-quantized",
            weights: float_weight_args(if self.per_channel {
                "channel"
            } else {
                "tensor"
            }),
        }
    }
}

/// An F8 tensor (with or without its `_scale`: decoding says what is missing).
pub(super) fn recognize(
    source: &dyn TensorSource<'_>,
    name: &str,
) -> Option<Result<Recognized, DecodeError>> {
    let stored = source.tensor(name)?;
    let format = match stored.stored_as {
        StoredAs::Safetensors(Dtype::F8_E4M3) => Fp8Format::E4M3,
        StoredAs::Safetensors(Dtype::F8_E5M2) => Fp8Format::E5M2,
        _ => return None,
    };
    let per_channel = source
        .tensor(&side_name(name, SCALE))
        .is_some_and(|scale| scale.shape.iter().product::<usize>() != 1);
    Some(Ok(Recognized {
        layout: Box::new(Fp8Layout {
            format,
            per_channel,
        }),
        shape: stored.shape,
    }))
}
