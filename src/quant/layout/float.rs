//! Plain floats: the `f16` scheme (a conversion; also the GGUF fallback for rows that do not
//! fit a block type) and, on the read side, every float tensor a file holds as is.

use crate::formats::gguf::{GGML_TYPE_F16, LLAMA_FTYPE_MOSTLY_F16};
use crate::formats::safetensors::{Dtype, TensorInfo};
use crate::quant::convert::float_values;
use crate::quant::kernels::ErrorStats;
use crate::quant::metrics::compare;

use super::source::Recognized;
use super::{
    grow, push_f16_le, push_f32_le, rows_and_cols, rows_per_piece, DecodeError, Emitter,
    EncodeContext, EncodeError, Held, OutputFormat, OutputTensor, SchemeLayout, StoredAs,
    TensorSource,
};

pub(super) struct FloatLayout;

impl SchemeLayout for FloatLayout {
    fn declare(&self, tensor: &TensorInfo, format: OutputFormat) -> Vec<OutputTensor> {
        let stored_as = match format {
            OutputFormat::Gguf => StoredAs::Ggml(GGML_TYPE_F16),
            OutputFormat::Safetensors | OutputFormat::Dequantized { f16: true } => {
                StoredAs::Safetensors(Dtype::F16)
            }
            OutputFormat::Dequantized { f16: false } => {
                return vec![OutputTensor::same(
                    tensor,
                    StoredAs::Safetensors(Dtype::F32),
                    4,
                )]
            }
        };
        vec![OutputTensor::same(tensor, stored_as, 2)]
    }

    fn gguf_file_type(&self) -> Option<u32> {
        Some(LLAMA_FTYPE_MOSTLY_F16)
    }

    /// Rounds to f16 a piece at a time; the dequantized f32 format stores the rounded values.
    fn encode(
        &self,
        cx: &mut EncodeContext<'_>,
        tensor: &TensorInfo,
        values: &[f32],
        format: OutputFormat,
        out: &mut Emitter<'_>,
    ) -> Result<ErrorStats, EncodeError> {
        cx.check_finite(values)?;
        let (_, cols) = rows_and_cols(&tensor.shape);
        let mut stats = ErrorStats::default();
        for piece in values.chunks(rows_per_piece(cols) * cols) {
            cx.check_continue()?;
            let rounded = grow(&mut cx.f32_buffer, piece.len());
            rounded.copy_from_slice(piece);
            cx.byte_buffer.clear();
            push_f16_le(rounded, &mut cx.byte_buffer);
            if format == (OutputFormat::Dequantized { f16: false }) {
                cx.byte_buffer.clear();
                push_f32_le(&cx.f32_buffer[..piece.len()], &mut cx.byte_buffer);
            }
            out.emit(&tensor.name, &cx.byte_buffer)?;
            stats.merge(&compare(piece, &cx.f32_buffer[..piece.len()]));
        }
        Ok(stats)
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
        let StoredAs::Safetensors(dtype) = stored.stored_as else {
            return Err(invalid(format!(
                "'{name}' is not a safetensors float tensor"
            )));
        };
        let values = float_values(dtype, stored.bytes).ok_or_else(|| {
            invalid(format!(
                "'{name}' is stored as {}, not a float",
                dtype.as_str()
            ))
        })?;
        if values.len() != shape.iter().product::<usize>() {
            return Err(invalid(format!("'{name}' does not hold {shape:?} values")));
        }
        Ok(Held::Float(values))
    }
}

/// A safetensors tensor of a float dtype quantd reads as is (F32, F16, BF16, F64).
pub(super) fn recognize(
    source: &dyn TensorSource<'_>,
    name: &str,
) -> Option<Result<Recognized, DecodeError>> {
    let stored = source.tensor(name)?;
    let StoredAs::Safetensors(dtype) = stored.stored_as else {
        return None;
    };
    float_values(dtype, &[])?;
    Some(Ok(Recognized {
        layout: Box::new(FloatLayout),
        shape: stored.shape,
    }))
}
